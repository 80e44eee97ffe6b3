"""Compositions demo corpus: seconds of audio rendered per wall-second and per CPU-second.

    python benchmarks/compositions.py --json [--cliques 30] [--workers 2] [--renderer auto]

Renders a compositions corpus into a temporary folder and prints one JSON object: wall time,
CPU time of this process and its workers (``os.times``: user + system, children included),
audio seconds, real-time factor per wall-second (what a user waits) and per CPU-second (what
the machine's other load does not change), and the machine's load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time


def main(argv=None) -> int:
    from clews_pipe.datasets.compositions import generate_compositions_corpus

    parser = argparse.ArgumentParser()
    parser.add_argument("--cliques", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--renderer", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    cpu0, wall0 = os.times(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        summary = generate_compositions_corpus(tmp, cliques=args.cliques, seed=args.seed, workers=args.workers,
                                               renderer=args.renderer, log=lambda line: print(line, file=sys.stderr))
    wall, cpu1 = time.perf_counter() - wall0, os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system) + (cpu1.children_user - cpu0.children_user) + (
        cpu1.children_system - cpu0.children_system)
    out = {"cliques": args.cliques, "tracks": summary["tracks"], "renderer": summary["renderer"],
           "workers": args.workers, "audio_s": summary["audio_seconds"], "wall_s": round(wall, 1),
           "cpu_s": round(cpu, 1), "realtime_per_wall_s": round(summary["audio_seconds"] / wall, 1),
           "realtime_per_cpu_s": round(summary["audio_seconds"] / max(cpu, 1e-9), 1),
           "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]}
    print(json.dumps(out) if args.json else "\n".join(f"{k}: {v}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
