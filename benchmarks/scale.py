"""Discogs-VI scale on this machine: a 493k-track store, and evaluation time/memory against N.

    PYTHONPATH=src .venv/bin/python benchmarks/scale.py --json [--quick] [--workdir DIR]

Store (synthetic, Discogs-VI sized: ``--tracks`` 493,000 tracks in the index, ``--part-size`` 64
tracks per part → ~7,700 parts, ``--frames`` few frames per track so it fits on disk here; cliques
of 2-6 versions, splits train/val/test in the Discogs-VI proportions, tracks shuffled over the
parts so that one clique's versions sit in different parts):

- ``build_s`` / ``consolidate_s``: writing it with :class:`StoreWriter`, then the parquet index;
- ``open_s``: ``open_store`` (consolidated index); ``store_info_s``: ``open_store(...).summary()``
  (what ``clews-pipe store info`` does);
- ``dataset_setup_s``: :class:`ShingleDataset` over the train split (clique tables);
  ``epoch_setup_s``: :class:`EpochBatchSampler` ``set_epoch`` + the epoch's first batch of keys;
- ``loader_items_per_s``: ``dataset[key]`` in one process for items whose 4 tracks are each in a
  part not read before in the run (every read opens a part map: the worst case for open files);
  ``distinct_parts_read``; ``open_files_max`` (``/proc/self/fd``, sampled) and
  ``open_maps_max`` against ``max_open_maps`` (the reader's LRU bound).

Evaluation (``--eval-n``, default 2500,5000,10000,20000; ``--quick``: 2500,5000,10000): random
clustered fp16 embeddings (``--eval-s`` segments, ``--eval-d`` dims) written to a chunked
embeddings store, then the track-level protocol (bpwr-10) on ``--ranks`` CPU ranks (Lightning
Fabric, gloo) in a fresh process per N. Per N: ``seconds`` (rank 0: embeddings opened → metrics
written), ``pairs_per_s``, per-rank ``peak_rss_mb`` and ``growth_mb`` (peak RSS minus the RSS at
the job's start), and ``embeddings_mb`` (E). ``time_exponent``: the slope of log(seconds) against
log(N) (2 = time ∝ N²); ``growth_over_e_half``: each rank's growth / (E / ranks) (≤ 1 means the
ranks did not each load the whole set). ``distance_s`` / ``distance_time_exponent``: the tiled
distance phase alone (first to last tile of the slowest rank); ``metrics_s``: rank 0's metrics
afterwards (from the slowest rank's last tile to rank 0's report written: every rank counts the
per-query results of its own rows, rank 0 gathers them); ``metrics_over_distance`` their ratio;
``growth_rank0_over_others``: rank 0's growth over the largest other rank's; ``distance_phase_growth_mb``: per rank, the largest RSS seen after a tile minus the
RSS at the job's start.

Prints one JSON object. Everything is written under ``--workdir`` (default: a temporary folder,
removed afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DVI_SPLITS = (("train", 339_771), ("val", 37_081), ("test", 116_197))


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _open_files() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


# ------------------------------------------------------------------------------------- store
def synthetic_catalog(n_tracks: int, seed: int = 0):
    """(track ids, clique ids, splits) with cliques of 2-6 versions, DVI split proportions."""
    rng = np.random.default_rng(seed)
    sizes = []
    total = 0
    while total < n_tracks:
        size = int(min(rng.integers(2, 7), n_tracks - total))
        if size < 2 and sizes:
            sizes[-1] += size
        else:
            sizes.append(size)
        total += size
    sizes = np.asarray(sizes)
    clique = np.repeat(np.arange(len(sizes)), sizes)
    weights = np.asarray([n for _, n in DVI_SPLITS], dtype=float)
    split_of_clique = rng.choice(len(DVI_SPLITS), size=len(sizes), p=weights / weights.sum())
    splits = np.asarray([name for name, _ in DVI_SPLITS])[split_of_clique[clique]]
    order = rng.permutation(n_tracks)  # a clique's versions land in different parts
    ids = np.asarray([f"yt{i:09d}" for i in range(n_tracks)])
    return ids[order], np.asarray([f"C-{c:07d}" for c in clique])[order], splits[order]


def build_store(root: Path, n_tracks: int, part_size: int, frames: int, backend: str) -> dict:
    from clews_pipe.store import create_store

    ids, cliques, splits = synthetic_catalog(n_tracks)
    writer = create_store(root, backend=backend)
    base = (np.arange(frames * 84, dtype=np.float32).reshape(frames, 84) % 7).astype(np.float16)
    start = time.perf_counter()
    n_parts = 0
    for p0 in range(0, n_tracks, part_size):
        sl = slice(p0, min(n_tracks, p0 + part_size))
        records = [{"track_id": t, "clique": c, "version": f"V-{t}", "split": s, "status": "ok",
                    "duration": frames / 10.0} for t, c, s in zip(ids[sl], cliques[sl], splits[sl])]
        writer.write_part(f"part-{n_parts:06d}", records, [base] * len(records))
        n_parts += 1
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    writer.consolidate()
    return {"tracks": n_tracks, "parts": n_parts, "part_size": part_size, "frames_per_track": frames,
            "backend": backend, "build_s": round(build_s, 2), "consolidate_s": round(time.perf_counter() - start, 3)}


def measure_store(root: Path, loader_items: int) -> dict:
    import torch

    from clews_pipe.training.dataset import EpochBatchSampler, ShingleDataset
    from clews_pipe.store import open_store

    torch.set_num_threads(1)
    start = time.perf_counter()
    store = open_store(root)
    len(store)
    open_s = time.perf_counter() - start
    start = time.perf_counter()
    summary = open_store(root).summary()
    info_s = time.perf_counter() - start
    start = time.perf_counter()
    dataset = ShingleDataset(store, split="train", seed=0)
    dataset_s = time.perf_counter() - start
    sampler = EpochBatchSampler(len(dataset), batch_size=25, seed=0)
    start = time.perf_counter()
    sampler.set_epoch(3)
    first = next(iter(sampler))
    epoch_s = time.perf_counter() - start

    # items whose anchor sits in a part no earlier item touched (its positives: other parts too)
    part_of = store.lookup().part_codes[store.lookup().ids.get_indexer(dataset.track_ids)]
    order = np.random.default_rng(1).permutation(len(dataset))
    seen, anchors = set(), []
    for a in order:
        if int(part_of[a]) not in seen:
            seen.add(int(part_of[a]))
            anchors.append(int(a))
        if len(anchors) == loader_items:
            break
    fds_before = _open_files()
    most_fds, most_maps = fds_before, 0
    start = time.perf_counter()
    for i, a in enumerate(anchors):
        x, _clique, _track = dataset[(0, i, a)]
        if i % 25 == 0:
            most_fds = max(most_fds, _open_files())
            most_maps = max(most_maps, store.open_maps())
    loader_s = time.perf_counter() - start
    return {
        "open_s": round(open_s, 3), "store_info_s": round(info_s, 3), "store_parts": summary["parts"],
        "store_tracks": summary["tracks"], "bytes_on_disk": summary["bytes_on_disk"],
        "dataset_setup_s": round(dataset_s, 3), "train_anchors": len(dataset), "epoch_setup_s": round(epoch_s, 4),
        "first_batch_keys": len(first), "loader_items": len(anchors), "item_shape": list(x.shape),
        "loader_items_per_s": round(len(anchors) / loader_s, 1), "distinct_parts_read": len(seen),
        "open_files_before": fds_before, "open_files_max": most_fds, "open_maps_max": most_maps,
        "max_open_maps": store.max_open_maps,
    }


# ------------------------------------------------------------------------------------- evaluation
def make_embeddings(path: Path, n: int, s: int, d: int, seed: int = 0) -> int:
    """Write random clustered fp16 embeddings (N, S, D) as a chunked store; return its bytes (E)."""
    from clews_pipe.embeddings.zarr_format import EmbeddingStoreWriter

    rng = np.random.default_rng(seed)
    n_cliques = max(2, n // 4)
    clique = rng.integers(0, n_cliques, n)
    centers = rng.standard_normal((n_cliques, d)).astype(np.float32)
    writer = EmbeddingStoreWriter.create(path, n_tracks=n, n_segments=s, dim=d, dtype="float16",
                                         track=np.asarray([f"t{i:07d}" for i in range(n)]), clique=clique)
    block = writer.block
    for b0 in range(0, n, block):
        b1 = min(n, b0 + block)
        z = centers[clique[b0:b1]][:, None, :] + 3.0 * rng.standard_normal((b1 - b0, s, d)).astype(np.float32)
        n_valid = rng.integers(max(1, s // 4), s + 1, b1 - b0)
        mask = np.arange(s)[None, :] >= n_valid[:, None]
        z[mask] = 0.0
        writer.write_rows(b0, z.astype(np.float16), mask)
    writer.close()
    return n * s * d * 2 + n * s


def _eval_worker(args) -> None:
    """One evaluation on ``--ranks`` ranks (Fabric re-runs this command line for the other ranks)."""
    import torch

    from clews_pipe.evaluation.distances import TileSettings
    from clews_pipe.embeddings.formats import open_embeddings
    from clews_pipe.evaluation.evaluate import evaluate_track_level
    from clews_pipe.ranks import run_on_ranks

    def job(ctx):
        baseline = _rss_mb()
        tiles = {"first": None, "last": None, "rss": baseline, "count": 0}

        def on_tile(_qi, _ci):  # distance phase: time and resident memory after every tile
            now = time.perf_counter()
            tiles["first"] = tiles["first"] or now
            tiles["last"] = now
            tiles["rss"] = max(tiles["rss"], _rss_mb())
            tiles["count"] += 1

        start = time.perf_counter()
        emb = open_embeddings(args.eval_worker[0])
        opened = time.perf_counter()
        summary = evaluate_track_level(emb, args.eval_worker[1], "bpwr-10", ctx,
                                       TileSettings(tile=args.tile, memory_mb=args.memory_mb), progress=False,
                                       on_tile=on_tile)
        end = time.perf_counter()
        record = {"rank": ctx.rank, "seconds": end - start, "end_wall": time.time(),
                  "last_tile_wall": time.time() - (end - (tiles["last"] or opened)), "baseline_rss_mb": baseline, "peak_rss_mb": _peak_rss_mb(),
                  "distance_s": (tiles["last"] or opened) - opened, "tiles": tiles["count"],
                  "distance_phase_rss_mb": tiles["rss"], "after_distances_s": end - (tiles["last"] or opened),
                  "threads": torch.get_num_threads()}
        if summary is not None:
            record["MAP"] = summary["MAP"]
        Path(args.eval_worker[2], f"rank{ctx.rank}.json").write_text(json.dumps(record))
        return summary

    run_on_ranks(job, devices=args.ranks, accelerator="cpu")


def measure_eval(workdir: Path, sizes: list[int], s: int, d: int, ranks: int, tile: int, memory_mb: float) -> list[dict]:
    rows = []
    for n in sizes:
        emb_path = workdir / f"emb-{n}.zarr"
        e_bytes = make_embeddings(emb_path, n, s, d)
        out, rec = workdir / f"eval-{n}", workdir / f"rank-records-{n}"
        rec.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, os.path.abspath(__file__), "--ranks", str(ranks), "--tile", str(tile),
               "--memory-mb", str(memory_mb), "--eval-worker", str(emb_path), str(out), str(rec)]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"evaluation at N={n} failed:\n{proc.stderr[-3000:]}")
        per_rank = [json.loads((rec / f"rank{r}.json").read_text()) for r in range(ranks)]
        seconds = max(r["seconds"] for r in per_rank)
        distance_s = max(r["distance_s"] for r in per_rank)
        # metrics: from the last tile of the slowest rank to rank 0's metrics written (all ranks count)
        metrics_s = per_rank[0]["end_wall"] - max(r["last_tile_wall"] for r in per_rank)
        rows.append({
            "N": n, "S": s, "D": d, "ranks": ranks, "seconds": round(seconds, 2), "process_wall_s": round(wall, 2),
            "distance_s": round(distance_s, 2), "metrics_s": round(metrics_s, 2),
            "metrics_over_distance": round(metrics_s / max(distance_s, 1e-9), 4),
            "pairs_per_s": round(n * n / distance_s), "embeddings_mb": round(e_bytes / 2**20, 2),
            "distance_phase_growth_mb": [round(r["distance_phase_rss_mb"] - r["baseline_rss_mb"], 1) for r in per_rank],
            "peak_rss_mb": [round(r["peak_rss_mb"], 1) for r in per_rank],
            "growth_mb": [round(r["peak_rss_mb"] - r["baseline_rss_mb"], 1) for r in per_rank],
            "growth_over_e_half": [round((r["peak_rss_mb"] - r["baseline_rss_mb"]) / (e_bytes / 2**20 / ranks), 3)
                                   for r in per_rank],
            "MAP": round(per_rank[0].get("MAP", float("nan")), 4),
            "growth_rank0_over_others": round((per_rank[0]["peak_rss_mb"] - per_rank[0]["baseline_rss_mb"])
                                              / max(max(r["peak_rss_mb"] - r["baseline_rss_mb"] for r in per_rank[1:]), 1e-9), 3)
            if ranks > 1 else None,
            "load_average": [round(x, 2) for x in os.getloadavg()],
        })
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(emb_path, ignore_errors=True)
    return rows


def _slope(rows: list[dict], key: str = "seconds") -> float | None:
    if len(rows) < 2:
        return None
    x = np.log([r["N"] for r in rows])
    y = np.log([max(r[key], 1e-6) for r in rows])
    return round(float(np.polyfit(x, y, 1)[0]), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (the only output mode)")
    parser.add_argument("--quick", action="store_true", help="fewer loader items and N up to 10k")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--tracks", type=int, default=493_000)
    parser.add_argument("--part-size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--backend", default=None, help="zarr (default) or hdf5 (--quick: hdf5, faster to write)")
    parser.add_argument("--loader-items", type=int, default=None)
    parser.add_argument("--eval-n", default=None, help="comma-separated N values")
    parser.add_argument("--eval-s", type=int, default=8)
    parser.add_argument("--eval-d", type=int, default=32)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--memory-mb", type=float, default=64.0)
    parser.add_argument("--skip-store", action="store_true")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--eval-worker", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.eval_worker:
        _eval_worker(args)
        return
    sizes = [int(x) for x in (args.eval_n or ("2500,5000,10000" if args.quick else "2500,5000,10000,20000")).split(",")]
    loader_items = args.loader_items or (400 if args.quick else 2000)
    args.backend = args.backend or ("hdf5" if args.quick else "zarr")
    tmp = None
    workdir = args.workdir
    if workdir is None:
        tmp = tempfile.mkdtemp(prefix="clews-scale-")
        workdir = Path(tmp)
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict = {"quick": args.quick, "cpu_count": os.cpu_count(),
                    "ulimit_n": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}
    try:
        if not args.skip_store:
            root = workdir / "store"
            if root.exists():
                shutil.rmtree(root)
            result["store"] = build_store(root, args.tracks, args.part_size, args.frames, args.backend)
            result["store"].update(measure_store(root, loader_items))
            shutil.rmtree(root, ignore_errors=True)
        if not args.skip_eval:
            rows = measure_eval(workdir, sizes, args.eval_s, args.eval_d, args.ranks, args.tile, args.memory_mb)
            result["evaluation"] = {"redux": "bpwr-10", "tile": args.tile, "memory_mb": args.memory_mb, "rows": rows,
                                    "time_exponent": _slope(rows),
                                    "distance_time_exponent": _slope(rows, "distance_s"),
                                    "metrics_time_exponent": _slope(rows, "metrics_s"),
                                    "growth_mb_max": max(max(r["growth_mb"]) for r in rows),
                                    "growth_mb_min": min(min(r["growth_mb"]) for r in rows)}
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
