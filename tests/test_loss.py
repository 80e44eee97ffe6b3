"""CLEWS loss against a plain-Python computation of the formula and against the published loss."""

import math

import numpy as np
import pytest
import torch

from clews_pipe.training.loss import clews_loss, pair_masks



def _brute_bpwr(matrix, r):
    rows, cols = set(range(len(matrix))), set(range(len(matrix[0])))
    taken = []
    for _ in range(min(r, len(rows), len(cols))):
        value, i, j = min((matrix[i][j], i, j) for i in rows for j in cols)
        taken.append(value)
        rows.discard(i)
        cols.discard(j)
    return sum(taken) / len(taken)


def _brute_loss(z, clique, track, r=5, gamma=5.0, epsilon=1e-6):
    """The textbook form L = mean_pos(bpwr) + log(ε + mean_neg(exp(−γ·min))), loops only.

    The numerically friendly form log1p(β·mean(exp(b − γd))), β = 1/(ε·e^b), equals
    log(ε + mean(exp(−γd))) − log(ε): the same gradient, a constant offset of −log ε; returned that way.
    """
    n, s, dim = len(z), len(z[0]), len(z[0][0])

    def dist(a, b):
        return sum((a[k] - b[k]) ** 2 for k in range(dim)) / dim

    pos, neg = [], []
    for i in range(n):
        for j in range(n):
            if track[i] == track[j]:
                continue  # the same track (twice or with itself) is neither
            m = [[dist(z[i][u], z[j][v]) for v in range(s)] for u in range(s)]
            if clique[i] == clique[j]:
                pos.append(_brute_bpwr(m, r))
            else:
                neg.append(min(min(row) for row in m))
    align = sum(pos) / len(pos)
    uniform = math.log(epsilon + sum(math.exp(-gamma * d) for d in neg) / len(neg)) - math.log(epsilon)
    return align + uniform, align, uniform


def test_pair_masks_by_hand():
    clique = torch.tensor([0, 0, 0, 1, 1])
    track = torch.tensor([7, 8, 7, 9, 5])  # track 7 appears twice
    pos, neg = pair_masks(clique, track)
    expected_pos = [
        [0, 1, 0, 0, 0],
        [1, 0, 1, 0, 0],
        [0, 1, 0, 0, 0],
        [0, 0, 0, 0, 1],
        [0, 0, 0, 1, 0],
    ]
    expected_neg = [[int(a != b) for b in [0, 0, 0, 1, 1]] for a in [0, 0, 0, 1, 1]]
    assert pos.int().tolist() == expected_pos
    assert neg.int().tolist() == expected_neg
    assert not (pos & neg).any()


@pytest.mark.parametrize("seed", [0, 1])
def test_loss_matches_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    clique = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    track = torch.tensor([0, 1, 0, 2, 3, 4, 5, 6])
    z = torch.randn(8, 6, 5, generator=gen, dtype=torch.float64) * 0.4
    loss, align, uniform = clews_loss(z, clique, track, pos_redux="bpwr-5", neg_redux="min")
    b_loss, b_align, b_uniform = _brute_loss(z.tolist(), clique.tolist(), track.tolist(), r=5)
    assert align.item() == pytest.approx(b_align, rel=1e-6)
    assert uniform.item() == pytest.approx(b_uniform, rel=1e-6, abs=1e-9)
    assert loss.item() == pytest.approx(b_loss, rel=1e-6)


def test_loss_is_differentiable_and_pulls_positives_together():
    gen = torch.Generator().manual_seed(3)
    clique = torch.tensor([0, 0, 1, 1, 2, 2])
    track = torch.arange(6)
    z = torch.randn(6, 4, 8, generator=gen, requires_grad=True)
    loss, _, _ = clews_loss(z, clique, track)
    loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    with torch.no_grad():
        stepped = z - 0.05 * z.grad
    assert clews_loss(stepped, clique, track)[0] < loss


def test_loss_matches_published_batch(official_tiny):
    FIXTURE = official_tiny
    batch = np.load(FIXTURE / "loss.npz")
    loss, align, uniform = clews_loss(
        torch.from_numpy(batch["z"]), torch.from_numpy(batch["clique"]), torch.from_numpy(batch["track"])
    )
    assert align.item() == pytest.approx(float(batch["align"]), rel=1e-5)
    assert uniform.item() == pytest.approx(float(batch["uniform"]), rel=1e-5)
    assert loss.item() == pytest.approx(float(batch["loss"]), rel=1e-5)
    # and the textbook formula agrees too
    b_loss, _, _ = _brute_loss(batch["z"].astype(np.float64).tolist(), batch["clique"].tolist(),
                               batch["track"].tolist(), r=5)
    assert b_loss == pytest.approx(float(batch["loss"]), rel=1e-5)
