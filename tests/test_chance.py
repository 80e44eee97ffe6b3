"""Chance level of MAP: the closed form against an exhaustive average over every ranking."""

import itertools

import numpy as np
import pytest
import torch

from clews_pipe.retrieval.metrics import expected_random_ap, query_metrics


def _ap_by_hand(relevant_in_rank_order):
    hits, total = 0, 0.0
    for k, rel in enumerate(relevant_in_rank_order, start=1):
        if rel:
            hits += 1
            total += hits / k
    return total / hits


@pytest.mark.parametrize("n, m", [(1, 1), (2, 1), (5, 2), (6, 3), (7, 1), (7, 7)])
def test_expected_random_ap_equals_the_average_over_all_rankings(n, m):
    labels = [1] * m + [0] * (n - m)
    aps = [_ap_by_hand(p) for p in set(itertools.permutations(labels))]
    expected = float(expected_random_ap(torch.tensor(m), torch.tensor(n)))
    assert expected == pytest.approx(np.mean(aps), rel=1e-12)


def test_query_metrics_reports_chance_per_query():
    # query 0: own column 0, 2 matches among 4 others; query 1: no other version (skipped)
    dist = np.random.default_rng(0).random((2, 5))
    qc = np.array([7, 9])
    cc = np.array([7, 7, 7, 8, 8])
    res = query_metrics(dist, qc, cc, np.array([0, -1]))
    assert res.evaluated.tolist() == [True, False]
    assert res.chance_ap[0] == pytest.approx(float(expected_random_ap(torch.tensor(2), torch.tensor(4))))
    assert np.isnan(res.chance_ap[1])
