"""Peak memory of ``clews-pipe evaluate --embeddings FILE.npz`` on several ranks, as a user measures it.

    PYTHONPATH=src .venv/bin/python benchmarks/npz_memory.py --json [--tracks 2000] [--segments 8]
        [--dim 8192] [--small 50] [--devices 2] [--memory-mb MB] [--workdir DIR]

Writes two uncompressed float16 embeddings files with ``np.savez`` (``--tracks`` and ``--small``
tracks, cliques of 4), runs ``/usr/bin/time -f %M clews-pipe evaluate --embeddings FILE --devices
N --redux min`` on each (a fresh command line, as a user would), and prints one JSON object:
``set_mb`` (bytes of ``z``), ``peak_kb`` of each run (the largest process: GNU time reports the
maximum resident set of the command and the ranks it waited for), ``growth_mb`` = large − small
and ``growth_over_half_set`` (≤ 1: no process held the whole set).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_set(path: Path, n: int, s: int, d: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    clique = np.arange(n) // 4
    z = np.empty((n, s, d), dtype=np.float16)
    for a in range(0, n, 256):  # written in blocks: this script never holds float32 copies of the set
        b = min(n, a + 256)
        z[a:b] = rng.standard_normal((b - a, s, d), dtype=np.float32).astype(np.float16)
    np.savez(path, z=z, mask=np.zeros((n, s), bool), clique=clique,
             track=np.asarray([f"t{i:06d}" for i in range(n)]))
    return z.nbytes


def peak_kb(emb: Path, out: Path, devices: int, memory_mb: float | None) -> tuple[int, float]:
    cli = [str(Path(sys.executable).parent / "clews-pipe")]  # the console script, as a user runs it
    cmd = ["/usr/bin/time", "-f", "%M", *cli, "evaluate", "--embeddings", str(emb), "--out", str(out),
           "--devices", str(devices), "--redux", "min", "--quiet"]
    if memory_mb is not None:
        cmd += ["--memory-mb", str(memory_mb)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    if proc.returncode != 0 or "Command terminated" in proc.stderr:
        raise SystemExit(f"evaluate failed:\n{proc.stderr[-3000:]}")
    return int(proc.stderr.strip().splitlines()[-1]), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (the only output mode)")
    parser.add_argument("--tracks", type=int, default=2000)
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--dim", type=int, default=8192)
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--memory-mb", type=float, default=None, help="evaluate --memory-mb (default: its own)")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="clews-npzmem-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        set_bytes = write_set(work / "large.npz", args.tracks, args.segments, args.dim)
        write_set(work / "small.npz", args.small, args.segments, args.dim)
        small_kb, small_s = peak_kb(work / "small.npz", work / "out-small", args.devices, args.memory_mb)
        large_kb, large_s = peak_kb(work / "large.npz", work / "out-large", args.devices, args.memory_mb)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    growth_mb = (large_kb - small_kb) / 1024
    set_mb = set_bytes / 2**20
    print(json.dumps({"memory_mb": args.memory_mb, "tracks": args.tracks, "segments": args.segments, "dim": args.dim, "devices": args.devices,
                      "set_mb": round(set_mb, 1), "peak_kb": {"small": small_kb, "large": large_kb},
                      "seconds": {"small": round(small_s, 1), "large": round(large_s, 1)},
                      "growth_mb": round(growth_mb, 1), "growth_over_half_set": round(growth_mb / (set_mb / 2), 3),
                      "load_average": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()
