"""The CPUs this process may use: the allocation's, not the machine's."""

from __future__ import annotations

import os


def allocated_cpus() -> int:
    """CPUs of this task: ``SLURM_CPUS_PER_TASK`` under SLURM, else ``OMP_NUM_THREADS`` when set,
    else the CPUs this process may run on (its affinity mask), else ``os.cpu_count()``."""
    for name in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        try:
            value = int(os.environ.get(name, ""))
        except ValueError:
            continue
        if value > 0:
            return value
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_per_rank(local_ranks: int, launched_by_slurm: bool) -> int:
    """Intra-op threads of one CPU rank: under ``srun`` every task has its own allocation
    (``SLURM_CPUS_PER_TASK``); ranks started by Fabric on one machine share this process's CPUs."""
    cpus = allocated_cpus()
    return max(1, cpus if launched_by_slurm else cpus // max(1, local_ranks))
