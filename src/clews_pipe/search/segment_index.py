"""FAISS index over candidate segment embeddings, and R_min segment-level track search.

An index is ``INDEX`` (a FAISS index of one of the kinds of :mod:`clews_pipe.search.ann`:
``flat`` = ``IndexFlatL2``, exact, the default; ``ivf-flat``, ``ivf-pq``, ``hnsw``, approximate)
and ``INDEX.segments.npz`` beside it, mapping every indexed segment to its track and start time:

``tracks``         str     (T,)  track names
``segment_track``  int64   (M,)  row of ``tracks`` for each indexed segment (FAISS id = row)
``segment_start``  float64 (M,)  segment start time in seconds
``params``         str           JSON of the index kind and its parameters (absent: flat)

Approximate kinds also keep ``INDEX.vectors.npy`` (M, D) in the source's dtype: the exact
vectors, memory-mapped, read only for the candidate tracks a search re-ranks.

Sources: an evaluation embeddings file (``z`` (N, S, D), ``mask``, ``track``; segment ``j`` of a
track starts at ``j * hop`` s) or a folder of ``clews-pipe embed`` outputs (their ``starts``; the
track name is the file's path in the folder without ``.npz``).

Search is the paper's R_min: the distance of a track to the query is the smallest normalised
squared Euclidean distance (mean over dimensions, = L2² / D, so FAISS's L2² ranks the same) over
all (query segment, candidate segment) pairs. Each query segment gets its ``k`` nearest candidate
segments; a track absent from segment ``i``'s list is at least that list's last distance
``tau_i`` away from it, so every track whose best found pair is below ``min_i tau_i`` has its exact
R_min and no unseen track can beat it. ``k`` grows until ``top`` tracks are certain that way (or
covers every segment: an exhaustive search).

With an approximate kind, the index's ``k`` nearest segments of each query segment
(``k = max(64, 10·top)``) name the candidate tracks; every candidate is then re-ranked by its
exact R_min over all its segments (float64, from ``INDEX.vectors.npy``). The returned distances
are exact; a track can be missed only when none of its segments reached any query segment's
approximate k nearest (``benchmarks/segment_search.py`` measures that recall against ``flat``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from clews_pipe.atomic import atomic_path
from clews_pipe.errors import ClewsError, first_line
from clews_pipe.search.ann import IndexParams, default_params, make_index, params_from_dict, set_search_params

MAPPING_SUFFIX = ".segments.npz"
VECTORS_SUFFIX = ".vectors.npy"
ADD_BLOCK = 65536  # segments converted to float32 and added to the index at a time


@dataclass
class SegmentIndex:
    index: object  # a FAISS index (IndexFlatL2 for the exact kind)
    tracks: np.ndarray  # (T,) str
    segment_track: np.ndarray  # (M,) int64
    segment_start: np.ndarray  # (M,) float64
    params: IndexParams = IndexParams()
    vectors: np.ndarray | None = None  # (M, D) exact vectors (memory-mapped) for approximate kinds
    recall: dict | None = None  # approximate kinds: what the build measured (ann_recall.RecallReport)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def n_segments(self) -> int:
        return int(self.segment_track.shape[0])


@dataclass
class Match:
    rank: int  # 1-based
    track: str
    distance: float  # normalised squared Euclidean (L2² / D)
    query_start: float  # seconds
    candidate_start: float  # seconds

    def as_dict(self) -> dict:
        return {"rank": self.rank, "track": self.track, "distance": self.distance,
                "query_start": self.query_start, "candidate_start": self.candidate_start}


def mapping_path(index_path: str | Path) -> Path:
    index_path = Path(index_path)
    return index_path.with_name(index_path.name + MAPPING_SUFFIX)


def vectors_path(index_path: str | Path) -> Path:
    index_path = Path(index_path)
    return index_path.with_name(index_path.name + VECTORS_SUFFIX)


# --------------------------------------------------------------------------------------- sources
def segments_from_source(source: str | Path, hop: float = 5.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(vectors (M, D) float32, tracks (T,), segment_track (M,), segment_start (M,))`` of every
    unpadded segment of an evaluation embeddings file or a folder of embed outputs."""
    source = Path(source)
    if source.is_dir() and _is_embedding_store(source):
        blocks = list(_store_blocks(source, hop))
        tracks = blocks[0][0]
        return (np.concatenate([b[1] for b in blocks]).astype(np.float32), tracks,
                np.concatenate([b[2] for b in blocks]), np.concatenate([b[3] for b in blocks]))
    if source.is_dir():
        return _segments_from_folder(source)
    if not source.is_file():
        raise ClewsError(f"{source}: no such embeddings file or folder")
    from clews_pipe.embeddings.npz_format import load_embeddings

    if hop <= 0:
        raise ClewsError(f"--hop must be > 0 seconds, got {hop}")
    emb = load_embeddings(source)
    keep = ~emb.mask  # (N, S)
    track_row, seg_col = np.nonzero(keep)  # row-major: tracks in order, segments in order
    if track_row.size == 0:
        raise ClewsError(f"{source}: every segment is padding; nothing to index")
    vectors = np.ascontiguousarray(emb.z[keep], dtype=np.float32)
    return vectors, emb.track.astype(str), track_row.astype(np.int64), seg_col.astype(np.float64) * hop


def _segment_count(path: Path) -> int | None:
    """Rows of ``z`` in a ``clews-pipe embed`` output (None when that cannot be read here: the full
    reader then reports the problem)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return int(data["z"].shape[0]) if "z" in data.files else None
    except Exception:
        return None


def _segments_from_folder(folder: Path):
    from clews_pipe.embeddings.from_audio import load_file_embedding

    files = sorted(p for p in folder.rglob("*.npz") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ClewsError(f"{folder}: no embeddings files (.npz) in this folder")
    embs, kept = [], []
    for f in files:
        if _segment_count(f) == 0:  # an empty output (older clews-pipe embed wrote these): reported, not fatal
            print(f"skipped {f}: no segments", file=sys.stderr)
            continue
        embs.append(load_file_embedding(f))
        kept.append(f)
    files = kept
    if not files:
        raise ClewsError(f"{folder}: every embeddings file is empty (no segments)")
    dims = {e.z.shape[1] for e in embs}
    if len(dims) != 1:
        first = next(f for f, e in zip(files, embs) if e.z.shape[1] != embs[0].z.shape[1])
        raise ClewsError(f"{folder}: embeddings of different sizes ({files[0]}: D={embs[0].z.shape[1]}, {first}: other)")
    tracks = np.asarray([f.relative_to(folder).with_suffix("").as_posix() for f in files], dtype=str)
    counts = np.asarray([e.z.shape[0] for e in embs])
    vectors = np.ascontiguousarray(np.concatenate([e.z for e in embs]), dtype=np.float32)
    starts = np.concatenate([e.starts for e in embs]).astype(np.float64)
    return vectors, tracks, np.repeat(np.arange(len(files), dtype=np.int64), counts), starts


def _is_embedding_store(folder: Path) -> bool:
    from clews_pipe.embeddings.formats import embeddings_layout

    return embeddings_layout(folder) == "zarr"


def _store_blocks(source: Path, hop: float):
    """``(tracks, vectors, segment_track, segment_start)`` per block of a chunked embeddings store
    (its stored dtype; one block of tracks in memory at a time)."""
    from clews_pipe.embeddings.formats import open_embeddings
    from clews_pipe.embeddings.zarr_format import DEFAULT_BLOCK

    if hop <= 0:
        raise ClewsError(f"--hop must be > 0 seconds, got {hop}")
    emb = open_embeddings(source)
    block = DEFAULT_BLOCK
    for t0 in range(0, emb.n_tracks, block):
        t1 = min(emb.n_tracks, t0 + block)
        keep = ~emb.mask[t0:t1]
        rows, cols = np.nonzero(keep)
        yield emb.track, emb.z[t0:t1][keep], (rows + t0).astype(np.int64), cols.astype(np.float64) * hop


# --------------------------------------------------------------------------------------- build / load
def build_segment_index(source: str | Path, out: str | Path, hop: float = 5.0, kind: str = "flat",
                        params: dict | None = None, target_recall: float | None = None,
                        recall_queries: int | None = None) -> SegmentIndex:
    """Index every candidate segment of ``source`` with an index of ``kind`` (flat, ivf-flat,
    ivf-pq, hnsw; ``params`` override the defaults of :func:`~clews_pipe.search.ann.default_params`);
    write ``out``, its mapping and (approximate kinds) its exact vectors beside it. Approximate
    kinds then measure their recall against exact search and, unless ``nprobe`` / ``ef_search``
    was given, tune it to ``target_recall`` (:mod:`clews_pipe.search.recall`)."""
    from clews_pipe.search.recall import DEFAULT_QUERIES, DEFAULT_TARGET, check_target

    target = check_target(DEFAULT_TARGET if target_recall is None else target_recall)
    queries = DEFAULT_QUERIES if recall_queries is None else int(recall_queries)
    if queries < 1:
        raise ClewsError(f"--recall-queries must be >= 1, got {recall_queries}")
    source = Path(source)
    if source.is_dir() and _is_embedding_store(source):  # streamed block by block
        first = next(_store_blocks(source, hop))
        tracks = first[0]
        blocks = lambda: ((v, st, ss) for _t, v, st, ss in _store_blocks(source, hop))  # noqa: E731
    else:
        vectors, tracks, segment_track, segment_start = segments_from_source(source, hop=hop)
        blocks = lambda: iter([(vectors, segment_track, segment_start)])  # noqa: E731
    built = build_index_from_blocks(blocks, tracks, out, kind, params)
    return tune_index(built, out, target, queries, given=_search_param_given(kind, params))


def _search_param_given(kind: str, params: dict | None) -> bool:
    given = {k for k, v in (params or {}).items() if v is not None}
    return ("nprobe" in given) if kind in ("ivf-flat", "ivf-pq") else ("ef_search" in given)


def tune_index(built: SegmentIndex, out: str | Path, target: float, queries: int, given: bool) -> SegmentIndex:
    """Measure (and unless ``given``, tune) an approximate index's recall; store the chosen
    search setting and the report in its mapping. Flat indexes are returned as they are."""
    from dataclasses import replace

    from clews_pipe.search.recall import tune_recall

    if not built.params.approximate:
        return built
    report = tune_recall(built, search_tracks, target, queries, given=given)
    params = replace(built.params, **{report.parameter: report.value}, rerank=report.rerank)
    set_search_params(built.index, params)
    built = replace(built, params=params, recall=report.to_dict())
    _write_mapping(out, built)
    return built


def _write_mapping(out: str | Path, built: SegmentIndex) -> None:
    import json

    extra = {} if built.recall is None else {"recall": np.asarray(json.dumps(built.recall))}
    with atomic_path(mapping_path(out), suffix=".npz") as tmp_map:
        np.savez(tmp_map, tracks=np.asarray(built.tracks, dtype=str), segment_track=built.segment_track,
                 segment_start=built.segment_start, params=np.asarray(json.dumps(built.params.to_dict())), **extra)


def build_index_from_blocks(blocks, tracks: np.ndarray, out: str | Path, kind: str = "flat",
                            params: dict | None = None, seed: int = 0) -> SegmentIndex:
    """Build from ``blocks()`` (a callable returning an iterator of ``(vectors (m, D), segment_track
    (m,), segment_start (m,))``; called twice for approximate kinds: once for the counts and the
    training sample, once to add)."""
    import json

    import faiss

    if Path(out).is_dir() or mapping_path(Path(out)).is_dir():  # before anything is written
        raise ClewsError(f"{out}: is a directory; give the path of the index file to write")
    counts, dims, dtype = 0, set(), np.float32
    for vec, _st, _ss in blocks():
        counts += len(vec)
        dims.add(int(vec.shape[1]))
        dtype = np.float16 if vec.dtype == np.float16 else np.float32
    if counts == 0:
        raise ClewsError("nothing to index: every segment is padding")
    dim = dims.pop()
    chosen = default_params(kind, counts, dim, params)
    index = make_index(chosen, dim)
    if chosen.needs_training:
        rng = np.random.default_rng(seed)
        take = np.sort(rng.choice(counts, size=min(counts, chosen.train_size), replace=False))
        sample, offset = [], 0
        for vec, _st, _ss in blocks():
            local = take[(take >= offset) & (take < offset + len(vec))] - offset
            sample.append(np.asarray(vec[local], dtype=np.float32))
            offset += len(vec)
        index.train(np.ascontiguousarray(np.concatenate(sample)))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    seg_track, seg_start = [], []
    stored = None
    with atomic_path(vectors_path(out), suffix=".npy") as tmp_vec:
        if chosen.approximate:
            stored = np.lib.format.open_memmap(tmp_vec, mode="w+", dtype=dtype, shape=(counts, dim))
        offset = 0
        for vec, st, ss in blocks():
            for a in range(0, len(vec), ADD_BLOCK):
                part = np.asarray(vec[a : a + ADD_BLOCK])
                index.add(np.ascontiguousarray(part, dtype=np.float32))
                if stored is not None:
                    stored[offset + a : offset + a + len(part)] = part
            offset += len(vec)
            seg_track.append(np.asarray(st, dtype=np.int64))
            seg_start.append(np.asarray(ss, dtype=np.float64))
        if stored is not None:
            stored.flush()
            del stored
        else:
            np.save(tmp_vec, np.zeros((0, dim), dtype=dtype))
    if not chosen.approximate:
        vectors_path(out).unlink(missing_ok=True)
    segment_track, segment_start = np.concatenate(seg_track), np.concatenate(seg_start)
    if np.any(np.diff(segment_track) < 0):
        raise ClewsError("segments must come track by track (each track's segments contiguous)")
    with atomic_path(mapping_path(out), suffix=".npz") as tmp_map:
        np.savez(tmp_map, tracks=np.asarray(tracks, dtype=str), segment_track=segment_track,
                 segment_start=segment_start, params=np.asarray(json.dumps(chosen.to_dict())))
    with atomic_path(out) as tmp_index:
        faiss.write_index(index, str(tmp_index))
    vectors = np.load(vectors_path(out), mmap_mode="r") if chosen.approximate else None
    return SegmentIndex(index=index, tracks=np.asarray(tracks, dtype=str), segment_track=segment_track,
                        segment_start=segment_start, params=chosen, vectors=vectors)


#: FAISS flat-index header: fourcc, d, ntotal, two dummies, is_trained, metric, then the codes'
#: length (a uint64 count of floats) before the codes themselves.
_FLAT_FOURCCS = (b"IxF2", b"IxFI", b"IxFl")
_FLAT_CODES_AT = 4 + 4 + 8 + 8 + 8 + 1 + 4


def _check_flat_header(path: Path) -> None:
    """Refuse a flat index whose header asks for more floats than the file holds, before FAISS
    allocates them (a crafted header can ask for 2^36 floats)."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(_FLAT_CODES_AT + 8)
    if head[:4] not in _FLAT_FOURCCS or len(head) < _FLAT_CODES_AT + 8:
        return
    (n_floats,) = struct.unpack_from("<Q", head, _FLAT_CODES_AT)
    if n_floats * 4 > size - _FLAT_CODES_AT - 8:
        raise ClewsError(f"{path}: not a FAISS index (its header declares {n_floats} floats, the file holds {size} bytes)")


def load_segment_index(path: str | Path, search_params: dict | None = None) -> SegmentIndex:
    """Load an index written by :func:`build_segment_index`; ``search_params`` (``nprobe``,
    ``ef_search``) override the recorded ones for this session."""
    import json

    import faiss

    path = Path(path)
    mpath = mapping_path(path)
    if not path.is_file():
        raise ClewsError(f"{path}: index file not found")
    if not mpath.is_file():
        raise ClewsError(f"{path}: its segment mapping {mpath.name} is missing beside it")
    _check_flat_header(path)
    try:
        index = faiss.read_index(str(path))
    except (RuntimeError, MemoryError) as exc:
        first = first_line(exc, "unreadable")
        raise ClewsError(f"{path}: not a FAISS index ({first})") from None
    try:
        data = np.load(mpath, allow_pickle=False)
        tracks, seg_track, seg_start = data["tracks"].astype(str), data["segment_track"], data["segment_start"]
        params = params_from_dict(json.loads(str(data["params"]))) if "params" in data.files else IndexParams()
        recall = json.loads(str(data["recall"])) if "recall" in data.files else None
    except Exception as exc:  # zip/format/missing-key/JSON errors
        raise ClewsError(f"{mpath}: unreadable segment mapping ({type(exc).__name__}: {exc})") from None
    if seg_track.shape[0] != index.ntotal or seg_start.shape != seg_track.shape:
        raise ClewsError(f"{mpath}: maps {seg_track.shape[0]} segments but {path} holds {index.ntotal}")
    overrides = {k: v for k, v in (search_params or {}).items() if v is not None}
    for key, value in overrides.items():
        if key not in ("nprobe", "ef_search") or not isinstance(value, int) or value < 1:
            raise ClewsError(f"search parameter {key}={value!r}: expected nprobe or ef_search, a positive integer")
    if overrides:
        from dataclasses import replace

        params = replace(params, **overrides)
    vectors = None
    if params.approximate:
        set_search_params(index, params)
        vpath = vectors_path(path)
        try:
            vectors = np.load(vpath, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise ClewsError(f"{path}: its exact vectors {vpath.name} are missing or unreadable ({exc})") from None
        if vectors.shape != (index.ntotal, index.d):
            raise ClewsError(f"{vpath}: shape {vectors.shape} != ({index.ntotal}, {index.d}) of {path}")
    return SegmentIndex(index=index, tracks=tracks, segment_track=seg_track.astype(np.int64),
                        segment_start=seg_start.astype(np.float64), params=params, vectors=vectors, recall=recall)


# --------------------------------------------------------------------------------------- search
def search_tracks(
    seg_index: SegmentIndex,
    query: np.ndarray,
    query_starts: np.ndarray | None = None,
    top: int = 10,
    exclude: Iterable[str] = (),
    k_start: int | None = None,
    stats: dict | None = None,
) -> list[Match]:
    """The ``top`` tracks by R_min distance to the query segments ``query`` (S, D), best first
    (ties: the earlier track in the index first), each with its best (query, candidate) pair's
    start times. ``exclude``: track names left out (e.g. the query's own track). ``k_start``: the
    first pass's k (default max(32, 8·top)); ``stats``, when given, receives ``knn_passes`` and
    the final ``k``."""
    query = np.ascontiguousarray(np.asarray(query, dtype=np.float32))
    if query.ndim != 2 or query.shape[0] == 0:
        raise ClewsError(f"query embeddings must be (S, D) with S >= 1, got shape {query.shape}")
    if query.shape[1] != seg_index.dim:
        raise ClewsError(f"query embeddings have D={query.shape[1]}, the index holds D={seg_index.dim}")
    if top < 1:
        raise ClewsError(f"--top must be >= 1, got {top}")
    if query_starts is None:
        query_starts = np.zeros(query.shape[0])
    n_tracks, n_segments = len(seg_index.tracks), seg_index.n_segments
    excluded = np.zeros(n_tracks, dtype=bool)
    names = {name: i for i, name in enumerate(seg_index.tracks.tolist())}
    for name in exclude:
        if name in names:
            excluded[names[name]] = True
    wanted = min(top, int((~excluded).sum()))
    if wanted == 0:
        return []
    if seg_index.params.approximate:
        return _approximate_search(seg_index, query, query_starts, wanted, excluded, k_start, stats)
    k = min(n_segments, k_start if k_start is not None else max(32, 8 * top))
    rounds = 0
    while True:
        rounds += 1
        dist, ids = _knn(seg_index.index, query, k)  # (S, k) L2², ascending per row
        exhaustive = k >= n_segments
        best_dist, best_q, best_c, seen = _best_pair_per_track(dist, ids, seg_index.segment_track, n_tracks)
        seen &= ~excluded
        if exhaustive:
            break
        bound = float(dist[:, -1].min())  # every unseen pair of some segment is >= its own tau >= bound
        if int((seen & (best_dist < bound)).sum()) >= wanted:
            break
        k = min(n_segments, k * 4)
    order = np.lexsort((np.arange(n_tracks), np.where(seen, best_dist, np.inf)))[:wanted]
    if stats is not None:
        stats.update(knn_passes=rounds, k=k)
    d = float(seg_index.dim)
    return [
        Match(rank=r + 1, track=str(seg_index.tracks[t]), distance=float(best_dist[t]) / d,
              query_start=float(query_starts[best_q[t]]), candidate_start=float(seg_index.segment_start[best_c[t]]))
        for r, t in enumerate(order)
    ]


def _approximate_search(seg_index: SegmentIndex, query: np.ndarray, query_starts: np.ndarray, wanted: int,
                        excluded: np.ndarray, k_start: int | None, stats: dict | None) -> list[Match]:
    """Candidate tracks from the approximate k nearest segments, re-ranked by exact R_min."""
    n_segments = seg_index.n_segments
    k = min(n_segments, k_start if k_start is not None else max(64, seg_index.params.rerank * wanted))
    _dist, ids = _knn(seg_index.index, query, k)
    ids = ids[ids >= 0]
    candidates = np.unique(seg_index.segment_track[ids])
    candidates = candidates[~excluded[candidates]]
    rows, owner = _segments_of(seg_index.segment_track, candidates)
    vectors = np.asarray(seg_index.vectors[rows], dtype=np.float64)
    q = query.astype(np.float64)
    d = ((q * q).sum(1)[:, None] + (vectors * vectors).sum(1)[None, :] - 2.0 * q @ vectors.T).clip(min=0.0)
    best_q = d.argmin(axis=0)  # per candidate segment: its nearest query segment
    seg_best = d[best_q, np.arange(d.shape[1])]
    order = np.lexsort((rows, best_q, seg_best, owner))  # per track: smallest distance first
    first = order[np.r_[True, owner[order][1:] != owner[order][:-1]]] if len(order) else order
    track_best = seg_best[first]
    ranking = first[np.lexsort((owner[first], track_best))][:wanted]
    if stats is not None:
        stats.update(knn_passes=1, k=k, candidate_tracks=int(len(candidates)))
    dim = float(seg_index.dim)
    return [
        Match(rank=r + 1, track=str(seg_index.tracks[owner[j]]), distance=float(seg_best[j]) / dim,
              query_start=float(query_starts[best_q[j]]), candidate_start=float(seg_index.segment_start[rows[j]]))
        for r, j in enumerate(ranking)
    ]


def _segments_of(segment_track: np.ndarray, tracks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of every segment of ``tracks`` and the track of each (segments of a track are contiguous)."""
    lo = np.searchsorted(segment_track, tracks, side="left")
    hi = np.searchsorted(segment_track, tracks, side="right")
    counts = hi - lo
    owner = np.repeat(tracks, counts)
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return (starts + np.arange(counts.sum())).astype(np.int64), owner


def _knn(index, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search`` through FAISS's BLAS path (a matrix product for all query segments at
    once; FAISS's default uses it only from 128,000 queries on, scanning one query at a time
    below that, 2-3x slower here). The global threshold is restored afterwards."""
    import faiss

    saved = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = 1
    try:
        return index.search(query, k)
    finally:
        faiss.cvar.distance_compute_blas_threshold = saved


def _best_pair_per_track(dist: np.ndarray, ids: np.ndarray, segment_track: np.ndarray, n_tracks: int):
    """Per track: smallest found distance, its query row and candidate segment; and whether seen."""
    q_rows = np.broadcast_to(np.arange(dist.shape[0])[:, None], dist.shape).ravel()
    flat_d, flat_c = dist.ravel(), ids.ravel()
    valid = flat_c >= 0
    q_rows, flat_d, flat_c = q_rows[valid], flat_d[valid], flat_c[valid]
    flat_t = segment_track[flat_c]
    order = np.lexsort((flat_c, q_rows, flat_d))  # by distance, then query row, then candidate id
    tracks_sorted = flat_t[order]
    uniq, first = np.unique(tracks_sorted, return_index=True)
    pick = order[first]
    best_dist = np.full(n_tracks, np.inf, dtype=np.float64)
    best_q = np.zeros(n_tracks, dtype=np.int64)
    best_c = np.zeros(n_tracks, dtype=np.int64)
    seen = np.zeros(n_tracks, dtype=bool)
    best_dist[uniq] = flat_d[pick]
    best_q[uniq] = q_rows[pick]
    best_c[uniq] = flat_c[pick]
    seen[uniq] = True
    return best_dist, best_q, best_c, seen
