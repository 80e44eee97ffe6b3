"""The Dask cluster the extraction job runs on.

Three ways, chosen from the extract config:
- ``scheduler`` set: attach to a running scheduler (``dask scheduler`` + ``dask worker`` started by
  hand or by ``slurm/extract.sbatch``); nothing is started or stopped here.
- ``cluster: slurm``: dask-jobqueue ``SLURMCluster``; workers are SLURM jobs submitted with sbatch.
- otherwise a ``LocalCluster`` with one single-threaded worker process per core.

Worker logs are silenced to WARNING so that they do not spam the terminal.
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
    """The sbatch script dask-jobqueue would submit for one worker job (no SLURM needed)."""
    from dask_jobqueue import SLURMCluster

    quiet_dask_logging()
    with SLURMCluster(**slurm_cluster_kwargs(conf)) as cluster:
        return cluster.job_script()


@contextlib.contextmanager
def dask_client(conf: DictConfig) -> Iterator["distributed.Client"]:  # noqa: F821
    """A ``distributed.Client`` for the configured cluster; started clusters are closed on exit."""
    from distributed import Client, LocalCluster

    quiet_dask_logging()
    if conf.scheduler:
        try:
            client = Client(str(conf.scheduler), timeout="30s")
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
