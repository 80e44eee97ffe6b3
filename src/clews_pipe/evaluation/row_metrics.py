"""Per-query results computed by the rank that owns the query rows, by counting instead of sorting.

The rank of a positive in a query's list is the number of candidates ranked before it, so a
query's AP, R1, NAR and ARP need only, for each positive, how many negatives come first; the
negatives after its worst positive never matter. Per block of rows this module

1. takes each row's positives from a clique index of the candidates (no (n, M) clique compare),
2. finds each row's worst positive and its ``N_NEIGHBOURS``-th nearest candidate (``topk``),
3. keeps the entries at or below the larger of the two (one compare, one ``nonzero``: a few
   per cent of the row for a useful model),
4. orders those by one integer key per entry, (row, distance, column) packed into 64 bits, so
   that float ties are broken by column exactly as a stable sort of the whole row would, and
   counts the negatives before each positive with one ``searchsorted`` into the sorted positives.

The definitions are :func:`clews_pipe.retrieval.metrics.query_metrics`' (the query's own column
left out of the list; ties by column order) and the nearest candidates are
:func:`clews_pipe.reporting.per_query.nearest`'s, so ``per_query.csv`` and ``metrics.json`` do
not change. Results of a distance matrix's row blocks are stored beside it (``per_query/`` in
``distances.zarr``, chunked by row block, ``rows_done`` marks finished blocks): each rank writes
its own blocks, and rank 0 only reads N small rows back and reduces them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from clews_pipe.errors import ClewsError
from clews_pipe.reporting.per_query import N_NEIGHBOURS
from clews_pipe.retrieval.metrics import QueryMetrics, expected_random_ap

FLOAT_FIELDS = ("ap", "r1", "nar", "arp", "chance_ap")
ENTRY_BYTES = 48  # per (row, candidate) entry of a sub-block: the row, masks and, at worst, its key and indices


@dataclass
class RowResults:
    """Per-query results of a block of rows (NaN metrics where the query has no positive)."""

    ap: np.ndarray
    r1: np.ndarray
    nar: np.ndarray  # over the true negatives (percent)
    arp: np.ndarray  # the published rank percentile (own track counted as a negative)
    chance_ap: np.ndarray
    n_positives: np.ndarray  # int64
    nn_col: np.ndarray  # (n, K) int64 columns of the nearest candidates, -1 = none
    nn_dist: np.ndarray  # (n, K) float32 their distances
    d_min: float  # smallest finite distance between different tracks in these rows (inf: none)
    d_max: float  # largest (-inf: none)

    @staticmethod
    def concat(parts: list["RowResults"]) -> "RowResults":
        arrays = {name: np.concatenate([getattr(p, name) for p in parts])
                  for name in FLOAT_FIELDS + ("n_positives", "nn_col", "nn_dist")}
        return RowResults(**arrays, d_min=min(p.d_min for p in parts), d_max=max(p.d_max for p in parts))

    def query_metrics(self) -> QueryMetrics:
        return QueryMetrics(ap=self.ap, r1=self.r1, nar=self.nar, evaluated=self.n_positives > 0,
                            chance_ap=self.chance_ap, arp=self.arp, n_positives=self.n_positives)


@dataclass(frozen=True)
class CliqueIndex:
    """The candidate columns of each clique, contiguous: ``columns[start[k]:start[k] + count[k]]``."""

    cliques: np.ndarray
    start: np.ndarray
    count: np.ndarray
    columns: np.ndarray

    @staticmethod
    def build(candidate_clique) -> "CliqueIndex":
        clique = np.asarray(candidate_clique, dtype=np.int64)
        columns = np.argsort(clique, kind="stable")
        cliques, start, count = np.unique(clique[columns], return_index=True, return_counts=True)
        return CliqueIndex(cliques, start.astype(np.int64), count.astype(np.int64), columns.astype(np.int64))

    def positives(self, query_clique: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(row, column)`` of every positive of every query (own column left out), grouped by row."""
        slot = np.searchsorted(self.cliques, query_clique)
        slot = np.minimum(slot, max(len(self.cliques) - 1, 0))
        found = (self.cliques[slot] == query_clique) if len(self.cliques) else np.zeros(len(query_clique), bool)
        count = np.where(found, self.count[slot], 0)
        row = np.repeat(np.arange(len(query_clique)), count)
        first = np.repeat(np.cumsum(count) - count, count)
        col = self.columns[np.repeat(self.start[slot], count) + np.arange(row.size) - first]
        keep = col != own[row]
        return row[keep], col[keep]


def _sortable(values: np.ndarray) -> np.ndarray:
    """float32 → uint32 with the same order (``-0.0`` first made ``+0.0``, so equal floats tie)."""
    bits = (np.asarray(values, dtype=np.float32) + np.float32(0.0)).view(np.uint32).astype(np.uint64)
    return np.where(bits >= 0x80000000, 0xFFFFFFFF - bits, bits + 0x80000000)


@dataclass(frozen=True)
class KeyLayout:
    """(row, distance, column) in one uint64: ``row << (32 + col_bits) | sortable(d) << col_bits | col``."""

    col_bits: int

    @staticmethod
    def for_columns(n_columns: int) -> "KeyLayout":
        bits = max(1, int(n_columns).bit_length())
        if bits > 31:
            raise ClewsError(f"metrics: {n_columns} candidates exceed the 2^31 this counter packs")
        return KeyLayout(bits)

    @property
    def max_rows(self) -> int:
        return 1 << (32 - self.col_bits)

    def keys(self, row: np.ndarray, dist: np.ndarray, col: np.ndarray) -> np.ndarray:
        shift = np.uint64(self.col_bits)
        return ((row.astype(np.uint64) << np.uint64(32 + self.col_bits))
                | (_sortable(dist) << shift) | col.astype(np.uint64))

    def row_ends(self, n_rows: int) -> np.ndarray:
        """A key after every real key of each row (the row's sentinel)."""
        low = np.uint64((1 << (32 + self.col_bits)) - 1)
        return (np.arange(n_rows, dtype=np.uint64) << np.uint64(32 + self.col_bits)) | low


@dataclass
class _Selected:
    """The entries of a sub-block at or below each row's threshold, own column left out."""

    row: np.ndarray
    col: np.ndarray
    dist: np.ndarray
    positive: np.ndarray


def _select(rows: np.ndarray, threshold: np.ndarray, own: np.ndarray, q_clique, c_clique) -> _Selected:
    row, col = np.nonzero(rows <= threshold[:, None])
    keep = col != own[row]
    row, col = row[keep], col[keep]
    return _Selected(row, col, rows[row, col], c_clique[col] == q_clique[row])


def _ranks_by_keys(rows: np.ndarray, worst: np.ndarray, own, q_clique, c_clique, layout: KeyLayout):
    """``(row, order within the row (0-based), negatives before it)`` of every positive: the
    entries at or below each row's worst positive, ordered by packed (row, distance, column) keys."""
    n = rows.shape[0]
    sel = _select(rows, worst, own, q_clique, c_clique)
    pos_keys = np.sort(np.concatenate([layout.keys(sel.row[sel.positive], sel.dist[sel.positive],
                                                   sel.col[sel.positive]), layout.row_ends(n)]))
    neg = ~sel.positive
    where = np.searchsorted(pos_keys, layout.keys(sel.row[neg], sel.dist[neg], sel.col[neg]))
    before = np.cumsum(np.bincount(where, minlength=pos_keys.size))
    pos_row = (pos_keys >> np.uint64(32 + layout.col_bits)).astype(np.int64)
    row_first = np.searchsorted(pos_row, np.arange(n))
    before_row_start = np.where(row_first > 0, before[np.maximum(row_first - 1, 0)], 0)
    real = np.ones(pos_keys.size, dtype=bool)
    real[row_first[1:] - 1] = False
    real[-1] = False
    idx = np.flatnonzero(real)
    row = pos_row[idx]
    return row, idx - row_first[row], before[idx] - before_row_start[row]


@dataclass
class _Positives:
    """Every positive of a block, ordered by (row, distance, column)."""

    row: np.ndarray
    col: np.ndarray
    dist: np.ndarray
    order: np.ndarray  # 0-based order within its row

    @staticmethod
    def of(rows: np.ndarray, pos_row: np.ndarray, pos_col: np.ndarray) -> "_Positives":
        dist = rows[pos_row, pos_col]
        o = np.lexsort((pos_col, dist, pos_row))
        row, col, dist = pos_row[o], pos_col[o], dist[o]
        first = np.searchsorted(row, row)
        return _Positives(row, col, dist, np.arange(row.size) - first)


def _ranks_by_counting(rows: np.ndarray, pos: _Positives, n_pos: np.ndarray):
    """Negatives before each positive from two counts per positive over its row (``d < t`` and
    ``d <= t``); also the rows where a negative ties a positive (to be redone by keys). Rows are
    taken in decreasing number of positives, so the rows with an i-th positive are a prefix."""
    n = rows.shape[0]
    by_count = np.argsort(-n_pos, kind="stable")
    ordered = rows[by_count]
    slot_of_row = np.empty(n, dtype=np.int64)
    slot_of_row[by_count] = np.arange(n)
    width = int(n_pos.max()) if n else 0
    thresholds = np.full((n, width), -np.inf, dtype=np.float32)
    thresholds[slot_of_row[pos.row], pos.order] = pos.dist
    below = np.zeros((n, width), dtype=np.int64)
    at_or_below = np.zeros((n, width), dtype=np.int64)
    active = np.count_nonzero(n_pos[:, None] > np.arange(width)[None, :], axis=0)
    for i in range(width):  # over positive orders (few), each a pass over the rows that have one
        block, column = ordered[:active[i]], thresholds[:active[i], i:i + 1]
        below[:active[i], i] = (block < column).view(np.uint8).sum(axis=1, dtype=np.int32)
        at_or_below[:active[i], i] = (block <= column).view(np.uint8).sum(axis=1, dtype=np.int32)
    k = np.arange(pos.row.size)
    new_value = (pos.order == 0) | (pos.dist != np.roll(pos.dist, 1))
    group_first = np.maximum.accumulate(np.where(new_value, k, 0))
    group_size = np.bincount(group_first, minlength=k.size)[group_first]
    pos_below = pos.order - (k - group_first)
    slot = slot_of_row[pos.row]
    neg_before = below[slot, pos.order] - pos_below
    neg_tied = at_or_below[slot, pos.order] - below[slot, pos.order] - group_size
    return neg_before, np.unique(pos.row[neg_tied > 0])


COUNT_NS_PER_ENTRY = 1.0  # two compare-and-count passes per positive (and one copy of the rows)
KEY_NS_PER_SELECTED = 40.0  # nonzero, gathers, packed keys and searchsorted per selected entry


def _positive_ranks(rows, worst, pos_row, pos_col, n_pos, own, q_clique, c_clique, layout, method: str = "auto"):
    """``(row, order, negatives before)`` of every positive, by whichever of counting and packed keys
    costs less on this block (the same numbers either way)."""
    n, m = rows.shape
    selected = int(np.count_nonzero(rows <= worst[:, None]))
    counting_costs_more = (len(pos_row) * m + n * m) * COUNT_NS_PER_ENTRY >= selected * KEY_NS_PER_SELECTED
    if method == "keys" or (method == "auto" and counting_costs_more):
        return _ranks_by_keys(rows, worst, own, q_clique, c_clique, layout)
    pos = _Positives.of(rows, pos_row, pos_col)
    neg_before, tied_rows = _ranks_by_counting(rows, pos, n_pos)
    if tied_rows.size:
        # both lists are in (row, order) order, so the tied rows' positives line up one to one
        _, _, tied_before = _ranks_by_keys(rows[tied_rows], worst[tied_rows], own[tied_rows],
                                           q_clique[tied_rows], c_clique, layout)
        neg_before[np.isin(pos.row, tied_rows)] = tied_before
    return pos.row, pos.order, neg_before


def _nearest(sel: _Selected, kth: np.ndarray, k_row: np.ndarray, layout: KeyLayout, n: int, k: int):
    """(n, k) columns (-1 = none) and distances of each row's ``k_row`` nearest, ties by column."""
    near = sel.dist <= kth[sel.row]
    order = np.argsort(layout.keys(sel.row[near], sel.dist[near], sel.col[near]))
    row, col, dist = sel.row[near][order], sel.col[near][order], sel.dist[near][order]
    slot = np.arange(row.size) - np.searchsorted(row, row)
    keep = slot < k_row[row]
    nn_col = np.full((n, k), -1, dtype=np.int64)
    nn_dist = np.full((n, k), np.nan, dtype=np.float32)
    nn_col[row[keep], slot[keep]] = col[keep]
    nn_dist[row[keep], slot[keep]] = dist[keep]
    return nn_col, nn_dist


def _off_self_max(rows: np.ndarray, own_rows: np.ndarray, own_cols: np.ndarray) -> float:
    saved = rows[own_rows, own_cols].copy()
    rows[own_rows, own_cols] = -np.inf
    top = float(rows.max()) if rows.size else -math.inf
    if top == math.inf:
        finite = rows[np.isfinite(rows)]
        top = float(finite.max()) if finite.size else -math.inf
    rows[own_rows, own_cols] = saved
    return top


def _empty(k: int) -> RowResults:
    floats = {name: np.zeros(0) for name in FLOAT_FIELDS}
    return RowResults(**floats, n_positives=np.zeros(0, np.int64), nn_col=np.zeros((0, k), np.int64),
                      nn_dist=np.zeros((0, k), np.float32), d_min=math.inf, d_max=-math.inf)


def count_block(rows: np.ndarray, q_clique, c_clique, own, index: CliqueIndex | None = None,
                k: int = N_NEIGHBOURS, method: str = "auto") -> RowResults:
    """Per-query results of the distance rows ``rows`` (n, M) (modified in place: own column set
    to +inf). ``own`` (n,): the column of each query's own track, -1 where absent."""
    rows = np.asarray(rows, dtype=np.float32)
    n, m = rows.shape
    if n == 0:
        return _empty(k)
    q_clique, c_clique = np.asarray(q_clique, dtype=np.int64), np.asarray(c_clique, dtype=np.int64)
    own = np.asarray(own, dtype=np.int64)
    index = index or CliqueIndex.build(c_clique)
    layout = KeyLayout.for_columns(m)
    if n > layout.max_rows:
        raise ClewsError(f"metrics: a block of {n} rows exceeds {layout.max_rows} (split it)")
    has_own = own >= 0
    own_rows, own_cols = np.flatnonzero(has_own), own[has_own]
    d_max = _off_self_max(rows, own_rows, own_cols)
    rows[own_rows, own_cols] = np.inf
    pos_row, pos_col = index.positives(q_clique, own)
    n_pos = np.bincount(pos_row, minlength=n)
    worst = np.full(n, -np.inf, dtype=np.float32)
    np.maximum.at(worst, pos_row, rows[pos_row, pos_col])
    k_row = np.minimum(k, m - has_own.astype(np.int64))
    kk = int(min(k, m))
    smallest = torch.topk(torch.from_numpy(rows), kk, dim=1, largest=False, sorted=True).values.numpy() \
        if kk else np.zeros((n, 0), np.float32)
    kth = smallest[np.arange(n), np.maximum(k_row - 1, 0)] if kk else np.full(n, -np.inf, np.float32)
    kth = np.where(k_row > 0, kth, -np.inf).astype(np.float32)
    row, order, neg_before = _positive_ranks(rows, worst, pos_row, pos_col, n_pos, own, q_clique, c_clique, layout,
                                             method)
    rank = (order + 1 + neg_before).astype(np.float64)
    n_rel = n_pos.astype(np.float64)
    safe_rel = np.maximum(n_rel, 1.0)
    ap = np.bincount(row, weights=(order + 1) / rank, minlength=n) / safe_rel
    first = np.full(n, np.nan)
    first[row[order == 0]] = rank[order == 0]
    nar_sum = np.bincount(row, weights=neg_before.astype(np.float64), minlength=n)
    n_non_rel = (m - has_own) - n_rel
    nar = np.where(n_non_rel > 0, 100.0 * nar_sum / (safe_rel * np.maximum(n_non_rel, 1.0)), 0.0)
    n_neg_published = n_non_rel + has_own
    arp = np.where(n_neg_published > 0, 100.0 * nar_sum / (safe_rel * np.maximum(n_neg_published, 1.0)), 0.0)
    evaluated = n_pos > 0
    chance = expected_random_ap(torch.as_tensor(n_rel), torch.as_tensor((m - has_own).astype(np.float64))).numpy()
    nn_col, nn_dist = _nearest(_select(rows, kth, own, q_clique, c_clique), kth, k_row, layout, n, k)
    finite_first = smallest[:, 0][np.isfinite(smallest[:, 0])] if kk else np.zeros(0)
    return RowResults(
        ap=np.where(evaluated, ap, np.nan), r1=np.where(evaluated, first, np.nan),
        nar=np.where(evaluated, nar, np.nan), arp=np.where(evaluated, arp, np.nan),
        chance_ap=np.where(evaluated, chance, np.nan), n_positives=n_pos.astype(np.int64),
        nn_col=nn_col, nn_dist=nn_dist,
        d_min=float(finite_first.min()) if finite_first.size else math.inf, d_max=d_max,
    )


def count_rows(rows: np.ndarray, q_clique, c_clique, own, index: CliqueIndex | None = None,
               memory_mb: float = 64.0, k: int = N_NEIGHBOURS, method: str = "auto") -> RowResults:
    """:func:`count_block` over sub-blocks of rows whose workspace fits ``memory_mb``."""
    rows = np.asarray(rows, dtype=np.float32)
    n, m = rows.shape
    index = index or CliqueIndex.build(c_clique)
    step = int(max(1, min(KeyLayout.for_columns(m).max_rows, memory_mb * 2**20 // max(1, m * ENTRY_BYTES))))
    q_clique, own = np.asarray(q_clique, dtype=np.int64), np.asarray(own, dtype=np.int64)
    parts = [count_block(rows[s:s + step], q_clique[s:s + step], c_clique, own[s:s + step], index, k, method)
             for s in range(0, n, step)]
    return RowResults.concat(parts) if parts else _empty(k)
