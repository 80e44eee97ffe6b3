"""The rank launcher: run one function on every rank of a (possibly single-process) job.

``run_on_ranks(fn, devices, nodes, accelerator)`` starts (or, under ``srun``/``torchrun``, joins)
the ranks with Lightning Fabric and calls ``fn(RankContext)`` on each; a single CPU process calls
``fn`` directly. Evaluation, embedding and the baseline use it; training builds its own Fabric from
its config (``training/loop.py``) because it also sets precision and loggers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from clews_pipe.errors import ClewsError


@dataclass
class RankContext:
    """Who this process is in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    barrier: Callable[[], None] = field(default=lambda: None)
    device: str = "cpu"


def run_on_ranks(fn: Callable[[RankContext], object], devices: int = 1, nodes: int = 1, accelerator: str = "cpu",
                 strategy: str = "ddp"):
    """Run ``fn(ctx)`` on ``devices x nodes`` ranks with Lightning Fabric; return rank 0's result.

    A single CPU process runs ``fn`` directly. Otherwise Fabric launches (or, under ``srun``/
    ``torchrun``, joins) the ranks: CPU ranks talk through gloo, GPU ranks through NCCL.
    """
    if devices < 1 or nodes < 1:
        raise ClewsError(f"--devices and --nodes must be >= 1 (got {devices}, {nodes})")
    if accelerator not in ("cpu", "gpu", "cuda", "auto"):
        raise ClewsError(f"--accelerator must be cpu, gpu or auto, not {accelerator!r}")
    if devices == 1 and nodes == 1 and accelerator == "cpu":
        return fn(RankContext())
    import torch
    from lightning.fabric import Fabric

    fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=nodes, strategy=strategy)

    def ranked(fab):
        if fab.device.type == "cpu":  # the allocation's CPUs (SLURM_CPUS_PER_TASK / OMP_NUM_THREADS), not the machine's
            from clews_pipe.resources import threads_per_rank

            under_srun = "SLURM_STEP_ID" in os.environ and "SLURM_PROCID" in os.environ
            torch.set_num_threads(threads_per_rank(max(1, fab.world_size // max(1, nodes)), under_srun))
        ctx = RankContext(rank=fab.global_rank, world_size=fab.world_size, barrier=fab.barrier, device=str(fab.device))
        return fn(ctx)

    result = fabric.launch(ranked)
    close_process_group()
    return result


def close_process_group() -> None:
    """Tear down this rank's process group once its work is done. Left to interpreter shutdown,
    gloo's threads can be destroyed while still joinable: a rank of a finished run then aborts
    ("terminate called without an active exception") and srun marks the job FAILED."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
