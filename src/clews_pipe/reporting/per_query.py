"""``per_query.csv``: one row per query of an evaluation, to see where a model wins and fails.

Columns: ``track``, ``clique``, ``AP``, ``R1``, ``NAR`` (the protocol's NAR), ``n_positives`` and
``neighbours``: the ``N_NEIGHBOURS`` nearest candidates (the query itself left out), nearest first,
as space-separated ``track:distance:match`` items (``match`` 1 = same clique). A query with no
other version of its clique among the candidates has empty AP / R1 / NAR.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from clews_pipe.atomic import write_text_atomic
from clews_pipe.errors import ClewsError

N_NEIGHBOURS = 10
COLUMNS = ("track", "clique", "AP", "R1", "NAR", "n_positives", "neighbours")


def nearest(rows: np.ndarray, own: np.ndarray, k: int = N_NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """Columns and distances of the ``k`` nearest candidates of each row (own column excluded,
    ties by column order); (n, k') with k' = min(k, candidates − 1 or candidates)."""
    rows = np.array(rows, dtype=np.float64, copy=True)
    n, m = rows.shape
    has_own = own >= 0
    rows[np.nonzero(has_own)[0], own[has_own]] = np.inf
    k_eff = max(0, min(k, m - (1 if has_own.any() else 0)))
    order = np.argsort(rows, axis=1, kind="stable")[:, :k_eff]
    return order, np.take_along_axis(rows, order, axis=1)


def neighbour_items(cols: np.ndarray, dists: np.ndarray, candidate_track, candidate_clique, query_clique) -> list[str]:
    """The ``neighbours`` cell of each query."""
    out = []
    for i in range(cols.shape[0]):
        items = [
            f"{candidate_track[j]}:{d:.6g}:{int(candidate_clique[j] == query_clique[i])}"
            for j, d in zip(cols[i].tolist(), dists[i].tolist())
        ]
        out.append(" ".join(items))
    return out


def neighbour_cells(nn_col: np.ndarray, nn_dist: np.ndarray, candidate_track, candidate_clique,
                    query_clique) -> list[str]:
    """The ``neighbours`` cell of each query from (n, k) columns (-1 = none) and distances."""
    nn_col = np.asarray(nn_col)
    valid = nn_col >= 0
    cols = nn_col[valid]
    tracks = np.asarray(candidate_track)[cols].tolist()
    match = (np.asarray(candidate_clique)[cols] == np.repeat(np.asarray(query_clique), valid.sum(1))).astype(int).tolist()
    items = [f"{t}:{d:.6g}:{m}" for t, d, m in zip(tracks, np.asarray(nn_dist, dtype=np.float64)[valid].tolist(), match)]
    ends = np.cumsum(valid.sum(1)).tolist()
    starts = [0] + ends[:-1]
    return [" ".join(items[a:b]) for a, b in zip(starts, ends)]


def _cell(value: float, digits: str) -> str:
    return "" if value is None or not math.isfinite(value) else format(float(value), digits)


def write_per_query_csv(path: str | Path, track, clique, per_query, nar_kind: str, neighbours: list[str]) -> Path:
    """Write the table atomically; ``per_query`` is a :class:`~clews_pipe.retrieval.metrics.QueryMetrics`."""
    nar = per_query.nar_of(nar_kind)
    n_pos = per_query.n_positives if per_query.n_positives is not None else np.zeros(len(track), dtype=np.int64)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for i in range(len(track)):
        writer.writerow([
            str(track[i]), str(clique[i]), _cell(per_query.ap[i], ".6f"), _cell(per_query.r1[i], ".0f"),
            _cell(nar[i], ".6f"), int(n_pos[i]), neighbours[i],
        ])
    write_text_atomic(path, buffer.getvalue())
    return Path(path)


def read_per_query(eval_dir: str | Path) -> list[dict]:
    """The rows of ``EVAL_DIR/per_query.csv`` (empty when the folder has none)."""
    path = Path(eval_dir) / "per_query.csv"
    if not path.is_file():
        return []
    try:
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise ClewsError(f"{path}: not a readable per-query table ({exc})") from None
