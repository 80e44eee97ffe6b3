"""Recall of an approximate segment index against exact search, and the search setting that reaches a target.

``index build --kind ivf-flat|ivf-pq|hnsw`` measures, on a seeded sample of its own tracks used
as queries (each searched with all its segments, its own track left out of the answers, as an
evaluation query is), how often the approximate search answers the exact track-level top 10: the
exact R_min of every track to every sample query is computed by one blocked pass over the stored
vectors (float64, the formula of the approximate kinds' exact re-rank, ties by index order, so
a track the approximate search finds gets the same distance and position). ``recall`` is the
fraction of the (query, position) pairs of the top 10 where both answers name the same track;
``set_recall`` the fraction of exact top-10 tracks found anywhere in the approximate top 10.

Unless the search parameter was given, the build then tunes it: ``nprobe`` (IVF kinds) or
``ef_search`` (HNSW) doubles from its default (nlist / 16 cells; 128), for ``ivf-pq`` together
with its re-rank depth (``rerank``, from 10), until the recall reaches the target (never below the default: a sample's estimate is not precise enough to go lower). A
setting that costs as much as exact search (every IVF cell probed, ``ef_search`` at the number
of segments) does not count as reaching the target: the index then says so and suggests ``--kind flat``. (Times per query are recorded in the curve for
information; at small sizes the per-query Python overhead of the approximate path dominates them.) The chosen value, the measured recall and the curve
are stored with the index (``recall`` in ``INDEX.segments.npz``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from clews_pipe.errors import ClewsError

DEFAULT_TARGET = 0.95
DEFAULT_QUERIES = 100
TOP = 10
EXACT_BLOCK = 4096  # candidate segments per block of the exact pass


def check_target(target: float) -> float:
    if not (isinstance(target, (int, float)) and math.isfinite(target) and 0.0 < float(target) <= 1.0):
        raise ClewsError(f"--target-recall must be in (0, 1], got {target!r}")
    return float(target)


@dataclass
class RecallReport:
    """What the build measured (stored with the index as JSON)."""

    parameter: str  # "nprobe" | "ef_search"
    value: int  # the setting stored in the index
    rerank: int  # the re-rank depth stored with it (max(64, rerank x top) candidates per query segment)
    recall: float  # top-10 positions equal to exact search's, at ``value``
    set_recall: float  # exact top-10 tracks found in the approximate top 10
    target: float
    reached: bool
    tuned: bool  # False: the value was given on the command line, only measured
    queries: int
    exact_ms_per_query: float
    ms_per_query: float
    curve: list = field(default_factory=list)  # [{"value", "recall", "ms_per_query"}] in the order tried
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """The build's last line."""
        what = f"recall@{TOP} {self.recall:.3f} (set {self.set_recall:.3f}) with {self.parameter} {self.value}, rerank {self.rerank}"
        head = f"{what}, measured on {self.queries} sample queries against exact search"
        if self.reached:
            return f"{head}; target {self.target:g} reached" + ("" if self.tuned else " (setting given, not tuned)")
        return f"{head}; below the target {self.target:g}: {self.note}"


@dataclass(frozen=True)
class _Exact:
    queries: np.ndarray  # (Q,) track rows used as queries
    top: np.ndarray  # (Q, TOP) exact top tracks (-1 = none)
    ms_per_query: float


def sample_queries(segment_track: np.ndarray, n_tracks: int, n_queries: int, seed: int = 0) -> np.ndarray:
    """A seeded sample of track rows that have segments."""
    present = np.unique(segment_track)
    take = min(len(present), max(1, int(n_queries)))
    return np.sort(np.random.default_rng(seed).choice(present, size=take, replace=False))


def _track_segments(segment_track: np.ndarray, tracks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo = np.searchsorted(segment_track, tracks, side="left")
    hi = np.searchsorted(segment_track, tracks, side="right")
    owner = np.repeat(np.arange(len(tracks)), hi - lo)
    rows = np.repeat(lo, hi - lo) + np.arange(owner.size) - np.repeat(np.cumsum(hi - lo) - (hi - lo), hi - lo)
    return rows.astype(np.int64), owner


def exact_top(vectors, segment_track: np.ndarray, n_tracks: int, queries: np.ndarray, top: int = TOP) -> _Exact:
    """Exact R_min top ``top`` tracks of each query track (its own track left out), by one blocked
    pass over ``vectors`` (M, D) (float64; ties: the earlier track first)."""
    start = time.perf_counter()
    q_rows, q_owner = _track_segments(segment_track, queries)
    q_firsts = np.flatnonzero(np.r_[True, q_owner[1:] != q_owner[:-1]])
    q = np.asarray(vectors[q_rows], dtype=np.float64)
    q_norm = (q * q).sum(1)
    best = np.full((len(queries), n_tracks), np.inf)
    for a in range(0, len(segment_track), EXACT_BLOCK):
        b = min(len(segment_track), a + EXACT_BLOCK)
        v = np.asarray(vectors[a:b], dtype=np.float64)
        d = (q_norm[:, None] + (v * v).sum(1)[None, :] - 2.0 * q @ v.T).clip(min=0.0)
        per_query = np.minimum.reduceat(d, q_firsts, axis=0)  # (Q, block): best query segment per candidate
        seg_t = segment_track[a:b]
        firsts = np.flatnonzero(np.r_[True, seg_t[1:] != seg_t[:-1]])
        block_min = np.minimum.reduceat(per_query, firsts, axis=1)
        ids = seg_t[firsts]
        best[:, ids] = np.minimum(best[:, ids], block_min)
    best[np.arange(len(queries)), queries] = np.inf
    order = np.argsort(best, axis=1, kind="stable")[:, :top]
    found = np.take_along_axis(best, order, axis=1)
    result = np.where(np.isfinite(found), order, -1)
    return _Exact(queries, result, 1000.0 * (time.perf_counter() - start) / max(1, len(queries)))


def _agreement(seg_index, exact: _Exact, params, search_tracks) -> tuple[float, float, float]:
    """(recall by position, set recall, ms per query) of ``seg_index`` searched with ``params``
    through ``search_tracks`` (:func:`clews_pipe.search.segment_index.search_tracks`)."""
    from clews_pipe.search.ann import set_search_params

    set_search_params(seg_index.index, params)
    trial = replace(seg_index, params=params)
    q_rows, q_owner = _track_segments(seg_index.segment_track, exact.queries)
    same = hits = total = 0
    start = time.perf_counter()
    for i, track in enumerate(exact.queries):  # a handful of sample queries, each one search
        z = seg_index.vectors[q_rows[q_owner == i]]
        names = [m.track for m in search_tracks(trial, z, top=TOP, exclude=[str(seg_index.tracks[track])])]
        want = [str(seg_index.tracks[t]) for t in exact.top[i] if t >= 0]
        got = names + [None] * (len(want) - len(names))
        same += sum(a == b for a, b in zip(got, want))
        hits += len(set(names) & set(want))
        total += len(want)
    ms = 1000.0 * (time.perf_counter() - start) / max(1, len(exact.queries))
    return same / max(1, total), hits / max(1, total), ms


def _ladder(params, n_segments: int, first: int) -> tuple[str, list[dict], int]:
    """(parameter, settings to try in order: ``first`` doubling, then the value that costs as much
    as exact search, which is also returned). ``ivf-pq`` doubles its re-rank depth with ``nprobe``
    (its candidates come from quantised distances, so probing more cells alone plateaus)."""
    ivf = params.kind in ("ivf-flat", "ivf-pq")
    brute = params.nlist if ivf else n_segments
    steps, v, rerank = [], max(1, int(first)), params.rerank
    while v < brute:
        steps.append({"value": v, "rerank": rerank})
        v *= 2
        rerank = rerank * 2 if params.kind == "ivf-pq" else rerank
    steps.append({"value": brute, "rerank": rerank})
    return ("nprobe" if ivf else "ef_search"), steps, brute


def tune_recall(seg_index, search_tracks, target: float = DEFAULT_TARGET, n_queries: int = DEFAULT_QUERIES,
                given: bool = False, seed: int = 0) -> RecallReport:
    """Measure (``given``: only at the index's setting) or tune the index's search parameter to
    ``target`` recall, searching with ``search_tracks`` (the segment index's search, passed in so
    this module does not import it back); returns the report (the caller stores ``report.value``)."""
    target = check_target(target)
    params = seg_index.params
    if not params.approximate or seg_index.vectors is None:
        raise ClewsError("recall is measured for approximate indexes (ivf-flat, ivf-pq, hnsw) only")
    exact = exact_top(seg_index.vectors, seg_index.segment_track, len(seg_index.tracks),
                      sample_queries(seg_index.segment_track, len(seg_index.tracks), n_queries, seed))
    current = params.nprobe if params.kind in ("ivf-flat", "ivf-pq") else params.ef_search
    name, ladder, brute = _ladder(params, seg_index.n_segments, current)
    steps = [{"value": current, "rerank": params.rerank}] if given else ladder
    curve, chosen = [], None
    for step in steps:
        trial = replace(params, **{name: int(step["value"])}, rerank=int(step["rerank"]))
        recall, set_recall, ms = _agreement(seg_index, exact, trial, search_tracks)
        curve.append({**step, "recall": recall, "set_recall": set_recall, "ms_per_query": ms})
        if recall >= target and (given or step["value"] < brute):
            chosen = curve[-1]
            break
    reached = chosen is not None
    chosen = chosen or max(curve, key=lambda c: (c["recall"], -c["value"]))
    note = ""
    if not reached:
        note = ("it cannot be reached below the cost of exact search (every cell probed / every segment "
                "visited); use --kind flat" if not given
                else f"raise --{name.replace('_', '-')} or leave it out to tune it (or use --kind flat)")
    return RecallReport(parameter=name, value=int(chosen["value"]), rerank=int(chosen["rerank"]), recall=chosen["recall"],
                        set_recall=chosen["set_recall"], target=target, reached=reached, tuned=not given,
                        queries=len(exact.queries), exact_ms_per_query=exact.ms_per_query,
                        ms_per_query=chosen["ms_per_query"], curve=curve, note=note)
