"""The Dask cluster the extraction job runs on.

Three ways, chosen from the extract config:
- ``scheduler`` set: attach to a running scheduler, by address (``tcp://host:8786``) or by its
  scheduler file (``*.json``, written by ``dask scheduler --scheduler-file``, as in
  ``slurm/extract.sbatch``); nothing is started or stopped here.
- ``cluster: slurm``: dask-jobqueue ``SLURMCluster``; workers are SLURM jobs submitted with sbatch.
- otherwise a ``LocalCluster`` with one single-threaded worker process per core.

Worker logs are silenced to WARNING so that they do not spam the terminal; the extraction job
sends each worker's log (task tracebacks included) to ``<store>/logs/worker-<host>-<pid>.log``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

from omegaconf import DictConfig

from clews_pipe.errors import ClewsError

QUIET_LOGGERS = ("distributed", "distributed.worker", "distributed.nanny", "distributed.scheduler",
                 "distributed.core", "distributed.http", "dask_jobqueue", "bokeh", "tornado")


def quiet_dask_logging(level: int = logging.WARNING) -> None:
    """Keep distributed's INFO chatter (worker start/stop, nanny restarts) off the terminal."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(level)
    # "worker process still alive after 4 s, killing" at shutdown is routine, not a warning to show
    logging.getLogger("distributed.nanny").setLevel(max(level, logging.ERROR))


def local_worker_count(conf: DictConfig) -> int:
    return int(conf.workers) if conf.workers else (os.cpu_count() or 1)


def slurm_cluster_kwargs(conf: DictConfig) -> dict:
    """``SLURMCluster(**kwargs)`` arguments from ``conf.slurm``."""
    s = conf.slurm
    kwargs: dict = {
        "cores": int(s.cores),
        "processes": int(s.processes),
        "memory": str(s.memory),
        "walltime": str(s.walltime),
        "job_extra_directives": list(s.job_extra_directives),
        "job_script_prologue": list(s.job_script_prologue),
        "python": s.python or sys.executable,
        "job_name": "clews-extract",
        "scheduler_options": {"dashboard_address": None},
        "silence_logs": "warning",
    }
    for key in ("queue", "account", "local_directory", "log_directory", "interface"):
        if s[key] is not None:
            kwargs[key] = str(s[key])
    # one job-level thread-count environment: numpy/torch BLAS stay single threaded per worker
    kwargs["job_script_prologue"] = kwargs["job_script_prologue"] + [
        f"export OMP_NUM_THREADS={int(conf.torch_threads)}",
        f"export MKL_NUM_THREADS={int(conf.torch_threads)}",
    ]
    return kwargs


def slurm_job_script(conf: DictConfig) -> str:
    """The sbatch script dask-jobqueue submits for one worker job, with ``<scheduler-address>``
    standing in for the scheduler's (no SLURM and no scheduler needed). Leaves no log directory behind."""
    from dask_jobqueue import SLURMCluster

    kwargs = slurm_cluster_kwargs(conf)
    for cluster_only in ("scheduler_options", "silence_logs"):
        kwargs.pop(cluster_only)
    created = _absent_dirs(kwargs.get("log_directory"))
    try:
        job = SLURMCluster.job_cls("tcp://<scheduler-address>:8786", name="clews-extract-worker", **kwargs)
        return job.job_script()
    finally:
        for path in created:  # deepest first; only what the job object created, only if empty
            with contextlib.suppress(OSError):
                os.rmdir(path)


def _absent_dirs(path: str | None) -> list[str]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    absent: list[str] = []
    current = os.path.abspath(path) if path else None
    while current and not os.path.exists(current):
        absent.append(current)
        parent = os.path.dirname(current)
        current = parent if parent != current else None
    return absent


def log_to_file(folder: str, loggers: tuple[str, ...] = QUIET_LOGGERS) -> str:
    """Send the ``loggers`` of this process to ``<folder>/worker-<host>-<pid>.log`` instead of the
    terminal (run on every worker: task tracebacks land in the file, not on the user's screen)."""
    import socket
    from pathlib import Path

    Path(folder).mkdir(parents=True, exist_ok=True)
    path = str(Path(folder) / f"worker-{socket.gethostname()}-{os.getpid()}.log")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in loggers:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            if isinstance(old, logging.StreamHandler) and not isinstance(old, logging.FileHandler):
                logger.removeHandler(old)
        logger.addHandler(handler)
        logger.propagate = False
    return path


class _WorkerLogPlugin:
    """WorkerPlugin (duck-typed: ``setup(worker)``) that runs :func:`log_to_file` on every worker,
    including workers started later (a nanny's restart after a crash)."""

    name = "clews-pipe-worker-log"

    def __init__(self, folder: str):
        self.folder = folder

    def setup(self, worker) -> None:
        log_to_file(self.folder)

    def teardown(self, worker) -> None:
        pass


@contextlib.contextmanager
def dask_client(conf: DictConfig, log_dir: str | None = None) -> Iterator["distributed.Client"]:  # noqa: F821
    """A ``distributed.Client`` for the configured cluster; started clusters are closed on exit.
    With ``log_dir``, every worker's log (task tracebacks included) goes to a file there."""
    with _dask_client(conf) as client:
        if log_dir is not None:
            from distributed.diagnostics.plugin import WorkerPlugin

            plugin = type("WorkerLogPlugin", (_WorkerLogPlugin, WorkerPlugin), {})(str(log_dir))
            client.register_plugin(plugin)
        yield client


@contextlib.contextmanager
def _dask_client(conf: DictConfig) -> Iterator["distributed.Client"]:  # noqa: F821
    from distributed import Client, LocalCluster

    quiet_dask_logging()
    if conf.scheduler:
        target = str(conf.scheduler)
        try:
            if target.endswith(".json"):  # a scheduler file (dask scheduler --scheduler-file)
                if not os.path.isfile(target):
                    raise ClewsError(f"scheduler file {target}: not found")
                client = Client(scheduler_file=target, timeout="60s")
            else:
                client = Client(target, timeout="30s")
        except (OSError, TimeoutError) as exc:
            raise ClewsError(f"scheduler {conf.scheduler}: cannot connect ({exc})") from None
        with client:
            yield client
        return
    if conf.cluster == "slurm":
        from dask_jobqueue import SLURMCluster

        cluster = SLURMCluster(**slurm_cluster_kwargs(conf))
        cluster.scale(jobs=int(conf.slurm.jobs))
    else:
        cluster = LocalCluster(
            n_workers=local_worker_count(conf),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        )
    with cluster, Client(cluster) as client:
        yield client
