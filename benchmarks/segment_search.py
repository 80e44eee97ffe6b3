"""Segment-level R_min search at scale: recall@10 of the approximate index kinds against ``flat``,
with memory per segment, build time and query time.

    PYTHONPATH=src .venv/bin/python benchmarks/segment_search.py [--tracks 100000] [--segments 40]
        [--dim 128] [--queries 40] [--top 10] [--threads 2] [--kinds flat,ivf-flat,ivf-pq,hnsw]
        [--check-numpy 5] [--workdir DIR]

Synthetic clustered float16 embeddings shaped like evaluation candidates: ``--tracks`` tracks in
cliques of 2-6 versions, 1..``--segments`` segments each (about ``tracks × segments / 2``
segments: 2.05M with the defaults); a segment is its clique's centre + a per-track offset + noise.
A query is a new version of a random clique (same centre, its own offset and noise),
``--query-segments`` segments. Every kind is built with its default parameters
(:func:`clews_pipe.search.ann.default_params`) through ``build_index_from_blocks`` and
searched with :func:`search_tracks` (approximate kinds: candidates from the index, then the exact
R_min re-rank).

Prints one JSON object: per kind ``build_s``, ``index_bytes_per_segment`` (the serialised FAISS
index, ≈ its RAM), ``vectors_bytes_per_segment`` (the exact vectors kept on disk beside
approximate indexes, memory-mapped), ``tune_s`` and ``build_recall`` (the recall tuning that
``index build`` runs: the chosen ``nprobe`` / ``ef_search`` and the recall it measured on its
own sample; ``--no-tune`` keeps the untuned defaults), ``query_ms`` (median),
``positions_equal_flat`` (fraction of the top-10 positions where the kind names flat's track), ``recall_at_10`` (mean over queries
of |top-10 ∩ flat's top-10| / 10; synthetic near-ties beyond the query's versions make ranks
5-10 partly arbitrary), ``versions_recall`` (of flat's top-10 tracks that are versions of the
query, i.e. in its clique, the fraction the kind also returns), ``distances_exact`` (every returned distance equal to the
flat index's R_min of that track, to float32 rounding), and the parameters used. ``flat`` itself is
checked against an exhaustive numpy R_min on ``--check-numpy`` queries (``flat_equals_numpy``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic(tracks: int, segments: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 7, size=tracks // 2 + 1)
    clique = np.repeat(np.arange(len(sizes)), sizes)[:tracks]
    centers = rng.standard_normal((len(sizes), dim)).astype(np.float32)
    lengths = rng.integers(1, segments + 1, size=tracks)
    return rng, clique, centers, lengths


def blocks_of(rng_seed: int, clique, centers, lengths, dim: int, block_tracks: int = 4096):
    """A callable returning the (vectors fp16, segment_track, segment_start) blocks, regenerated
    identically on every call (seeded), so the whole set never sits in memory twice."""
    def blocks():
        rng = np.random.default_rng(rng_seed)
        for t0 in range(0, len(lengths), block_tracks):
            t1 = min(len(lengths), t0 + block_tracks)
            n = lengths[t0:t1]
            owner = np.repeat(np.arange(t0, t1), n)
            offset = 0.6 * rng.standard_normal((t1 - t0, dim)).astype(np.float32)
            vec = centers[clique[owner]] + offset[owner - t0] + 0.5 * rng.standard_normal((len(owner), dim)).astype(np.float32)
            starts = np.concatenate([np.arange(k) for k in n]).astype(np.float64) * 5.0
            yield vec.astype(np.float16), owner.astype(np.int64), starts
    return blocks


def numpy_rmin(vectors, segment_track, n_tracks, query, top):
    q = query.astype(np.float64)
    best = np.full(n_tracks, np.inf)
    for a in range(0, len(vectors), 262144):
        v = np.asarray(vectors[a : a + 262144], dtype=np.float64)
        d = ((q * q).sum(1)[:, None] + (v * v).sum(1)[None, :] - 2.0 * q @ v.T).min(axis=0)
        np.minimum.at(best, segment_track[a : a + 262144], d)
    return np.lexsort((np.arange(n_tracks), best))[:top], best


def new_versions(rng, centers, n_queries: int, n_segments: int, dim: int):
    """Queries: a new version (own offset and noise) of a random clique each."""
    queries, query_clique = [], []
    for _ in range(n_queries):
        c = int(rng.integers(len(centers)))
        query_clique.append(c)
        offset = 0.6 * rng.standard_normal(dim)
        queries.append((centers[c] + offset + 0.5 * rng.standard_normal((n_segments, dim))).astype(np.float32))
    return queries, query_clique


def flat_equals_numpy(blocks, built, tracks, queries, found, args) -> bool:
    vecs = np.concatenate([b[0] for b in blocks()])
    agree = True
    for q, matches in list(zip(queries, found))[: args.check_numpy]:
        order, _best = numpy_rmin(vecs, built.segment_track, args.tracks, q, args.top)
        agree &= [m.track for m in matches] == [str(tracks[i]) for i in order]
    return bool(agree)


def compare_with_flat(reference, found, query_clique, clique) -> dict:
    """Recall@10, positions equal, versions recall and distance exactness of ``found`` against flat's."""
    recall, exact, versions, same = [], True, [], []
    for ref, got, c in zip(reference, found, query_clique):
        ref_tracks = {m.track: m.distance for m in ref}
        got_names = [m.track for m in got] + [None] * (len(ref) - len(got))
        same.append(np.mean([a.track == b for a, b in zip(ref, got_names)]))
        recall.append(len(ref_tracks.keys() & {m.track for m in got}) / len(ref))
        wanted = {t for t in ref_tracks if clique[int(t[1:])] == c}
        if wanted:
            versions.append(len(wanted & {m.track for m in got}) / len(wanted))
        for m in got:
            if m.track in ref_tracks:
                exact &= abs(m.distance - ref_tracks[m.track]) <= 1e-4 * max(1.0, abs(ref_tracks[m.track]))
    return {"recall_at_10": round(float(np.mean(recall)), 4), "recall_at_10_min": round(float(np.min(recall)), 2),
            "positions_equal_flat": round(float(np.mean(same)), 4),
            "versions_recall": round(float(np.mean(versions)), 4) if versions else None,
            "distances_exact": bool(exact)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--segments", type=int, default=40)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--query-segments", type=int, default=20)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kinds", default="flat,ivf-flat,ivf-pq,hnsw")
    parser.add_argument("--check-numpy", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--target-recall", type=float, default=0.95,
                        help="approximate kinds: tune nprobe / ef_search to this recall, as 'index build' does")
    parser.add_argument("--recall-queries", type=int, default=100)
    parser.add_argument("--no-tune", action="store_true", help="keep the untuned defaults (nlist/16 cells, efSearch 128)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the only output mode)")
    args = parser.parse_args()

    import faiss

    from clews_pipe.search.ann import index_bytes
    from clews_pipe.search.segment_index import build_index_from_blocks, search_tracks, tune_index, vectors_path

    faiss.omp_set_num_threads(args.threads)
    rng, clique, centers, lengths = synthetic(args.tracks, args.segments, args.dim)
    blocks = blocks_of(1, clique, centers, lengths, args.dim)
    tracks = np.asarray([f"t{i:07d}" for i in range(args.tracks)])
    queries, query_clique = new_versions(rng, centers, args.queries, args.query_segments, args.dim)
    starts = np.arange(args.query_segments) * 5.0
    kinds = args.kinds.split(",")
    if "flat" in kinds:
        kinds = ["flat"] + [k for k in kinds if k != "flat"]
    tmp = args.workdir or Path(tempfile.mkdtemp(prefix="clews-segsearch-"))
    tmp.mkdir(parents=True, exist_ok=True)
    result = {"tracks": args.tracks, "segments": int(lengths.sum()), "dim": args.dim,
              "query_segments": args.query_segments, "queries": args.queries, "top": args.top,
              "threads": args.threads, "kinds": {}}
    reference = None
    try:
        for kind in kinds:
            out = tmp / f"{kind}.faiss"
            start = time.perf_counter()
            built = build_index_from_blocks(blocks, tracks, out, kind=kind)
            build_s = time.perf_counter() - start
            tune_s = None
            if built.params.approximate and not args.no_tune:
                start = time.perf_counter()
                built = tune_index(built, out, args.target_recall, args.recall_queries, given=False)
                tune_s = time.perf_counter() - start
            times, found = [], []
            for q in queries:
                t0 = time.perf_counter()
                matches = search_tracks(built, q, starts, top=args.top)
                times.append(1e3 * (time.perf_counter() - t0))
                found.append(matches)
            row = {"build_s": round(build_s, 1), "params": built.params.to_dict(),
                   "tune_s": None if tune_s is None else round(tune_s, 1),
                   "build_recall": None if built.recall is None else
                   {k: built.recall[k] for k in ("parameter", "value", "recall", "set_recall", "reached", "queries")},
                   "index_bytes_per_segment": round(index_bytes(built.index) / built.n_segments, 1),
                   "vectors_bytes_per_segment": round(os.path.getsize(vectors_path(out)) / built.n_segments, 1)
                   if vectors_path(out).exists() else 0.0,
                   "query_ms": round(float(np.median(times)), 1)}
            if kind == "flat":
                reference = found
                if args.check_numpy:
                    row["flat_equals_numpy"] = flat_equals_numpy(blocks, built, tracks, queries, found, args)
            elif reference is not None:
                row.update(compare_with_flat(reference, found, query_clique, clique))
            result["kinds"][kind] = row
            print(json.dumps({"done": kind, **row}), file=sys.stderr, flush=True)  # partial results survive
            del built
            for path in tmp.glob(f"{kind}.faiss*"):
                path.unlink()
    finally:
        if args.workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
