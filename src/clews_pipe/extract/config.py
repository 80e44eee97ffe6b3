"""Typed schema of the ``clews-pipe extract`` config (configs/extract-*.yaml).

``load_extract_config(yaml_path, overrides, **cli_values)`` merges, in order: the schema defaults,
the YAML file, the ``key=value`` dotlist overrides, then the explicit CLI options that were given
(``--out``, ``--workers`` ...). Unknown keys / wrong types are one ClewsError line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import DictConfig

from clews_pipe.config import load_config
from clews_pipe.errors import ClewsError
from clews_pipe.store.layout import BACKENDS
from clews_pipe.datasets.catalogs import DATASETS

CLUSTERS = ("local", "slurm")
CQT_IMPLS = ("trimmed", "nnaudio")


@dataclass
class SlurmSettings:
    """dask-jobqueue ``SLURMCluster`` arguments (one SLURM job hosts ``processes`` Dask workers).

    A key left null here is taken from the site's dask-jobqueue configuration
    (``jobqueue.slurm.*`` in ~/.config/dask/jobqueue.yaml or DASK_JOBQUEUE__SLURM__...), and only
    where the site sets nothing from the fallback in ``SLURM_FALLBACKS``.
    """

    queue: Optional[str] = None  # partition (#SBATCH -p); null: the site's or the cluster's default
    account: Optional[str] = None  # #SBATCH -A
    cores: Optional[int] = None  # cores per SLURM job (fallback 16)
    processes: Optional[int] = None  # Dask worker processes per job (fallback: = cores, single-threaded)
    memory: Optional[str] = None  # memory per SLURM job (fallback 32GB)
    walltime: Optional[str] = None  # fallback 04:00:00
    jobs: int = 4  # number of SLURM jobs to start (cluster.scale(jobs=...))
    job_extra_directives: Optional[list[str]] = None  # extra "#SBATCH ..." flags
    job_script_prologue: Optional[list[str]] = None  # e.g. "module load ...", "source venv/bin/activate"
    local_directory: Optional[str] = None  # node-local scratch for worker spill files
    log_directory: Optional[str] = None  # where the SLURM jobs write their logs
    interface: Optional[str] = None  # network interface of the workers (e.g. "ib0")
    scheduler_interface: Optional[str] = None  # of the scheduler, on this host (e.g. "eth0"); null: default route
    python: Optional[str] = None  # python executable on the nodes (default: the site's, else this one)
    start_timeout: float = 600.0  # seconds to wait for the first worker to connect (queue wait included)
    check_seconds: float = 5.0  # how often the worker jobs are checked (squeue) while waiting and running


@dataclass
class ExtractConfig:
    dataset: str = "discogs-vi"  # discogs-vi | shs100k | folder
    meta: Optional[str] = None  # metadata (split JSONs / SHS list dir); None for "folder"
    audio: Optional[str] = None  # audio root
    out: Optional[str] = None  # the feature store to create or extend
    backend: str = "zarr"  # zarr | hdf5
    splits: list[str] = field(default_factory=lambda: ["train", "val", "test"])
    samplerate: int = 16000
    max_seconds: float = 600.0  # decode at most the first 10 min of every track
    part_size: int = 64  # tracks per Dask task / store part (smaller for jobs too small to feed every worker)
    balance: bool = True  # balance parts by audio file size (one stat per file)
    max_parts: int = 0  # process at most this many parts in this run (0 = all); a rerun continues
    cluster: str = "local"  # local | slurm (ignored when scheduler is set)
    scheduler: Optional[str] = None  # address of a running Dask scheduler to attach to
    workers: int = 0  # LocalCluster worker processes (0 = one per core)
    torch_threads: int = 1  # torch.set_num_threads inside each task
    cqt_impl: str = "trimmed"  # trimmed (nnAudio kernels cut to their support, ~5x faster) | nnaudio
    retries: int = 2  # a part whose worker dies is recomputed this many times
    progress: bool = True  # show a progress bar on the terminal (plain periodic lines when not a terminal)
    wait_workers: int = 0  # with `scheduler`: wait until this many workers are connected before planning parts
    wait_timeout: float = 600.0  # seconds to wait for them (then one error line)
    verify: bool = False  # before the run, check every part's crc32 too (re-extract what fails)
    retry_failed: bool = False  # extract tracks recorded "failed" again (e.g. after fixing their files)
    allow_split_overlap: bool = False  # an id listed in train and in val/test is an error unless true
    slurm: SlurmSettings = field(default_factory=SlurmSettings)


def _check(conf: DictConfig) -> DictConfig:
    if conf.dataset not in DATASETS:
        raise ClewsError(f"config key 'dataset': '{conf.dataset}' is not one of {', '.join(DATASETS)}")
    if conf.backend not in BACKENDS:
        raise ClewsError(f"config key 'backend': '{conf.backend}' is not one of {', '.join(BACKENDS)}")
    if conf.cluster not in CLUSTERS:
        raise ClewsError(f"config key 'cluster': '{conf.cluster}' is not one of {', '.join(CLUSTERS)}")
    if conf.cqt_impl not in CQT_IMPLS:
        raise ClewsError(f"config key 'cqt_impl': '{conf.cqt_impl}' is not one of {', '.join(CQT_IMPLS)}")
    for key in ("part_size", "torch_threads"):
        if conf[key] < 1:
            raise ClewsError(f"config key '{key}': must be >= 1, got {conf[key]}")
    for key in ("max_parts", "workers", "retries"):
        if conf[key] < 0:
            raise ClewsError(f"config key '{key}': must be >= 0, got {conf[key]}")
    if conf.wait_workers < 0:
        raise ClewsError(f"config key 'wait_workers': must be >= 0, got {conf.wait_workers}")
    for key in ("wait_timeout",):
        if conf[key] <= 0:
            raise ClewsError(f"config key '{key}': must be > 0, got {conf[key]}")
    for key in ("start_timeout", "check_seconds"):
        if conf.slurm[key] <= 0:
            raise ClewsError(f"config key 'slurm.{key}': must be > 0, got {conf.slurm[key]}")
    if conf.max_seconds <= 0:
        raise ClewsError(f"config key 'max_seconds': must be > 0, got {conf.max_seconds}")
    cores, processes = conf.slurm.cores, conf.slurm.processes
    if cores is not None and processes is not None and (processes < 1 or cores < processes):
        raise ClewsError(
            f"config key 'slurm.processes': need 1 <= processes <= cores "
            f"(got processes={conf.slurm.processes}, cores={conf.slurm.cores})"
        )
    return conf


def load_extract_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    **cli_values: Any,
) -> DictConfig:
    """The validated extract config; ``cli_values`` that are None are ignored (option not given)."""
    conf = load_config(ExtractConfig, path, overrides)
    given = [f"{key}={_dotlist_value(value)}" for key, value in cli_values.items() if value is not None]
    if given:
        conf = load_config(ExtractConfig, None, given, base=_to_container(conf))
    return _check(conf)


def extract_config(**values: Any) -> DictConfig:
    """Programmatic construction: ``extract_config(audio=..., out=..., workers=2)``."""
    return load_extract_config(None, (), **values)


def _to_container(conf: DictConfig) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(conf, resolve=True)  # type: ignore[return-value]


def _dotlist_value(value: Any) -> str:
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str):
        # quote so that paths with ':' or ',' and strings like 'null' stay strings
        escaped = value.replace("\\", "\\\\").replace("'", "\\'")
        return f"'{escaped}'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_dotlist_value(v) for v in value) + "]"
    return str(value)
