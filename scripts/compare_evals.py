"""Print evaluation folders side by side (MAP, chance MAP, MR1, NAR, queries, method):

    python scripts/compare_evals.py demo-run/eval-track demo-run/eval-baseline --labels model,baseline
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    from clews_pipe.errors import ClewsError
    from clews_pipe.reporting.eval_dir import read_metrics

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_dirs", nargs="+")
    parser.add_argument("--labels", default="")
    args = parser.parse_args(argv)
    labels = args.labels.split(",") if args.labels else args.eval_dirs
    if len(labels) != len(args.eval_dirs):
        print("error: --labels needs one label per folder", file=sys.stderr)
        return 2
    print("| | MAP | MAP chance | MR1 | NAR (%) | queries | method |")
    print("|---|---|---|---|---|---|---|")
    for label, folder in zip(labels, args.eval_dirs):
        try:
            m = read_metrics(folder)
        except ClewsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        prov = m.get("provenance") or {}
        method = prov.get("method") or f"{prov.get('checkpoint') or 'embeddings'} ({m.get('redux')})"
        print(f"| {label} | {m['MAP']:.3f} ± {m['MAP_ci']:.3f} | {m['MAP_chance']:.3f} | {m['MR1']:.1f} | "
              f"{m['NAR']:.2f} | {m['queries']} | {method} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
