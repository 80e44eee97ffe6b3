"""Evaluation speed: clews-pipe's tiled distance matrix vs a straightforward published-style loop.

    python benchmarks/evaluate.py --json [--n 1000] [--segments 32] [--dim 256] [--baseline-queries 100]

Random clustered embeddings (N tracks, S segments, D dims, some padded segments). For each
reduction (bpwr-10, min): seconds for ``compute_distance_matrix`` + the per-query metrics and
report of ``evaluate`` (:func:`~clews_pipe.evaluation.evaluate.matrix_report`) (clews-pipe) and for
the published loop (one query at a time against all candidates, the full S x S segment distance
tensor per pair, ``r`` rounds of masked minima over the whole tensor). The loop is timed on
``--baseline-queries`` queries and scaled to N (``--baseline-queries 0`` runs all N); the metrics
of those queries must be identical between the two. ``distance_phase_s``: the tiled distance
matrix alone; ``fp32_gemm_s``: the float32 segment-distance matmuls of the same tiles and blocks
without any reduction (1 rank); ``distance_over_gemm``: their ratio (goal ≤ 1.5 for bpwr-10). Peak resident memory is reported for the
clews-pipe run (measured before the baseline runs). ``clews_pipe_cpu_s`` / ``published_loop_cpu_s``
(process CPU time, 1 rank) are the robust comparison on a shared machine; wall times suffer from
other load. ``max_abs_diff`` can be far above float32 rounding on a few pairs: float32 near-ties
make the greedy bpwr rounds pick different pairs (the published loop also takes every entry equal
to the round's minimum at once); clews-pipe's value equals a float64 brute-force loop there.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_data(n: int, s: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_cliques = max(2, n // 4)
    clique = rng.integers(0, n_cliques, n)
    centers = rng.standard_normal((n_cliques, d)).astype(np.float32)
    z = centers[clique][:, None, :] + 3.0 * rng.standard_normal((n, s, d)).astype(np.float32)
    n_valid = rng.integers(s // 4, s + 1, n)
    mask = np.arange(s)[None, :] >= n_valid[:, None]
    z[mask] = 0.0
    tracks = np.array([f"t{i:06d}" for i in range(n)])
    return z, mask, clique, tracks


def published_loop_distances(z, mask, redux: str, queries: np.ndarray) -> np.ndarray:
    """One query at a time; full (M, S, S) tensor; r rounds of masked minima (bpwr) as published."""
    zt = torch.from_numpy(z)
    mt = torch.from_numpy(mask)
    inf = float("inf")
    out = np.zeros((len(queries), len(z)), dtype=np.float32)
    for row, q in enumerate(queries):
        x = zt[q]  # (S, D)
        d = ((x.pow(2).sum(-1)[None, :, None] + zt.pow(2).sum(-1)[:, None, :] - 2 * torch.einsum("sd,mtd->mst", x, zt))
             .clamp_min(0) / z.shape[-1])  # (M, S, S)
        excl = mt[q][None, :, None] | mt[:, None, :]
        if redux == "min":
            out[row] = torch.where(excl, inf, d).amin(dim=(-2, -1)).numpy()
            continue
        r = int(redux.split("-")[1])
        taken = torch.zeros_like(excl)
        removed = excl.clone()
        for _ in range(min(r, d.shape[-1])):
            current = torch.where(removed, inf, d)
            smallest = current.amin(dim=(-2, -1), keepdim=True)
            pick = (current <= smallest) & ~removed
            taken |= pick
            removed = removed | pick.any(-1, keepdim=True) | pick.any(-2, keepdim=True)
        out[row] = (torch.where(taken, d, 0).sum((-2, -1)) / taken.sum((-2, -1)).clamp_min(1)).numpy()
    return out


def _rank_worker(rank, world, barrier, path, z, mask, redux, tracks, clique, tile, memory_mb, threads):
    """One of ``--ranks`` spawned processes: its share of the query-row blocks."""
    torch.set_num_threads(threads)
    from clews_pipe.evaluation.distances import TileSettings, compute_distance_matrix

    compute_distance_matrix(
        path, z, mask, z, mask, redux, query_track=tracks, candidate_track=tracks, query_clique=clique,
        candidate_clique=clique, settings=TileSettings(tile=tile, memory_mb=memory_mb), rank=rank,
        world_size=world, barrier=barrier.wait, progress=False,
    )


def gemm_only_s(z, mask, tile: int, memory_mb: float) -> float:
    """Seconds of the float32 segment-distance matmuls alone over the same tiles and blocks as the
    symmetric distance phase (tiles on and above the diagonal, blocks of ``tile_distances``)."""
    from clews_pipe.retrieval.segment_distances import cross_segment_distances
    from clews_pipe.retrieval.tiles import _block_shape

    zt, mt = torch.from_numpy(z), torch.from_numpy(mask)
    n, s = z.shape[:2]
    start = time.perf_counter()
    with torch.inference_mode():
        for q0 in range(0, n, tile):
            for c0 in range(q0, n, tile):
                zq, mq = zt[q0 : q0 + tile].float(), mt[q0 : q0 + tile]
                zc, mc = zt[c0 : c0 + tile].float(), mt[c0 : c0 + tile]
                bq, bc = _block_shape(len(zq), len(zc), s, s, memory_mb)
                if q0 == c0:
                    bq = bc = max(1, int((bq * bc) ** 0.5))
                for a in range(0, len(zq), bq):
                    for b in range(0, len(zc), bc):
                        if q0 == c0 and b + bc <= a:
                            continue
                        cross_segment_distances(zq[a : a + bq], zc[b : b + bc], mq[a : a + bq], mc[b : b + bc])
    return time.perf_counter() - start


def run_clews_pipe(path, z, mask, redux, tracks, clique, args):
    from clews_pipe.evaluation.distances import TileSettings, compute_distance_matrix

    if args.ranks == 1:
        compute_distance_matrix(
            path, z, mask, z, mask, redux, query_track=tracks, candidate_track=tracks, query_clique=clique,
            candidate_clique=clique, settings=TileSettings(tile=args.tile, memory_mb=args.memory_mb), progress=False,
        )
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(args.ranks)
    procs = [
        ctx.Process(target=_rank_worker, args=(r, args.ranks, barrier, path, z, mask, redux, tracks, clique, args.tile,
                                               args.memory_mb, 1))
        for r in range(args.ranks)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            raise RuntimeError(f"rank process failed with exit code {proc.exitcode}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--segments", type=int, default=32)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--reductions", default="bpwr-10,min")
    parser.add_argument("--baseline-queries", type=int, default=100, help="0 = all")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--memory-mb", type=float, default=64.0)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads for both (0 = torch default)")
    parser.add_argument("--ranks", type=int, default=1, help="clews-pipe processes (1 thread each when > 1)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from clews_pipe.evaluation.distances import open_distances
    from clews_pipe.evaluation.evaluate import matrix_report
    from clews_pipe.retrieval.metrics import query_metrics

    z, mask, clique, tracks = make_data(args.n, args.segments, args.dim)
    n_base = args.n if args.baseline_queries <= 0 else min(args.n, args.baseline_queries)
    base_rows = np.linspace(0, args.n - 1, n_base).round().astype(int)
    results = {"ranks": args.ranks, "n": args.n, "segments": args.segments, "dim": args.dim, "threads": torch.get_num_threads(),
               "baseline_queries": int(n_base), "reductions": {}}
    ours_by_redux = {}
    for redux in args.reductions.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            start, cpu_start = time.perf_counter(), time.process_time()
            path = Path(tmp) / "d.zarr"
            run_clews_pipe(path, z, mask, redux, tracks, clique, args)
            distance_s = time.perf_counter() - start
            metrics = matrix_report(path, redux, "track", memory_mb=max(16.0, args.memory_mb)).summary  # as evaluate does
            ours_s = time.perf_counter() - start
            matrix = open_distances(path)["distances"][:]
            ours_cpu = time.process_time() - cpu_start
        ours_by_redux[redux] = (matrix, ours_s, ours_cpu, metrics, distance_s)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    gemm_s = gemm_only_s(z, mask, args.tile, args.memory_mb) if args.ranks == 1 else None
    for redux, (matrix, ours_s, ours_cpu, metrics, distance_s) in ours_by_redux.items():
        start, cpu_start = time.perf_counter(), time.process_time()
        base = published_loop_distances(z, mask, redux, base_rows)
        base_s = time.perf_counter() - start
        base_cpu = time.process_time() - cpu_start
        base_full_s = base_s * args.n / n_base
        ours_rows = query_metrics(matrix[base_rows], clique[base_rows], clique, base_rows)
        base_m = query_metrics(base, clique[base_rows], clique, base_rows)
        identical = all(
            np.array_equal(np.nan_to_num(getattr(ours_rows, k), nan=-1), np.nan_to_num(getattr(base_m, k), nan=-1))
            for k in ("ap", "r1", "nar")
        )
        results["reductions"][redux] = {
            "clews_pipe_s": round(ours_s, 3),
            "distance_phase_s": round(distance_s, 3),
            "fp32_gemm_s": round(gemm_s, 3) if gemm_s is not None else None,
            "distance_over_gemm": round(distance_s / gemm_s, 2) if gemm_s else None,
            "published_loop_s": round(base_full_s, 3),
            "published_loop_measured_s": round(base_s, 3),
            "speedup": round(base_full_s / ours_s, 2),
            "clews_pipe_cpu_s": round(ours_cpu, 3) if args.ranks == 1 else None,
            "published_loop_cpu_s": round(base_cpu * args.n / n_base, 3),
            "max_abs_diff": float(np.abs(matrix[base_rows] - base).max()),
            "metrics_identical": bool(identical),
            "MAP": round(metrics["MAP"], 6),
            "NAR": round(metrics["NAR"], 6),
        }
    results["clews_pipe_peak_rss_mb"] = round(peak_mb, 1)  # this process (rank processes: see --ranks 1)
    results["load_average"] = [round(x, 2) for x in __import__("os").getloadavg()]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for redux, row in results["reductions"].items():
            print(f"{redux}: clews-pipe {row['clews_pipe_s']} s, published loop {row['published_loop_s']} s "
                  f"(x{row['speedup']}), metrics identical: {row['metrics_identical']}")
        print(f"peak RSS {results['clews_pipe_peak_rss_mb']} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
