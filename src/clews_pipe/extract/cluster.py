"""The Dask cluster the extraction job runs on.

Three ways, chosen from the extract config:
- ``scheduler`` set: attach to a running scheduler, by address (``tcp://host:8786``) or by its
  scheduler file (``*.json``, written by ``dask scheduler --scheduler-file``, as in
  ``slurm/extract.sbatch``); nothing is started or stopped here.
- ``cluster: slurm``: dask-jobqueue ``SLURMCluster``; workers are SLURM jobs submitted with sbatch.
  Refused submissions and worker jobs that end are noticed (``SlurmWatch``): the driver stops
  with one line within ``slurm.check_seconds`` (``slurm.start_timeout`` for the first worker).
  Keys the config leaves null come from the site's dask-jobqueue config (``jobqueue.slurm.*``).
- otherwise a ``LocalCluster`` with one single-threaded worker process per core.

Worker logs are silenced to WARNING so that they do not spam the terminal; the extraction job
sends each worker's log (task tracebacks included) to ``<store>/logs/worker-<host>-<pid>.log``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
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


# used only where neither the clews-pipe config nor the site's dask-jobqueue config sets the key
SLURM_FALLBACKS = {"cores": 16, "memory": "32GB", "walltime": "04:00:00"}


def _site(key: str):
    """The site's dask-jobqueue setting ``jobqueue.slurm.<key>`` (None when unset)."""
    import dask.config
    import dask_jobqueue  # noqa: F401  (loads jobqueue's defaults under the site's configuration)

    try:
        return dask.config.get(f"jobqueue.slurm.{key.replace('_', '-')}")
    except KeyError:
        return None


def slurm_cluster_kwargs(conf: DictConfig) -> dict:
    """``SLURMCluster(**kwargs)`` arguments from ``conf.slurm``.

    A key the clews-pipe config leaves null is not passed, so the site's dask-jobqueue
    configuration (``jobqueue.slurm.*``) applies; only where that is unset too does the
    fallback of ``SLURM_FALLBACKS`` apply. The thread-count exports are appended to the
    site's ``job-script-prologue`` (e.g. its ``module load`` lines), not put in its place.
    """
    s = conf.slurm
    kwargs: dict = {"job_name": "clews-extract", "silence_logs": "warning"}
    for key in ("cores", "memory", "walltime"):
        if s[key] is not None:
            kwargs[key] = int(s[key]) if key == "cores" else str(s[key])
        elif _site(key) is None:
            kwargs[key] = SLURM_FALLBACKS[key]
    if s.processes is not None:
        kwargs["processes"] = int(s.processes)
    elif _site("processes") is None:  # one single-threaded worker per core
        kwargs["processes"] = int(kwargs.get("cores") or _site("cores"))
    for key in ("queue", "account", "local_directory", "log_directory", "interface", "python"):
        if s[key] is not None:
            kwargs[key] = str(s[key])
    if s.job_extra_directives is not None:
        kwargs["job_extra_directives"] = list(s.job_extra_directives)
    prologue = list(s.job_script_prologue) if s.job_script_prologue is not None else list(_site("job_script_prologue") or [])
    # one job-level thread-count environment: numpy/torch BLAS stay single threaded per worker
    kwargs["job_script_prologue"] = prologue + [
        f"export OMP_NUM_THREADS={int(conf.torch_threads)}",
        f"export MKL_NUM_THREADS={int(conf.torch_threads)}",
    ]
    # the scheduler runs here (login/service node), the workers on the compute nodes: each gets
    # its own interface; the site's scheduler-options are kept, no dashboard unless the site asks
    scheduler_options = dict(_site("scheduler_options") or {})
    scheduler_options.setdefault("dashboard_address", None)
    if s.scheduler_interface is not None:
        scheduler_options["interface"] = str(s.scheduler_interface)
    elif "host" not in scheduler_options and "interface" not in scheduler_options:
        scheduler_options["interface"] = None  # not the workers' interface: the default route here
    kwargs["scheduler_options"] = scheduler_options
    return kwargs


def slurm_processes(conf: DictConfig) -> int:
    """Dask worker processes per SLURM job, as the job script will start them."""
    kwargs = slurm_cluster_kwargs(conf)
    return int(kwargs.get("processes") or _site("processes") or 1)


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


def _first_line(exc: BaseException) -> str:
    """The line of a failed submission that says why (sbatch's own ``error:`` line when present)."""
    text = str(exc)
    for line in text.splitlines():
        if "error:" in line:
            return line.strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


ALIVE_STATES = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "RESIZING", "SUSPENDED", "REQUEUED")


def slurm_job_states(job_ids: list[str]) -> dict[str, str]:
    """``job id -> "STATE (reason)"`` for the jobs squeue still knows; ``{}`` when squeue fails."""
    import subprocess

    if not job_ids:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T %r", "-j", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    states = {}
    for line in out.stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2:
            states[parts[0]] = parts[1] + (f" ({parts[2]})" if len(parts) > 2 and parts[2] != "None" else "")
    return states


class SlurmWatch:
    """Watches the worker jobs of a ``SLURMCluster``: failed ``sbatch`` calls (recorded by the job
    class), jobs that ended, and the wait for the first worker; ``check()`` raises one ClewsError
    line instead of letting the driver wait forever."""

    def __init__(self, conf: DictConfig):
        self.failures: list[str] = []
        self.job_ids: list[str] = []
        self.started = time.monotonic()
        self.timeout = float(conf.slurm.start_timeout)
        self.every = float(conf.slurm.check_seconds)
        self.jobs = int(conf.slurm.jobs)
        self.log_directory = conf.slurm.log_directory or _site("log_directory")
        self.cluster = None
        self._last_check = 0.0
        self._seen_worker = False

    def cluster_class(self):
        from dask_jobqueue import SLURMCluster
        from dask_jobqueue.slurm import SLURMJob
        from distributed.core import Status

        watch = self

        class WatchedSLURMJob(SLURMJob):
            async def start(self):
                try:
                    await super().start()
                except Exception as exc:
                    # sbatch refused the job: recorded for the driver's check, which stops the run
                    # with one line. Marked as started (with no job id, so closing it cancels
                    # nothing) so that SpecCluster neither resubmits it in a loop nor logs a
                    # traceback per attempt.
                    watch.failures.append(_first_line(exc))
                    self.job_id = None
                    self.status = Status.running
                    return
                if self.job_id and self.job_id not in watch.job_ids:
                    watch.job_ids.append(self.job_id)

        class WatchedSLURMCluster(SLURMCluster):
            job_cls = WatchedSLURMJob

        return WatchedSLURMCluster

    def _logs(self) -> str:
        return f"; worker job logs: {self.log_directory}" if self.log_directory else ""

    def check(self, client, force: bool = False) -> None:
        """Raise ClewsError when the job cannot get workers any more; cheap between checks."""
        now = time.monotonic()
        if not force and now - self._last_check < self.every:
            return
        self._last_check = now
        n_workers = len(client.scheduler_info().get("workers", {}))
        if n_workers:
            self._seen_worker = True
            return
        states = slurm_job_states(self.job_ids)
        alive = {j: st for j, st in states.items() if st.split()[0] in ALIVE_STATES}
        if self.failures and not alive:
            raise ClewsError(
                f"sbatch did not accept the Dask worker jobs ({len(self.failures)} failed submissions): "
                f"{self.failures[-1]} (check slurm.queue / slurm.account / slurm.job_extra_directives)"
            )
        if self.job_ids and not alive:
            ended = ", ".join(f"{j} {states.get(j, 'ended')}" for j in self.job_ids[:8])
            what = "all worker jobs ended" if self._seen_worker else "the worker jobs ended before any Dask worker connected"
            raise ClewsError(f"{what} ({ended}){self._logs()}")
        if not self._seen_worker and now - self.started > self.timeout:
            pending = ", ".join(f"{j} {st}" for j, st in list(alive.items())[:8]) or "none submitted"
            raise ClewsError(
                f"no Dask worker connected within slurm.start_timeout={self.timeout:g} s "
                f"(worker jobs: {pending}){self._logs()}"
            )

    def wait_for_first_worker(self, client) -> None:
        while not client.scheduler_info().get("workers"):
            self.check(client, force=True)
            time.sleep(min(1.0, self.every))
        self._seen_worker = True


def _wait_for_workers(client, n: int, timeout: float, where: str) -> None:
    """Wait until ``n`` workers are connected to a running scheduler (one error line on timeout)."""
    if n <= 0:
        return
    deadline = time.monotonic() + timeout
    while True:
        have = len(client.scheduler_info().get("workers", {}))
        if have >= n:
            return
        if time.monotonic() > deadline:
            raise ClewsError(
                f"scheduler {where}: {have} of {n} Dask workers connected after {timeout:g} s "
                "(wait_workers / wait_timeout; see the workers' logs)"
            )
        time.sleep(0.5)


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
    """A ``distributed.Client`` for the configured cluster; started clusters are closed on exit.

    The client carries ``clews_check(client)``: the driver calls it while it waits for results;
    it raises ClewsError when the cluster cannot make progress any more (worker jobs refused by
    sbatch or all ended), so the driver exits with one line instead of waiting forever.
    """
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
            _wait_for_workers(client, int(conf.wait_workers), float(conf.wait_timeout), target)
            client.clews_check = lambda c, force=False: None
            yield client
        return
    if conf.cluster == "slurm":
        watch = SlurmWatch(conf)
        # a refused sbatch is reported by the watch in one line, not as a traceback per retry
        logging.getLogger("distributed.deploy.spec").setLevel(logging.CRITICAL)
        logging.getLogger("distributed.deploy.cluster").setLevel(logging.CRITICAL)
        cluster = watch.cluster_class()(**slurm_cluster_kwargs(conf))
        watch.cluster = cluster
        cluster.scale(jobs=int(conf.slurm.jobs))
        with cluster, Client(cluster) as client:
            client.clews_check = watch.check
            watch.wait_for_first_worker(client)
            yield client
        return
    cluster = LocalCluster(
        n_workers=local_worker_count(conf),
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.WARNING,
    )
    with cluster, Client(cluster) as client:
        client.clews_check = lambda c, force=False: None
        yield client
