"""Track- and segment-level evaluation protocols over an embeddings set, on one or many ranks.

Track level: every track queries all the others with its 20 s shingles (every 5 s) and the chosen
reduction (CLEWS: bpwr-10). Segment level: for each query length tau, the query track's tau-long
windows (every 5 s) are compared with every candidate shingle and reduced with R_min (best
segment pair). Each run writes ``distances.zarr``, ``metrics.json`` and ``metrics.md``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from clews_pipe.atomic import write_json_atomic, write_text_atomic
from clews_pipe.errors import ClewsError
from clews_pipe.evaluation.distances import TileSettings, compute_distance_matrix, open_distances
from clews_pipe.evaluation.embeddings import Embeddings, tau_key
from clews_pipe.retrieval.metrics import QueryMetrics, markdown_table, query_metrics, self_columns, summarize
from clews_pipe.retrieval.redux import Redux

DEFAULT_TAUS = (5.0, 10.0, 20.0, 30.0, 40.0, 60.0, 90.0)
SEGMENT_REDUX = "min"


@dataclass
class RankContext:
    """Who this process is in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    barrier: Callable[[], None] = field(default=lambda: None)
    device: str = "cpu"


def matrix_metrics(path: str | Path, redux: str, level: str, block_rows: int = 128) -> tuple[dict, QueryMetrics]:
    """Metrics of a finished distance matrix, read and ranked ``block_rows`` query rows at a time."""
    group = open_distances(path)
    matrix = group["distances"]
    q_track = group["query_track"][:]
    c_track = group["candidate_track"][:]
    q_clique = group["query_clique"][:]
    c_clique = group["candidate_clique"][:]
    own = self_columns(q_track, c_track)
    parts = []
    for start in range(0, matrix.shape[0], block_rows):
        stop = min(matrix.shape[0], start + block_rows)
        rows = matrix[start:stop]
        if np.isnan(rows).any():
            raise ClewsError(f"distance matrix {path}: NaN distances in rows {start}..{stop - 1}")
        parts.append(query_metrics(rows, q_clique[start:stop], c_clique, own[start:stop]))
    per_query = QueryMetrics.concat(parts)
    return summarize(per_query, redux, level), per_query


def _write_report(out_dir: Path, summary: dict) -> None:
    write_json_atomic(out_dir / "metrics.json", summary)
    write_text_atomic(out_dir / "metrics.md", markdown_table([summary]))


def evaluate_track_level(
    emb: Embeddings, out_dir: str | Path, redux: "Redux | str" = "bpwr-10", ctx: RankContext | None = None,
    settings: TileSettings | None = None, progress: bool = True, on_tile=None,
) -> dict | None:
    """Track-level protocol; returns the metrics summary on rank 0 (None elsewhere)."""
    ctx = ctx or RankContext()
    redux = Redux.parse(redux)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    zq, mq = emb.track_queries if emb.track_queries is not None else (emb.z, emb.mask)
    path = compute_distance_matrix(
        out_dir / "distances.zarr", zq, mq, emb.z, emb.mask, redux,
        query_track=emb.track, candidate_track=emb.track, query_clique=emb.clique, candidate_clique=emb.clique,
        settings=_with_device(settings, ctx), rank=ctx.rank, world_size=ctx.world_size, barrier=ctx.barrier,
        progress=progress, on_tile=on_tile,
    )
    if ctx.rank != 0:
        return None
    summary, _ = matrix_metrics(path, redux, "track")
    _write_report(out_dir, summary)
    return summary


def evaluate_segment_level(
    emb: Embeddings, out_dir: str | Path, taus=DEFAULT_TAUS, ctx: RankContext | None = None,
    settings: TileSettings | None = None, progress: bool = True,
) -> dict | None:
    """Segment-level protocol (R_min) for each tau; one sub-folder per tau, a table and a plot."""
    ctx = ctx or RankContext()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    missing = [tau for tau in taus if float(tau) not in emb.queries]
    if missing:
        have = ", ".join(tau_key(t) for t in sorted(emb.queries)) or "none"
        raise ClewsError(
            f"segment level needs query embeddings zq_<tau>/maskq_<tau> for tau = {', '.join(tau_key(t) for t in missing)} "
            f"(embeddings carry: {have})"
        )
    rows = []
    for tau in taus:
        zq, mq = emb.queries[float(tau)]
        tau_dir = out_dir / f"tau_{tau_key(tau)}"
        tau_dir.mkdir(parents=True, exist_ok=True)
        path = compute_distance_matrix(
            tau_dir / "distances.zarr", zq, mq, emb.z, emb.mask, SEGMENT_REDUX,
            query_track=emb.track, candidate_track=emb.track, query_clique=emb.clique, candidate_clique=emb.clique,
            settings=_with_device(settings, ctx), rank=ctx.rank, world_size=ctx.world_size, barrier=ctx.barrier,
            progress=progress,
        )
        if ctx.rank == 0:
            summary, _ = matrix_metrics(path, SEGMENT_REDUX, "segment")
            summary["tau"] = float(tau)
            _write_report(tau_dir, summary)
            rows.append(summary)
    if ctx.rank != 0:
        return None
    result = {"level": "segment", "redux": SEGMENT_REDUX, "per_tau": rows}
    write_json_atomic(out_dir / "metrics.json", result)
    write_text_atomic(out_dir / "metrics.md", markdown_table(rows, first_column="tau"))
    from clews_pipe.evaluation.plots import plot_segment_level

    plot_segment_level(rows, out_dir / "segment_level.png")
    return result


def _with_device(settings: TileSettings | None, ctx: RankContext) -> TileSettings:
    settings = settings or TileSettings()
    return TileSettings(tile=settings.tile, memory_mb=settings.memory_mb, device=ctx.device,
                        precision=settings.precision)


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
        if fab.device.type == "cpu":  # share the cores between the local ranks
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, fab.world_size // max(1, nodes))))
        ctx = RankContext(rank=fab.global_rank, world_size=fab.world_size, barrier=fab.barrier, device=str(fab.device))
        return fn(ctx)

    return fabric.launch(ranked)
