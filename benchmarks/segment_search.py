"""Segment-level R_min search: exact FAISS k-NN + per-track min vs a full numpy distance scan.

    .venv/bin/python benchmarks/segment_search.py [--tracks 2000] [--segments 20] [--dim 256]
        [--query-segments 20] [--top 10] [--queries 20] [--threads 1]

Random float32 embeddings: ``--tracks`` candidates with 1..``--segments`` segments each; every
query is ``--query-segments`` segments, half of them noisy copies of one candidate's segments.
Prints one JSON object with the index build time, the median milliseconds per query of
:func:`search_tracks` (``faiss_ms``) and of the exhaustive numpy scan it must agree with
(``numpy_ms``: all query × candidate segment distances, then a per-track min), and whether the
two rankings agreed on every query (``agree``), and the mean number of k-NN passes (``k`` widened
until the top tracks are certain).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def numpy_rmin(vectors, segment_track, n_tracks, query, top):
    q2 = (query.astype(np.float64) ** 2).sum(1)[:, None]
    c2 = (vectors.astype(np.float64) ** 2).sum(1)[None, :]
    d = (q2 + c2 - 2.0 * query.astype(np.float64) @ vectors.T.astype(np.float64)).min(axis=0)  # (M,)
    per_track = np.full(n_tracks, np.inf)
    np.minimum.at(per_track, segment_track, d)
    return np.lexsort((np.arange(n_tracks), per_track))[:top]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tracks", type=int, default=2000)
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--query-segments", type=int, default=20)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import faiss

    from clews_pipe.evaluation.embeddings import Embeddings, save_embeddings
    from clews_pipe.evaluation.segment_index import build_segment_index, search_tracks

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(args.tracks, args.segments, args.dim)).astype(np.float32)
    lengths = rng.integers(1, args.segments + 1, size=args.tracks)
    mask = np.arange(args.segments)[None, :] >= lengths[:, None]
    emb = Embeddings(z=z, mask=mask, clique=np.arange(args.tracks), track=np.asarray([f"t{i}" for i in range(args.tracks)]))
    with tempfile.TemporaryDirectory() as tmp:
        save_embeddings(Path(tmp) / "e.npz", emb)
        start = time.perf_counter()
        seg_index = build_segment_index(Path(tmp) / "e.npz", Path(tmp) / "i.faiss")
        build_s = time.perf_counter() - start
    vectors = z[~mask]
    faiss_ms, numpy_ms, rounds, agree = [], [], [], True
    for n in range(args.queries):
        target = int(rng.integers(args.tracks))
        query = rng.normal(size=(args.query_segments, args.dim)).astype(np.float32)
        half = args.query_segments // 2
        query[:half] = z[target, rng.integers(lengths[target], size=half)] + 0.5 * rng.normal(size=(half, args.dim))
        t0 = time.perf_counter()
        stats = {}
        matches = search_tracks(seg_index, query, top=args.top, stats=stats)
        t1 = time.perf_counter()
        expected = numpy_rmin(vectors, seg_index.segment_track, args.tracks, query, args.top)
        t2 = time.perf_counter()
        faiss_ms.append(1e3 * (t1 - t0))
        numpy_ms.append(1e3 * (t2 - t1))
        rounds.append(stats["knn_passes"])
        agree &= [m.track for m in matches] == [f"t{i}" for i in expected]
    print(json.dumps({
        "tracks": args.tracks, "segments": int(seg_index.n_segments), "dim": args.dim,
        "query_segments": args.query_segments, "top": args.top, "threads": args.threads,
        "build_s": round(build_s, 3), "faiss_ms": round(float(np.median(faiss_ms)), 3),
        "numpy_ms": round(float(np.median(numpy_ms)), 3), "agree": bool(agree), "knn_passes_mean": round(float(np.mean(rounds)), 2),
    }))


if __name__ == "__main__":
    main()
