"""Per-query results counted per rank against a brute-force loop over each query's ranked list."""

import math

import numpy as np
import pytest

import zarr

from clews_pipe.evaluation.distances import TileSettings, compute_distance_matrix
from clews_pipe.evaluation.rank_rows import block_path, count_my_rows, gather_rows
from clews_pipe.evaluation.row_metrics import count_rows


def _brute_force(dist, q_clique, c_clique, own, k=10):
    """Per query: sort the candidates (own column removed) by (distance, column), then read AP,
    R1, NAR (true negatives), ARP (own track counted as a negative) and the k nearest."""
    out = []
    n, m = dist.shape
    for q in range(n):
        ranked = sorted((j for j in range(m) if j != own[q]), key=lambda j: (float(dist[q, j]), j))
        rel = [c_clique[j] == q_clique[q] for j in ranked]
        ranks = [i + 1 for i, r in enumerate(rel) if r]
        row = {"nn": ranked[:k], "n_pos": len(ranks)}
        if ranks:
            n_neg = len(ranked) - len(ranks)
            s = sum(rk - (i + 1) for i, rk in enumerate(ranks))
            row["ap"] = np.mean([(i + 1) / rk for i, rk in enumerate(ranks)])
            row["r1"] = ranks[0]
            row["nar"] = 100 * s / (len(ranks) * n_neg) if n_neg else 0.0
            n_pub = n_neg + (own[q] >= 0)
            row["arp"] = 100 * s / (len(ranks) * n_pub) if n_pub else 0.0
        out.append(row)
    return out


def _check(got, expected):
    for q, exp in enumerate(expected):
        assert got.n_positives[q] == exp["n_pos"]
        assert got.nn_col[q][got.nn_col[q] >= 0].tolist() == exp["nn"], q
        if exp["n_pos"] == 0:
            assert math.isnan(got.ap[q]) and math.isnan(got.r1[q]) and math.isnan(got.nar[q])
            continue
        for name in ("ap", "r1", "nar", "arp"):
            assert getattr(got, name)[q] == pytest.approx(exp[name], rel=1e-12, abs=1e-12), (q, name)


@pytest.mark.parametrize("method", ["keys", "counting", "auto"])
def test_counting_equals_brute_force_with_ties_inf_and_absent_queries(method):
    rng = np.random.default_rng(3)
    for trial in range(12):
        n, m = int(rng.integers(1, 40)), int(rng.integers(2, 60))
        c_clique = rng.integers(0, max(1, m // 3), m)
        q_clique = rng.integers(0, max(1, m // 3), n)
        dist = (rng.integers(0, 5, (n, m)) / 4).astype(np.float32)  # many exact ties
        dist[rng.random((n, m)) < 0.05] = np.inf  # padding-only tracks
        dist[rng.random((n, m)) < 0.05] = -0.0
        own = rng.integers(-1, m, n)  # -1: query not among the candidates
        got = count_rows(dist.copy(), q_clique, c_clique, own, memory_mb=0.001 if trial % 2 else 64, method=method)
        _check(got, _brute_force(dist, q_clique, c_clique, own))


def test_ranks_count_their_own_blocks_and_a_resumed_count_is_the_same(tmp_path):
    rng = np.random.default_rng(0)
    n, s, d = 70, 3, 4
    z = rng.standard_normal((n, s, d)).astype(np.float32)
    mask = np.zeros((n, s), dtype=bool)
    clique = rng.integers(0, 20, n)
    track = np.asarray([f"t{i}" for i in range(n)])
    path = compute_distance_matrix(tmp_path / "t.zarr", z, mask, z, mask, "bpwr-2", query_track=track,
                                   candidate_track=track, query_clique=clique, candidate_clique=clique,
                                   progress=False, settings=TileSettings(tile=16))
    dist = zarr.open_group(str(path), mode="r")["distances"][:]
    assert count_my_rows(path, rank=1, world_size=2) > 0
    n_blocks = zarr.open_group(str(path), mode="r")["tile_done"].shape[0]
    done = [block_path(path, qi).exists() for qi in range(n_blocks)]
    assert 0 < sum(done) < n_blocks  # rank 1 counted only its blocks
    with pytest.raises(Exception, match="row blocks are missing"):
        gather_rows(path)
    count_my_rows(path, rank=0, world_size=2)
    assert count_my_rows(path, rank=0, world_size=2) == 0  # resumed: nothing left
    got = gather_rows(path)
    _check(got, _brute_force(dist, clique, clique, np.arange(n)))
    off = dist[~np.eye(n, dtype=bool)]
    assert got.d_min == pytest.approx(off.min()) and got.d_max == pytest.approx(off.max())
