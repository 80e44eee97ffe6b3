"""Where does a model lose against the Qmax baseline? For every positive pair (query, version) of an
evaluated split, the rank of the version in the query's row (0 = nearest, the query itself left
out) under the model's track distances and under Qmax's, grouped by what separates the two
versions in the compositions corpus: a key change or not, the same arrangement or not, chorale or
folk tune (from the ``.meta`` files that ``demo-corpus --kind compositions`` writes).

    PYTHONPATH=src python scripts/diagnose_pairs.py EVAL_MODEL EVAL_BASELINE CORPUS [--json]

EVAL_MODEL is a track-level ``clews-pipe evaluate`` folder (its ``distances.zarr``), EVAL_BASELINE a
``clews-pipe baseline`` folder (its ``qmax-rows``), both over the same split; CORPUS the corpus folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def read_model_rows(eval_dir: Path) -> tuple[np.ndarray, list[str], np.ndarray]:
    """The (N, N) track distances, the query tracks and their cliques."""
    import zarr

    group = zarr.open(str(eval_dir / "distances.zarr"), mode="r")
    tracks = [str(t) for t in group["query_track"][:]]
    cliques = np.array([str(c) for c in group["query_clique"][:]])
    return np.asarray(group["distances"], dtype=np.float64), tracks, cliques


def read_baseline_rows(eval_dir: Path) -> np.ndarray:
    blocks = sorted((eval_dir / "qmax-rows").glob("block-*.npy"))
    return np.concatenate([np.load(block) for block in blocks]).astype(np.float64)


def read_versions(corpus: Path) -> dict[str, dict]:
    return {meta.name.split(".")[0]: json.loads(meta.read_text()) for meta in corpus.rglob("*.meta")}


def ranks_of_positives(dist: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """(N, N) distances, bool (N, N) positives (diagonal False) → rank of each positive in its row
    (number of other candidates strictly closer), in ``positive.nonzero()`` order."""
    row = dist.copy()
    np.fill_diagonal(row, np.inf)
    qi, ci = positive.nonzero()
    return (row[qi] < row[qi, ci][:, None]).sum(axis=1)


def pair_groups(version_q: dict, version_c: dict) -> list[str]:
    vq, vc = version_q["version"], version_c["version"]
    collection = "chorale" if "chorale" in version_q.get("collection", "").lower() else "folk tune"
    return [
        "all pairs",
        "same key" if vq["key_shift"] == vc["key_shift"] else "key changed",
        "same arrangement" if vq["arrangement"] == vc["arrangement"] else "arrangement changed",
        collection,
    ]


def summarise(eval_model: Path, eval_baseline: Path, corpus: Path) -> dict[str, dict]:
    model, tracks, cliques = read_model_rows(eval_model)
    baseline = read_baseline_rows(eval_baseline)
    if baseline.shape != model.shape:
        raise SystemExit(f"error: {eval_model} has {model.shape} distances, {eval_baseline} {baseline.shape}")
    versions = read_versions(corpus)
    positive = (cliques[:, None] == cliques[None, :]) & ~np.eye(len(tracks), dtype=bool)
    model_rank, baseline_rank = ranks_of_positives(model, positive), ranks_of_positives(baseline, positive)
    groups: dict[str, list[int]] = defaultdict(list)
    for pair, (q, c) in enumerate(zip(*positive.nonzero())):
        for name in pair_groups(versions[tracks[q]], versions[tracks[c]]):
            groups[name].append(pair)
    out = {}
    for name, pairs in groups.items():
        m, b = model_rank[pairs], baseline_rank[pairs]
        out[name] = {
            "pairs": len(pairs),
            "model_median_rank": float(np.median(m)), "model_top1": float(np.mean(m == 0)),
            "qmax_median_rank": float(np.median(b)), "qmax_top1": float(np.mean(b == 0)),
        }
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("eval_model", type=Path)
    parser.add_argument("eval_baseline", type=Path)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    table = summarise(args.eval_model, args.eval_baseline, args.corpus)
    if args.json:
        print(json.dumps(table))
        return 0
    print("| pairs | n | model median rank | model top-1 | Qmax median rank | Qmax top-1 |\n|---|---|---|---|---|---|")
    for name, row in table.items():
        print(f"| {name} | {row['pairs']} | {row['model_median_rank']:.0f} | {row['model_top1']:.2f} | "
              f"{row['qmax_median_rank']:.0f} | {row['qmax_top1']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
