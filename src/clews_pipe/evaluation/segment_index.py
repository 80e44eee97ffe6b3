"""Exact FAISS index over candidate segment embeddings, and R_min segment-level track search.

An index is two files: ``INDEX`` (a FAISS ``IndexFlatL2``, exact) and ``INDEX.segments.npz``
beside it, mapping every indexed segment to its track and start time:

``tracks``         str     (T,)  track names
``segment_track``  int64   (M,)  row of ``tracks`` for each indexed segment (FAISS id = row)
``segment_start``  float64 (M,)  segment start time in seconds

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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from clews_pipe.atomic import atomic_path
from clews_pipe.errors import ClewsError, first_line

MAPPING_SUFFIX = ".segments.npz"


@dataclass
class SegmentIndex:
    index: object  # faiss.IndexFlatL2
    tracks: np.ndarray  # (T,) str
    segment_track: np.ndarray  # (M,) int64
    segment_start: np.ndarray  # (M,) float64

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


# --------------------------------------------------------------------------------------- sources
def segments_from_source(source: str | Path, hop: float = 5.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(vectors (M, D) float32, tracks (T,), segment_track (M,), segment_start (M,))`` of every
    unpadded segment of an evaluation embeddings file or a folder of embed outputs."""
    source = Path(source)
    if source.is_dir():
        return _segments_from_folder(source)
    if not source.is_file():
        raise ClewsError(f"{source}: no such embeddings file or folder")
    from clews_pipe.evaluation.embeddings import load_embeddings

    if hop <= 0:
        raise ClewsError(f"--hop must be > 0 seconds, got {hop}")
    emb = load_embeddings(source)
    keep = ~emb.mask  # (N, S)
    track_row, seg_col = np.nonzero(keep)  # row-major: tracks in order, segments in order
    if track_row.size == 0:
        raise ClewsError(f"{source}: every segment is padding; nothing to index")
    vectors = np.ascontiguousarray(emb.z[keep], dtype=np.float32)
    return vectors, emb.track.astype(str), track_row.astype(np.int64), seg_col.astype(np.float64) * hop


def _segments_from_folder(folder: Path):
    from clews_pipe.evaluation.audio_embed import load_file_embedding

    files = sorted(p for p in folder.rglob("*.npz") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ClewsError(f"{folder}: no embeddings files (.npz) in this folder")
    embs = [load_file_embedding(f) for f in files]
    dims = {e.z.shape[1] for e in embs}
    if len(dims) != 1:
        first = next(f for f, e in zip(files, embs) if e.z.shape[1] != embs[0].z.shape[1])
        raise ClewsError(f"{folder}: embeddings of different sizes ({files[0]}: D={embs[0].z.shape[1]}, {first}: other)")
    tracks = np.asarray([f.relative_to(folder).with_suffix("").as_posix() for f in files], dtype=str)
    counts = np.asarray([e.z.shape[0] for e in embs])
    vectors = np.ascontiguousarray(np.concatenate([e.z for e in embs]), dtype=np.float32)
    starts = np.concatenate([e.starts for e in embs]).astype(np.float64)
    return vectors, tracks, np.repeat(np.arange(len(files), dtype=np.int64), counts), starts


# --------------------------------------------------------------------------------------- build / load
def build_segment_index(source: str | Path, out: str | Path, hop: float = 5.0) -> SegmentIndex:
    """Index every candidate segment of ``source``; write ``out`` and its mapping beside it."""
    import faiss

    if Path(out).is_dir() or mapping_path(Path(out)).is_dir():  # before anything is written
        raise ClewsError(f"{out}: is a directory; give the path of the index file to write")
    vectors, tracks, segment_track, segment_start = segments_from_source(source, hop=hop)
    index = faiss.IndexFlatL2(int(vectors.shape[1]))
    index.add(vectors)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(mapping_path(out), suffix=".npz") as tmp_map:
        np.savez(tmp_map, tracks=tracks, segment_track=segment_track, segment_start=segment_start)
    with atomic_path(out) as tmp_index:
        faiss.write_index(index, str(tmp_index))
    return SegmentIndex(index=index, tracks=tracks, segment_track=segment_track, segment_start=segment_start)


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


def load_segment_index(path: str | Path) -> SegmentIndex:
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
    except Exception as exc:  # zip/format/missing-key errors
        raise ClewsError(f"{mpath}: unreadable segment mapping ({type(exc).__name__}: {exc})") from None
    if seg_track.shape[0] != index.ntotal or seg_start.shape != seg_track.shape:
        raise ClewsError(f"{mpath}: maps {seg_track.shape[0]} segments but {path} holds {index.ntotal}")
    return SegmentIndex(index=index, tracks=tracks, segment_track=seg_track.astype(np.int64),
                        segment_start=seg_start.astype(np.float64))


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
