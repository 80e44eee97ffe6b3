"""Feature-store index benchmark: build a store with N synthetic tracks (tiny frame arrays,
realistic index strings) through the public writer, then time opening it (consolidated and
not), the first and subsequent window reads, and pickling the FeatureStore. Prints JSON.

    .venv/bin/python benchmarks/store_index.py --tracks 500000
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from clews_pipe.store import create_store, open_store

CQT = {"samplerate": 16000, "hoplen": 0.02, "noctaves": 7, "nbinsoct": 12, "fscale": 1.0, "pool": 5}
_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))


def synthetic_ids(rng: np.random.Generator, n: int) -> list[str]:
    """n distinct 11-character youtube-like ids."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        chars = _ALPHABET[rng.integers(0, len(_ALPHABET), size=(n - len(ids), 11))]
        for s in map("".join, chars):
            if s not in seen:
                seen.add(s)
                ids.append(s)
    return ids


def build(root: Path, n_tracks: int, part_size: int, frames: int, backend: str, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    ids = synthetic_ids(rng, n_tracks)
    cliques = rng.integers(0, n_tracks // 5 + 1, size=n_tracks)
    splits = np.array(["train", "val", "test"])[rng.choice(3, size=n_tracks, p=[0.7, 0.08, 0.22])]
    statuses = np.array(["ok", "truncated", "failed", "missing"])[rng.choice(4, size=n_tracks, p=[0.8, 0.02, 0.01, 0.17])]
    writer = create_store(root, backend=backend, cqt_params=CQT)
    block = np.ones((frames, 84), dtype=np.float16)
    for p0 in range(0, n_tracks, part_size):
        records, features = [], []
        for i in range(p0, min(n_tracks, p0 + part_size)):
            status = str(statuses[i])
            records.append({
                "track_id": ids[i], "clique": f"C-{cliques[i]:07d}", "version": f"V-{i:07d}",
                "split": str(splits[i]), "title": f"Synthetic song number {i} (live)", "artist": f"Artist {cliques[i]}",
                "path": f"/data/discogs-vi/audio/{ids[i][:2]}/{ids[i]}.mp4", "duration": 0.1 * frames,
                "status": status, "error": "" if status == "ok" else f"{status}: synthetic reason",
            })
            features.append(block if status in ("ok", "truncated") else None)
        writer.write_part(f"part-{p0 // part_size:05d}", records, features)
    return ids


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tracks", type=int, default=500_000)
    ap.add_argument("--part-size", type=int, default=5_000)
    ap.add_argument("--frames", type=int, default=2, help="frames per synthetic track")
    ap.add_argument("--backend", default="zarr")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reads", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="store-bench-"))
    root = workdir / "store"
    try:
        t0 = time.perf_counter()
        build(root, args.tracks, args.part_size, args.frames, args.backend, args.seed)
        build_s = time.perf_counter() - t0

        open_unconsolidated_s = best_of(lambda: open_store(root), args.repeats)
        t0 = time.perf_counter()
        create_store(root, backend=args.backend).consolidate()
        consolidate_s = time.perf_counter() - t0
        open_consolidated_s = best_of(lambda: open_store(root), args.repeats)

        store = open_store(root)
        readable = store.tracks().index.to_numpy()
        rng = np.random.default_rng(args.seed + 1)
        picks = readable[rng.integers(0, len(readable), size=args.reads)]
        t0 = time.perf_counter()
        store.read(picks[0], 0, 1)
        first_read_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for tid in picks:
            store.read(tid, 0, 1)
        read_us = (time.perf_counter() - t0) / len(picks) * 1e6

        t0 = time.perf_counter()
        blob = pickle.dumps(store)
        pickle_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pickle.loads(blob)
        unpickle_s = time.perf_counter() - t0

        print(json.dumps({
            "tracks": args.tracks, "parts": len(store.part_seqs), "backend": args.backend,
            "build_s": round(build_s, 2), "consolidate_s": round(consolidate_s, 3),
            "open_store_consolidated_s": round(open_consolidated_s, 3),
            "open_store_unconsolidated_s": round(open_unconsolidated_s, 3),
            "index_parquet_bytes": (root / "index.parquet").stat().st_size,
            "first_read_s": round(first_read_s, 3), "read_window_us": round(read_us, 2),
            "pickle_s": round(pickle_s, 3), "unpickle_s": round(unpickle_s, 3), "pickle_bytes": len(blob),
        }))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
