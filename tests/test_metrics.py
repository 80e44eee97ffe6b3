"""Metrics against hand-worked rankings."""

import math

import numpy as np
import pytest

from clews_pipe.reporting.eval_dir import markdown_table
from clews_pipe.retrieval.metrics import mean_ci, query_metrics, self_columns, summarize

CAND_TRACKS = ["t0", "t1", "t2", "t3", "t4"]
CAND_CLIQUE = [1, 1, 2, 1, 3]


def test_hand_worked_rankings():
    query_tracks = ["t0", "t1", "t3", "t4", "x"]
    query_clique = [1, 1, 1, 3, 2]
    dist = np.array(
        [
            [0.0, 0.5, 0.1, 0.9, 0.3],  # matches t1, t3 at ranks 3 and 4 (t0 removed)
            [0.2, 0.0, 0.7, 0.1, 0.9],  # matches first: ranks 1 and 2
            [0.4, 0.4, 0.4, 0.0, 0.4],  # all tied: stable order t0, t1, t2, t4 -> matches ranks 1, 2
            [0.3, 0.3, 0.3, 0.3, 0.0],  # clique 3 has no other version: skipped
            [0.3, 0.3, 0.1, 0.2, 0.05],  # external query, match t2 at rank 2 of 5
        ]
    )
    own = self_columns(query_tracks, CAND_TRACKS)
    assert own.tolist() == [0, 1, 3, 4, -1]
    res = query_metrics(dist, query_clique, CAND_CLIQUE, own)
    assert res.evaluated.tolist() == [True, True, True, False, True]
    np.testing.assert_allclose(res.ap[[0, 1, 2, 4]], [(1 / 3 + 2 / 4) / 2, 1.0, 1.0, 0.5])
    np.testing.assert_allclose(res.r1[[0, 1, 2, 4]], [3, 1, 1, 2])
    # NAR = 100/(|M|(|R|-|M|)) * sum(rank(m_i) - i)
    np.testing.assert_allclose(res.nar[[0, 1, 2, 4]], [100 * ((3 - 1) + (4 - 2)) / (2 * 2), 0.0, 0.0, 100 * 1 / (1 * 4)])
    assert math.isnan(res.ap[3])
    summary = summarize(res, "bpwr-10", "track")
    assert summary["queries"] == 4 and summary["skipped"] == 1
    assert summary["MAP"] == pytest.approx(np.mean([(1 / 3 + 2 / 4) / 2, 1.0, 1.0, 0.5]))
    assert summary["MR1"] == pytest.approx(np.mean([3, 1, 1, 2]))
    assert summary["NAR_ci"] == pytest.approx(1.96 * np.std([100, 0, 0, 25], ddof=1) / 2)
    assert set(summary) >= {"MAP", "MR1", "NAR", "MAP_ci", "MR1_ci", "NAR_ci", "queries", "skipped", "redux", "level"}
    assert "| NAR (%)" in markdown_table([summary])


def test_against_loop_on_random_matrix():
    rng = np.random.default_rng(0)
    n = 30
    clique = rng.integers(0, 8, n)
    dist = rng.random((n, n))
    res = query_metrics(dist, clique, clique, np.arange(n))
    for q in range(n):
        others = [j for j in range(n) if j != q]
        ranked = sorted(others, key=lambda j: (dist[q, j], j))
        rel = [clique[j] == clique[q] for j in ranked]
        if not any(rel):
            assert not res.evaluated[q]
            continue
        ranks = [i + 1 for i, r in enumerate(rel) if r]
        ap = np.mean([(k + 1) / rk for k, rk in enumerate(ranks)])
        nar = 100 * sum(rk - (k + 1) for k, rk in enumerate(ranks)) / (len(ranks) * (len(ranked) - len(ranks)))
        assert res.ap[q] == pytest.approx(ap)
        assert res.r1[q] == ranks[0]
        assert res.nar[q] == pytest.approx(nar)


def test_mean_ci_single_and_empty():
    assert mean_ci(np.array([2.0])) == (2.0, 0.0)
    assert all(math.isnan(x) for x in mean_ci(np.array([])))
