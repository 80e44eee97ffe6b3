"""Track- and segment-level evaluation protocols over an embeddings set, on one or many ranks.

Track level: every track queries all the others with its 20 s shingles (every 5 s) and the chosen
reduction (CLEWS: bpwr-10). Segment level: for each query length tau, the query track's tau-long
windows (every 5 s) are compared with every candidate shingle and reduced with R_min (best
segment pair). Each run writes ``distances.zarr``, ``metrics.json`` (strict JSON, with the
protocol, warnings and provenance), ``metrics.md`` and ``per_query.csv``. The protocol
(:mod:`clews_pipe.retrieval.protocol_options`, default ``clews``) decides which tracks are evaluated and
which NAR is reported; ``NAR_strict`` is always there too.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from clews_pipe.errors import ClewsError
from clews_pipe.ranks import RankContext
from clews_pipe.evaluation.distances import TileSettings, compute_distance_matrix, open_distances
from clews_pipe.embeddings.npz_format import Embeddings, tau_key
from clews_pipe.reporting.per_query import neighbour_cells, write_per_query_csv
from clews_pipe.retrieval.metrics import QueryMetrics, summarize
from clews_pipe.reporting.eval_dir import clear_evaluation, write_metrics
from clews_pipe.retrieval.protocol_options import MIN_VERSIONS, Protocol
from clews_pipe.retrieval.redux import Redux

DEFAULT_TAUS = (5.0, 10.0, 20.0, 30.0, 40.0, 60.0, 90.0)
SEGMENT_REDUX = "min"


COLLAPSE_BELOW = 1e-6  # every distance below this: the embedding space has collapsed


@dataclass
class MatrixReport:
    """What one pass over a finished matrix gives: per-query metrics, neighbours, distance range."""

    summary: dict
    per_query: QueryMetrics
    neighbours: list[str]
    d_min: float
    d_max: float


def matrix_metrics(path: str | Path, redux: str, level: str, block_rows: int = 128,
                   nar_kind: str = "strict") -> tuple[dict, QueryMetrics]:
    """Metrics of a finished distance matrix (``block_rows`` is kept for callers; the rows are
    counted one row block of the matrix at a time)."""
    report = matrix_report(path, redux, level, block_rows, nar_kind)
    return report.summary, report.per_query


def matrix_report(path: str | Path, redux: str, level: str, block_rows: int = 128,
                  nar_kind: str = "strict", ctx: "RankContext | None" = None,
                  memory_mb: float = 64.0) -> MatrixReport | None:
    """Metrics (``NAR`` of ``nar_kind``), the nearest candidates of each query and the range of
    the distances between different tracks of a finished matrix. Every rank of ``ctx`` counts the
    per-query results of its own query rows (:mod:`clews_pipe.evaluation.rank_rows`); rank 0
    gathers and reduces them and gets the report, the other ranks None."""
    from clews_pipe.evaluation.rank_rows import matrix_rows

    ctx = ctx or RankContext()
    rows = matrix_rows(path, ctx.rank, ctx.world_size, ctx.barrier, memory_mb)
    if rows is None:
        return None
    group = open_distances(path)
    q_clique, c_clique = group["query_clique"][:], group["candidate_clique"][:]
    c_track = group["candidate_track"][:]
    neighbours = neighbour_cells(rows.nn_col, rows.nn_dist, c_track, c_clique, q_clique)
    per_query = rows.query_metrics()
    return MatrixReport(summarize(per_query, redux, level, nar_kind=nar_kind), per_query, neighbours,
                        rows.d_min, rows.d_max)


def _metrics_mb(settings: TileSettings | None) -> float:
    """Workspace of the per-query counting: the distance blocks' budget (at least 16 MB)."""
    return max(16.0, float((settings or TileSettings()).memory_mb))


def collapse_warnings(d_min: float, d_max: float) -> list[str]:
    """A collapsed embedding space: every distance below :data:`COLLAPSE_BELOW`, or one value for every pair."""
    if not math.isfinite(d_max):
        return ["no finite distance between two different tracks"]
    if d_max < COLLAPSE_BELOW:
        return [f"collapsed embedding space: every distance is below {COLLAPSE_BELOW:g} (largest {d_max:.3g}); the metrics rank noise"]
    if d_min == d_max:
        return [f"collapsed embedding space: every pair of tracks has the same distance {d_max:.6g}; the metrics rank ties"]
    return []


def select_evaluated(emb: Embeddings, protocol: Protocol) -> Embeddings:
    """The tracks the protocol evaluates: all, or (published) only those whose clique has at least
    ``MIN_VERSIONS`` tracks in the set. ClewsError when none is left."""
    if protocol.distractors:
        return emb
    _, inverse, counts = np.unique(emb.clique, return_inverse=True, return_counts=True)
    keep = counts[inverse] >= MIN_VERSIONS
    if keep.all():
        return emb
    if not keep.any():
        raise ClewsError(
            f"no clique has >= {MIN_VERSIONS} versions among the {emb.n_tracks} tracks: nothing to evaluate "
            f"(protocol {protocol.name} drops smaller cliques; --protocol clews-pipe keeps them as distractors)"
        )
    return emb.subset(np.nonzero(keep)[0])


def _padding_checks(emb: Embeddings, where: str) -> list[str]:
    """ClewsError when every segment is padding; a warning naming tracks with no real segment."""
    masks = [("candidate", emb.mask)]
    if emb.track_queries is not None:
        masks.append(("query", emb.track_queries[1]))
    warnings = []
    for what, mask in masks:
        empty = np.asarray(mask, dtype=bool).all(axis=1)
        if empty.all():
            raise ClewsError(f"{where}: every {what} segment is padding (mask all True): no distance can be computed")
        if empty.any():
            names = ", ".join(map(str, emb.track[empty][:5])) + (" ..." if empty.sum() > 5 else "")
            warnings.append(f"{int(empty.sum())} track(s) have only padding {what} segments ({names}); they rank last")
    return warnings


def _no_query_error(summary: dict, where: str) -> None:
    if summary["queries"] == 0:
        raise ClewsError(
            f"{where}: no query has another version of its clique among the candidates: MAP, MR1 and NAR are undefined"
        )


def _write_report(out_dir: Path, summary: dict, emb: Embeddings | None = None, report: MatrixReport | None = None,
                  nar_kind: str = "strict") -> None:
    if report is not None and emb is not None:
        cliques = emb.clique_name if emb.clique_name is not None else emb.clique
        write_per_query_csv(out_dir / "per_query.csv", emb.track, cliques, report.per_query, nar_kind, report.neighbours)
    write_metrics(out_dir, summary)


def _clear_report(out_dir: Path) -> None:
    """A rerun never leaves the previous run's report beside a failed one."""
    clear_evaluation(out_dir)


def _warn(messages: list[str]) -> None:
    for message in messages:
        print(f"warning: {message}", file=sys.stderr)


def _finish(summary: dict, protocol: Protocol, warnings: list[str], provenance: dict | None) -> dict:
    summary["protocol"] = protocol.name
    summary["warnings"] = list(warnings)
    if provenance is not None:
        summary["provenance"] = provenance
    return summary


def evaluate_track_level(
    emb: Embeddings, out_dir: str | Path, redux: "Redux | str" = "bpwr-10", ctx: RankContext | None = None,
    settings: TileSettings | None = None, progress: bool = True, on_tile=None, protocol: "Protocol | str | None" = None,
    provenance: dict | None = None,
) -> dict | None:
    """Track-level protocol; returns the metrics summary on rank 0 (None elsewhere).

    ``protocol`` (default ``clews``, the published one) decides which tracks are evaluated and
    which NAR is reported (see :mod:`clews_pipe.retrieval.protocol_options`). No query with a positive, or
    only padding, is a :class:`ClewsError`; a collapsed embedding space is a warning (stderr and
    ``metrics.json`` ``warnings``).
    """
    ctx = ctx or RankContext()
    redux = Redux.parse(redux)
    protocol = Protocol.parse(protocol)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if ctx.rank == 0:
        _clear_report(out_dir)
    emb = select_evaluated(emb, protocol)
    warnings = _padding_checks(emb, "track level")
    zq, mq = emb.track_queries if emb.track_queries is not None else (emb.z, emb.mask)
    path = compute_distance_matrix(
        out_dir / "distances.zarr", zq, mq, emb.z, emb.mask, redux,
        query_track=emb.track, candidate_track=emb.track, query_clique=emb.clique, candidate_clique=emb.clique,
        settings=replace(settings or TileSettings(), device=ctx.device), rank=ctx.rank, world_size=ctx.world_size, barrier=ctx.barrier,
        progress=progress, on_tile=on_tile,
    )
    report = matrix_report(path, redux, "track", nar_kind=protocol.nar, ctx=ctx, memory_mb=_metrics_mb(settings))
    if report is None:
        return None
    _no_query_error(report.summary, f"track level ({redux})")
    warnings += collapse_warnings(report.d_min, report.d_max)
    _warn(warnings)
    summary = _finish(report.summary, protocol, warnings, provenance)
    _write_report(out_dir, summary, emb, report, protocol.nar)
    return summary


def evaluate_segment_level(
    emb: Embeddings, out_dir: str | Path, taus=DEFAULT_TAUS, ctx: RankContext | None = None,
    settings: TileSettings | None = None, progress: bool = True, protocol: "Protocol | str | None" = None,
    provenance: dict | None = None,
) -> dict | None:
    """Segment-level protocol (R_min) for each tau; one sub-folder per tau, a table and a plot."""
    ctx = ctx or RankContext()
    protocol = Protocol.parse(protocol)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    missing = [tau for tau in taus if float(tau) not in emb.queries]
    if missing:
        have = ", ".join(tau_key(t) for t in sorted(emb.queries)) or "none"
        raise ClewsError(
            f"segment level needs query embeddings zq_<tau>/maskq_<tau> for tau = {', '.join(tau_key(t) for t in missing)} "
            f"(embeddings carry: {have})"
        )
    if ctx.rank == 0:
        _clear_report(out_dir)
    emb = select_evaluated(emb, protocol)
    base_warnings = _padding_checks(emb, "segment level")
    rows = []
    all_warnings = list(base_warnings)
    for tau in taus:
        zq, mq = emb.queries[float(tau)]
        if np.asarray(mq, dtype=bool).all():
            raise ClewsError(f"segment level, tau {tau_key(tau)} s: every query segment is padding (mask all True)")
        tau_dir = out_dir / f"tau_{tau_key(tau)}"
        tau_dir.mkdir(parents=True, exist_ok=True)
        if ctx.rank == 0:
            _clear_report(tau_dir)
        path = compute_distance_matrix(
            tau_dir / "distances.zarr", zq, mq, emb.z, emb.mask, SEGMENT_REDUX,
            query_track=emb.track, candidate_track=emb.track, query_clique=emb.clique, candidate_clique=emb.clique,
            settings=replace(settings or TileSettings(), device=ctx.device), rank=ctx.rank, world_size=ctx.world_size, barrier=ctx.barrier,
            progress=progress,
        )
        report = matrix_report(path, SEGMENT_REDUX, "segment", nar_kind=protocol.nar, ctx=ctx,
                               memory_mb=_metrics_mb(settings))
        if report is not None:
            _no_query_error(report.summary, f"segment level, tau {tau_key(tau)} s")
            warnings = base_warnings + [f"tau {tau_key(tau)} s: {w}" for w in collapse_warnings(report.d_min, report.d_max)]
            all_warnings += warnings[len(base_warnings):]
            summary = report.summary
            summary["tau"] = float(tau)
            summary = _finish(summary, protocol, warnings, provenance)
            _write_report(tau_dir, summary, emb, report, protocol.nar)
            rows.append(summary)
    if ctx.rank != 0:
        return None
    _warn(all_warnings)
    result = {"level": "segment", "redux": SEGMENT_REDUX, "protocol": protocol.name, "per_tau": rows,
              "warnings": all_warnings}
    if provenance is not None:
        result["provenance"] = provenance
    write_metrics(out_dir, result, rows, first_column="tau")
    from clews_pipe.reporting.plots import plot_segment_level

    prov = provenance or {}
    checkpoint = Path(str(prov.get("checkpoint") or prov.get("embeddings") or "embeddings"))
    label = checkpoint.parent.name + "/" + checkpoint.name if checkpoint.parent.name else checkpoint.name
    queries = rows[0].get("queries", "?") if rows else "?"
    plot_segment_level(rows, out_dir / "segment_level.png", label=label,
                       title=f"segment level: split {prov.get('split') or '?'}, {queries} queries, {label}")
    return result
