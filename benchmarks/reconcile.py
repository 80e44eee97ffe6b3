"""Rerun reconciliation benchmark: a store of N parts (synthetic tracks through the public writer),
then time ``StoreWriter.reconcile`` (manifest, fragment, layout and size of every part) and with
``crc=True`` (every byte read), and the metadata application at consolidation. Prints JSON.

    .venv/bin/python benchmarks/reconcile.py --parts 500 --part-size 64 --frames 3000
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from clews_pipe.store import create_store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", type=int, default=200)
    parser.add_argument("--part-size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=300, help="frames per track (3000 = 5 min)")
    parser.add_argument("--backend", default="zarr")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="clews-reconcile-")) / "s.store"
    try:
        writer = create_store(root, backend=args.backend)
        rng = np.random.default_rng(0)
        track = 0
        t0 = time.perf_counter()
        for p in range(args.parts):
            records, feats = [], []
            for _ in range(args.part_size):
                records.append({"track_id": f"T{track:09d}", "clique": f"C-{track // 3}", "version": "v",
                                "split": "train", "status": "ok", "duration": args.frames / 10.0})
                feats.append(rng.random((args.frames, 84), dtype=np.float32).astype(np.float16))
                track += 1
            writer.write_part(f"p{p:05d}", records, feats)
        build_s = time.perf_counter() - t0
        writer.consolidate()
        t0 = time.perf_counter()
        report = writer.reconcile(crc=False, older_than=time.time())
        plain_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        report_crc = writer.reconcile(crc=True, older_than=time.time())
        crc_s = time.perf_counter() - t0
        catalog = pd.DataFrame({"track_id": [f"T{i:09d}" for i in range(track)], "clique": "X", "version": "v",
                                "split": "test", "title": "", "artist": ""})
        t0 = time.perf_counter()
        writer.consolidate(catalog)
        meta_s = time.perf_counter() - t0
        data_bytes = track * args.frames * 84 * 2
        print(json.dumps({
            "parts": args.parts, "tracks": track, "backend": args.backend, "data_gb": round(data_bytes / 1e9, 3),
            "build_s": round(build_s, 2),
            "reconcile_s": round(plain_s, 3), "reconcile_ms_per_part": round(1000 * plain_s / args.parts, 2),
            "reconcile_crc_s": round(crc_s, 3), "crc_gb_per_s": round(data_bytes / 1e9 / crc_s, 3),
            "metadata_apply_s": round(meta_s, 3), "metadata_updated": writer.metadata_updated,
            "damaged_found": len(report["damaged_parts"]) + len(report_crc["damaged_parts"]),
        }))
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
