"""The CPUs this process may use (the allocation's, not the machine's), and how its heap returns memory."""

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


HEAP_MMAP_THRESHOLD = 1 << 20  # bytes: larger allocations are mapped and unmapped, never kept in the heap


def bound_heap(threshold: int = HEAP_MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold (it otherwise rises after each large free, up to 32 MB, so the
    evaluator's freed block copies stay in the heap and a rank's resident memory grows far past
    its ``--memory-mb``: 387-524 MB against 157 MB measured for one 256 MB budget on 2,000 × 8 ×
    8,192 float16). Every large allocation is then a fresh mapping, which costs page faults (that
    run: 26 s → 41 s), so the evaluator applies it only where rows are read block by block (wide
    rows from a store or an ``.npz``). Returns whether it was applied (glibc only)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(-3, int(threshold)))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False
