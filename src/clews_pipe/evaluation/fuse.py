"""Late fusion of two distance matrices over the same tracks: D = A + alpha * B, per alpha."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from clews_pipe.errors import ClewsError
from clews_pipe.retrieval.metrics import query_metrics, self_columns, summarize
from clews_pipe.evaluation.wealy import LabelledMatrix, load_matrix


def align(a: LabelledMatrix, b: LabelledMatrix, name_a: str = "A", name_b: str = "B") -> np.ndarray:
    """``b``'s distances reordered to ``a``'s rows and columns; ClewsError if tracks differ."""
    for side, ka, kb in (("query", a.query_key, b.query_key), ("candidate", a.candidate_key, b.candidate_key)):
        only_a = set(ka) - set(kb)
        only_b = set(kb) - set(ka)
        if only_a or only_b:
            example = sorted(only_a or only_b)[0]
            raise ClewsError(
                f"fuse: {side} tracks differ between {name_a} and {name_b}: {len(only_a)} only in {name_a}, "
                f"{len(only_b)} only in {name_b} (e.g. {example!r})"
            )
    row = {k: i for i, k in enumerate(b.query_key)}
    col = {k: j for j, k in enumerate(b.candidate_key)}
    rows = np.array([row[k] for k in a.query_key])
    cols = np.array([col[k] for k in a.candidate_key])
    return b.distances[np.ix_(rows, cols)]


def fuse(path_a, path_b, alphas, out_csv, block_rows: int = 2048, trust_pickle: bool = False) -> list[dict]:
    """Evaluate ``A + alpha * B`` for each alpha; write one CSV row per alpha; return the rows.
    WEALY pickles are read by the restricted unpickler unless ``trust_pickle``."""
    a = load_matrix(path_a, trust=trust_pickle)
    b = load_matrix(path_b, trust=trust_pickle)
    b_aligned = align(a, b, str(path_a), str(path_b))
    for name, mat in ((path_a, a.distances), (path_b, b_aligned)):
        if np.isnan(mat).any():
            raise ClewsError(f"fuse: {name} holds NaN distances")
    own = self_columns(a.query_key, a.candidate_key)
    rows = []
    for alpha in alphas:
        fused = a.distances + float(alpha) * b_aligned
        parts = [
            query_metrics(fused[s : s + block_rows], a.query_clique[s : s + block_rows], a.candidate_clique, own[s : s + block_rows])
            for s in range(0, fused.shape[0], block_rows)
        ]
        from clews_pipe.retrieval.metrics import QueryMetrics

        summary = summarize(QueryMetrics.concat(parts), redux=str(a.metadata.get("redux", "")), level="fused")
        rows.append({"alpha": float(alpha), **{k: summary[k] for k in ("MAP", "MR1", "NAR", "MAP_ci", "MR1_ci", "NAR_ci", "queries", "skipped")}})
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    return rows
