"""Every reduction against a plain Python loop over track pairs (random data, masks, u != v, r > u)."""

import math

import numpy as np
import pytest
import torch

from clews_pipe.errors import ClewsError
from clews_pipe.retrieval.reductions import reduce_distances
from clews_pipe.retrieval.redux import Redux
from clews_pipe.retrieval.segment_distances import cross_segment_distances, pair_mask, segment_distances

@pytest.fixture(params=["compiled", "torch"], autouse=True)
def bpwr_path(request, monkeypatch):
    """Run every test with the numba CPU kernel and with the torch implementation of bpwr."""
    import clews_pipe.retrieval.reductions as red

    monkeypatch.setattr(red, "USE_COMPILED_BPWR", request.param == "compiled")
    return request.param


REDUXES = ["min", "max", "mean", "meanmin", "minmean", "best-1", "best-3", "best-50", "bpwr-1", "bpwr-3", "bpwr-10"]


def brute_reduce(mat: list[list[float]], valid: list[list[bool]], redux: str) -> float:
    """Textbook definition on one (u, v) matrix, pure Python."""
    u, v = len(mat), len(mat[0])
    cells = [(mat[i][j], i, j) for i in range(u) for j in range(v) if valid[i][j]]
    if not cells:
        return math.inf
    values = [c[0] for c in cells]
    if redux == "min":
        return min(values)
    if redux == "max":
        return max(values)
    if redux == "mean":
        return sum(values) / len(values)
    rows = {}
    for val, i, _ in cells:
        rows.setdefault(i, []).append(val)
    if redux == "meanmin":
        mins = [min(vals) for vals in rows.values()]
        return sum(mins) / len(mins)
    if redux == "minmean":
        return min(sum(vals) / len(vals) for vals in rows.values())
    kind, r = redux.split("-")
    r = int(r)
    if kind == "best":
        chosen = sorted(values)[:r]
        return sum(chosen) / len(chosen)
    # bpwr: r rounds of (smallest remaining, remove its row and column)
    taken = []
    used_rows, used_cols = set(), set()
    for _ in range(r):
        remaining = [c for c in cells if c[1] not in used_rows and c[2] not in used_cols]
        if not remaining:
            break
        val, i, j = min(remaining)
        taken.append(val)
        used_rows.add(i)
        used_cols.add(j)
    return sum(taken) / len(taken)


def random_case(seed, n_q=4, n_c=5, u=6, v=9, dim=8):
    gen = torch.Generator().manual_seed(seed)
    zq = torch.randn(n_q, u, dim, generator=gen, dtype=torch.float64)
    zc = torch.randn(n_c, v, dim, generator=gen, dtype=torch.float64)
    mask_q = torch.rand(n_q, u, generator=gen) < 0.3
    mask_c = torch.rand(n_c, v, generator=gen) < 0.3
    mask_q[0] = True  # a fully masked query
    mask_c[1, 1:] = True  # a candidate with a single valid segment
    mask_q[1, :] = False  # a query without padding
    return zq, zc, mask_q, mask_c


def brute_matrix(zq, zc, mask_q, mask_c, redux):
    out = np.zeros((zq.shape[0], zc.shape[0]))
    for a in range(zq.shape[0]):
        for b in range(zc.shape[0]):
            mat = [
                [float(((zq[a, i] - zc[b, j]) ** 2).sum() / zq.shape[-1]) for j in range(zc.shape[1])]
                for i in range(zq.shape[1])
            ]
            valid = [
                [not bool(mask_q[a, i]) and not bool(mask_c[b, j]) for j in range(zc.shape[1])]
                for i in range(zq.shape[1])
            ]
            out[a, b] = brute_reduce(mat, valid, redux)
    return out


@pytest.mark.parametrize("redux", REDUXES)
@pytest.mark.parametrize("shape", [(6, 9), (9, 6), (3, 3), (2, 12)])
def test_reductions_match_brute_force(redux, shape):
    u, v = shape
    zq, zc, mask_q, mask_c = random_case(seed=u * 100 + v, u=u, v=v)
    dist = cross_segment_distances(zq, zc)
    got = reduce_distances(dist, redux, pair_mask(mask_q, mask_c)).numpy()
    want = brute_matrix(zq, zc, mask_q, mask_c, redux)
    assert np.isinf(got[0]).all() and np.isinf(want[0]).all()  # fully masked query
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("redux", ["min", "meanmin", "bpwr-4", "best-2", "minmean"])
def test_unmasked_and_general_masks(redux):
    gen = torch.Generator().manual_seed(7)
    d = torch.rand(3, 2, 5, 4, generator=gen, dtype=torch.float64)
    got = reduce_distances(d, redux)
    mask = torch.rand(3, 2, 5, 4, generator=gen) < 0.5  # arbitrary (not row/column) masks
    got_masked = reduce_distances(d, redux, mask)
    for a in range(3):
        for b in range(2):
            mat = d[a, b].tolist()
            assert got[a, b].item() == pytest.approx(brute_reduce(mat, [[True] * 4] * 5, redux), abs=1e-12)
            valid = (~mask[a, b]).tolist()
            assert got_masked[a, b].item() == pytest.approx(brute_reduce(mat, valid, redux), abs=1e-12)


def test_bpwr_hand_worked():
    # greedy: 0.1 at (0,0) -> remove row 0/col 0; then 0.5 at (1,2); then 0.9 at (2,1)
    d = torch.tensor([[0.1, 0.2, 0.3], [0.15, 0.8, 0.5], [0.12, 0.9, 0.95]])
    assert reduce_distances(d, "bpwr-1").item() == pytest.approx(0.1)
    assert reduce_distances(d, "bpwr-2").item() == pytest.approx((0.1 + 0.5) / 2)
    assert reduce_distances(d, "bpwr-3").item() == pytest.approx((0.1 + 0.5 + 0.9) / 3)
    assert reduce_distances(d, "bpwr-99").item() == pytest.approx((0.1 + 0.5 + 0.9) / 3)
    assert reduce_distances(d, "best-3").item() == pytest.approx((0.1 + 0.12 + 0.15) / 3)
    assert reduce_distances(d, "meanmin").item() == pytest.approx((0.1 + 0.15 + 0.12) / 3)
    assert reduce_distances(d, "minmean").item() == pytest.approx(0.6 / 3)


@pytest.mark.parametrize("redux", REDUXES)
def test_gradients_are_finite_and_flow(redux):
    gen = torch.Generator().manual_seed(3)
    d = torch.rand(4, 4, 5, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(4, 4, 5, 5, dtype=torch.bool)
    mask[0, 0] = True  # one fully masked pair
    mask[1, :, 3:] = True
    out = reduce_distances(d, redux, mask)
    assert torch.isinf(out[0, 0])
    out[torch.isfinite(out)].sum().backward()
    assert torch.isfinite(d.grad).all()
    assert d.grad[mask].abs().sum() == 0
    assert d.grad.abs().sum() > 0


def test_segment_distances_definition():
    gen = torch.Generator().manual_seed(1)
    zq = torch.randn(2, 3, 16, generator=gen, dtype=torch.float64)
    zc = torch.randn(4, 5, 16, generator=gen, dtype=torch.float64)
    want = ((zq[:, None, :, None, :] - zc[None, :, None, :, :]) ** 2).mean(-1)
    np.testing.assert_allclose(segment_distances(zq[:, None], zc[None]), want, atol=1e-12)
    np.testing.assert_allclose(cross_segment_distances(zq, zc), want, atol=1e-12)
    same = segment_distances(zq[0], zq[0])
    assert (same >= 0).all() and torch.allclose(torch.diagonal(same), torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("name,parsed", [("min", ("min", None)), ("bpwr-10", ("bpwr", 10)), ("BEST-3", ("best", 3))])
def test_parse_redux(name, parsed):
    redux = Redux.parse(name)
    assert (redux.kind, redux.r) == parsed
    assert Redux.parse(redux) is redux and Redux.parse(redux.name) == redux


def test_redux_properties():
    assert Redux.parse("bpwr-10").symmetric and Redux.parse("bpwr-10").excludes_inf
    assert Redux.parse("min").excludes_inf and not Redux.parse("mean").excludes_inf
    assert not Redux.parse("meanmin").symmetric and not Redux.parse("minmean").symmetric
    assert Redux.parse("best-5").symmetric and not Redux.parse("best-5").excludes_inf


@pytest.mark.parametrize("bad", ["median", "bpwr-0", "best--2", "bpwr", "bpwr-x", ""])
def test_parse_redux_rejects(bad):
    with pytest.raises(ClewsError):
        Redux.parse(bad)


@pytest.mark.parametrize("r", [1, 7, 12, 40])
def test_bpwr_larger_matrices_and_ties(r):
    gen = torch.Generator().manual_seed(11)
    d = torch.rand(3, 2, 40, 33, generator=gen, dtype=torch.float64)
    mask = torch.rand(3, 2, 40, 33, generator=gen) < 0.2
    ties = torch.randint(0, 4, (3, 2, 7, 6), generator=gen).to(torch.float64)  # many exact ties
    got, got_ties = reduce_distances(d, f"bpwr-{r}", mask), reduce_distances(ties, f"bpwr-{r}")
    for a in range(3):
        for b in range(2):
            assert got[a, b].item() == pytest.approx(brute_reduce(d[a, b].tolist(), (~mask[a, b]).tolist(), f"bpwr-{r}"))
            want = brute_reduce(ties[a, b].tolist(), [[True] * 6] * 7, f"bpwr-{r}")
            assert got_ties[a, b].item() == pytest.approx(want)


@pytest.mark.parametrize("redux", ["min", "bpwr-3", "bpwr-10"])
def test_masks_folded_into_norms_equal_explicit_masks(redux):
    zq, zc, mask_q, mask_c = random_case(seed=5, u=7, v=5)
    explicit = reduce_distances(cross_segment_distances(zq, zc), redux, pair_mask(mask_q, mask_c))
    folded = reduce_distances(cross_segment_distances(zq, zc, mask_q, mask_c), redux)
    torch.testing.assert_close(explicit, folded, rtol=1e-12, atol=1e-12)
