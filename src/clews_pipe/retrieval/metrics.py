"""Retrieval metrics per query, vectorised over a block of distance-matrix rows.

For each query row the candidates are ranked by ascending distance; the query itself (its own
track among the candidates) is removed from the list. Ties are broken deterministically by
candidate order (column index, a stable sort), so the same matrix always gives the same numbers.

Per query, with ``R`` the ranked list (query removed), ``M`` its matches (same clique) and
``rank(m_i)`` the 1-based rank of the i-th match:

* AP  = mean over matches of precision at the match's rank,
* R1  = rank of the first match (1-based),
* NAR = 100 / (|M| (|R| - |M|)) * sum_i (rank(m_i) - i)   (0 when every candidate is a match),
  over the true negatives (``NAR_strict`` in ``metrics.json``);
* ARP, the published code's "rank percentile" (printed as ARP, reported as NAR in the paper): the
  same sum over |M| (|R| - |M| + 1) when the query's own track is among the candidates, because
  the published code keeps the query in the ranked list at +inf, counted as a negative.

Queries with no match are skipped (and counted). Means carry 95% CIs: 1.96 * std / sqrt(n)
(sample standard deviation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class QueryMetrics:
    ap: np.ndarray  # (n,) float64, NaN for skipped queries
    r1: np.ndarray  # (n,)
    nar: np.ndarray  # (n,) NAR over the true negatives (percent)
    evaluated: np.ndarray  # (n,) bool, False = no other version in the partition
    chance_ap: np.ndarray | None = None  # (n,) expected AP of a uniformly random ranking, NaN if skipped
    arp: np.ndarray | None = None  # (n,) the published rank percentile (query itself counted as a negative)
    n_positives: np.ndarray | None = None  # (n,) matches of each query among the candidates

    @staticmethod
    def concat(parts: list["QueryMetrics"]) -> "QueryMetrics":
        return QueryMetrics(
            ap=np.concatenate([p.ap for p in parts]),
            r1=np.concatenate([p.r1 for p in parts]),
            nar=np.concatenate([p.nar for p in parts]),
            evaluated=np.concatenate([p.evaluated for p in parts]),
            chance_ap=None
            if any(p.chance_ap is None for p in parts)
            else np.concatenate([p.chance_ap for p in parts]),
            arp=None if any(p.arp is None for p in parts) else np.concatenate([p.arp for p in parts]),
            n_positives=None
            if any(p.n_positives is None for p in parts)
            else np.concatenate([p.n_positives for p in parts]),
        )

    def nar_of(self, kind: str) -> np.ndarray:
        """Per-query NAR of ``kind``: ``strict`` (true negatives) or ``published`` (ARP)."""
        if kind == "strict":
            return self.nar
        if kind == "published" and self.arp is not None:
            return self.arp
        raise ValueError(f"no per-query NAR of kind {kind!r}")


def self_columns(query_track, candidate_track) -> np.ndarray:
    """Column of each query's own track among the candidates, -1 where absent."""
    position = {name: j for j, name in enumerate(np.asarray(candidate_track).tolist())}
    return np.array([position.get(name, -1) for name in np.asarray(query_track).tolist()], dtype=np.int64)


def query_metrics(distances, query_clique, candidate_clique, self_column) -> QueryMetrics:
    """AP, R1 and NAR for each row of ``distances`` (n, M).

    ``query_clique`` (n,), ``candidate_clique`` (M,), ``self_column`` (n,) the column of the query's
    own track (-1 if it is not among the candidates).
    """
    dist = torch.as_tensor(np.asarray(distances), dtype=torch.float64)
    n, m = dist.shape
    qc = torch.as_tensor(np.asarray(query_clique, dtype=np.int64))
    cc = torch.as_tensor(np.asarray(candidate_clique, dtype=np.int64))
    own = torch.as_tensor(np.asarray(self_column, dtype=np.int64))
    cols = torch.arange(m)
    is_self = cols[None, :] == own[:, None]  # (n, m)
    relevant = (cc[None, :] == qc[:, None]) & ~is_self
    order = torch.sort(dist, dim=1, stable=True).indices
    rel_sorted = torch.gather(relevant, 1, order)
    kept_sorted = ~torch.gather(is_self, 1, order)
    rank = torch.cumsum(kept_sorted, dim=1).to(torch.float64)  # 1-based rank among kept candidates
    hits = torch.cumsum(rel_sorted, dim=1).to(torch.float64)  # matches up to and including here
    n_rel = rel_sorted.sum(1).to(torch.float64)
    n_list = kept_sorted.sum(1).to(torch.float64)
    evaluated = n_rel > 0
    relf = rel_sorted.to(torch.float64)
    safe_rel = n_rel.clamp_min(1.0)
    ap = (relf * hits / rank.clamp_min(1.0)).sum(1) / safe_rel  # rank is 0 only at a leading self
    first = torch.where(rel_sorted, rank, torch.full_like(rank, math.inf)).amin(1)
    non_rel_before = rank - hits  # for a match at this position: rank(m_i) - i
    n_non_rel = n_list - n_rel
    nar_sum = (relf * non_rel_before).sum(1)
    nar = torch.where(n_non_rel > 0, 100.0 * nar_sum / (safe_rel * n_non_rel.clamp_min(1.0)), torch.zeros_like(nar_sum))
    # published: the query itself stays in the list (at +inf, last), counted among the negatives
    n_neg_published = n_non_rel + (own >= 0).to(torch.float64)
    arp = torch.where(
        n_neg_published > 0, 100.0 * nar_sum / (safe_rel * n_neg_published.clamp_min(1.0)), torch.zeros_like(nar_sum)
    )
    nan = torch.full_like(ap, math.nan)
    return QueryMetrics(
        ap=torch.where(evaluated, ap, nan).numpy(),
        r1=torch.where(evaluated, first, nan).numpy(),
        nar=torch.where(evaluated, nar, nan).numpy(),
        evaluated=evaluated.numpy(),
        chance_ap=torch.where(evaluated, expected_random_ap(n_rel, n_list), nan).numpy(),
        arp=torch.where(evaluated, arp, nan).numpy(),
        n_positives=n_rel.to(torch.int64).numpy(),
    )


def expected_random_ap(n_relevant: torch.Tensor, n_candidates: torch.Tensor) -> torch.Tensor:
    """Expected AP of a uniformly random ranking of ``n_candidates`` with ``n_relevant`` matches.

    With rel_k the indicator of a match at rank k, AP = (1/m) Σ_k rel_k (1/k) Σ_{i≤k} rel_i, and
    E[rel_k] = m/N, E[rel_i rel_k] = m(m−1)/(N(N−1)) for i ≠ k give
    E[AP] = H_N / N + (m − 1)(N − H_N) / (N (N − 1)), H_N the N-th harmonic number.
    """
    m = torch.as_tensor(n_relevant, dtype=torch.float64)
    n = torch.as_tensor(n_candidates, dtype=torch.float64).clamp_min(1.0)
    harmonic = torch.special.digamma(n + 1.0) + 0.5772156649015329  # H_N
    return harmonic / n + (m - 1.0) * (n - harmonic) / (n * (n - 1.0).clamp_min(1.0))


def mean_ci(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return math.nan, math.nan
    mean = float(values.mean())
    if values.size < 2:
        return mean, 0.0
    return mean, float(1.96 * values.std(ddof=1) / math.sqrt(values.size))


def summarize(per_query: QueryMetrics, redux, level: str, nar_kind: str = "strict") -> dict:
    """The ``metrics.json`` dictionary: ``NAR`` of ``nar_kind`` (``published`` = the published ARP,
    or ``strict``) and always ``NAR_strict``."""
    ok = per_query.evaluated
    map_, map_ci = mean_ci(per_query.ap[ok])
    mr1, mr1_ci = mean_ci(per_query.r1[ok])
    nar, nar_ci = mean_ci(per_query.nar_of(nar_kind)[ok])
    nar_strict, nar_strict_ci = mean_ci(per_query.nar[ok])
    chance = float(np.mean(per_query.chance_ap[ok])) if per_query.chance_ap is not None and ok.any() else math.nan
    return {
        "MAP": map_,
        "MR1": mr1,
        "NAR": nar,
        "MAP_ci": map_ci,
        "MR1_ci": mr1_ci,
        "NAR_ci": nar_ci,
        "NAR_strict": nar_strict,
        "NAR_strict_ci": nar_strict_ci,
        "NAR_kind": nar_kind,
        "queries": int(ok.sum()),
        "skipped": int((~ok).sum()),
        "MAP_chance": chance,
        "redux": str(redux),
        "level": level,
    }
