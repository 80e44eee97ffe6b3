"""Tiled, resumable distance matrices against a per-pair computation."""

import numpy as np
import pytest
import torch

from clews_pipe.errors import ClewsError
from clews_pipe.evaluation.distances import TileSettings, compute_distance_matrix, open_distances, row_blocks_for_rank
from clews_pipe.retrieval.reductions import reduce_distances


def make_data(n=11, s=5, d=8, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, s, d)).astype(np.float32)
    mask = rng.random((n, s)) < 0.3
    mask[:, 0] = False  # every track has one real segment
    mask[3, 1:] = True
    z[mask] = 0.0
    tracks = np.array([f"T{i:03d}" for i in range(n)])
    cliques = rng.integers(0, 4, n)
    return z, mask, tracks, cliques


def per_pair(zq, mq, zc, mc, redux):
    out = np.zeros((len(zq), len(zc)), dtype=np.float64)
    for a in range(len(zq)):
        for b in range(len(zc)):
            seg = ((zq[a][:, None, :].astype(np.float64) - zc[b][None, :, :]) ** 2).mean(-1)
            excl = mq[a][:, None] | mc[b][None, :]
            out[a, b] = reduce_distances(torch.tensor(seg), redux, torch.tensor(excl)).item()
    return out


def run(tmp_path, z, mask, tracks, cliques, redux, tile=4, zq=None, mq=None, **kw):
    zq = z if zq is None else zq
    mq = mask if mq is None else mq
    path = compute_distance_matrix(
        tmp_path / "d.zarr", zq, mq, z, mask, redux, query_track=tracks, candidate_track=tracks,
        query_clique=cliques, candidate_clique=cliques, settings=TileSettings(tile=tile, memory_mb=0.001),
        progress=False, **kw,
    )
    return open_distances(path)


@pytest.mark.parametrize("redux", ["bpwr-3", "meanmin", "min", "best-2", "minmean"])
def test_tiled_matrix_matches_per_pair(tmp_path, redux):
    z, mask, tracks, cliques = make_data()
    group = run(tmp_path, z, mask, tracks, cliques, redux)
    got = group["distances"][:]
    np.testing.assert_allclose(got, per_pair(z, mask, z, mask, redux), rtol=2e-5, atol=2e-6)
    assert group["query_track"][:].tolist() == tracks.tolist()
    assert group["candidate_clique"][:].tolist() == cliques.tolist()
    assert bool(group.attrs["symmetric"]) == (redux not in ("meanmin", "minmean"))


def test_non_square_queries(tmp_path):
    z, mask, tracks, cliques = make_data()
    rng = np.random.default_rng(5)
    zq = rng.standard_normal((11, 3, 8)).astype(np.float32)
    mq = np.zeros((11, 3), dtype=bool)
    mq[:, 2] = True
    group = run(tmp_path, z, mask, tracks, cliques, "min", zq=zq, mq=mq)
    assert not group.attrs["symmetric"]
    np.testing.assert_allclose(group["distances"][:], per_pair(zq, mq, z, mask, "min"), rtol=2e-5, atol=2e-6)


class Interrupt(Exception):
    pass


def test_killed_run_resumes_to_identical_matrix(tmp_path):
    z, mask, tracks, cliques = make_data(n=13)
    full = run(tmp_path / "full", z, mask, tracks, cliques, "bpwr-2")["distances"][:]
    computed = []

    def stop_after_two(qi, ci):
        computed.append((qi, ci))
        if len(computed) == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(tmp_path / "part", z, mask, tracks, cliques, "bpwr-2", on_tile=stop_after_two)
    with pytest.raises(ClewsError, match="incomplete"):
        open_distances(tmp_path / "part" / "d.zarr")
    resumed = []
    group = run(tmp_path / "part", z, mask, tracks, cliques, "bpwr-2", on_tile=lambda qi, ci: resumed.append((qi, ci)))
    assert not set(computed) & set(resumed)  # finished tiles were not recomputed
    assert len(computed) + len(resumed) == 4 * 5 // 2  # 4 row blocks, upper triangle
    np.testing.assert_array_equal(group["distances"][:], full)
    # other inputs: the old matrix is not reused
    other = []
    run(tmp_path / "part", z * 2, mask, tracks, cliques, "bpwr-2", on_tile=lambda qi, ci: other.append(qi))
    assert len(other) == 10


def test_ranks_split_row_blocks():
    for symmetric in (True, False):
        blocks = [row_blocks_for_rank(7, r, 3, symmetric) for r in range(3)]
        assert sorted(sum(blocks, [])) == list(range(7))


def test_bad_inputs(tmp_path):
    z, mask, tracks, cliques = make_data()
    with pytest.raises(ClewsError, match="masks"):
        run(tmp_path, z, mask[:, :3], tracks, cliques, "min")
    with pytest.raises(ClewsError, match="unknown reduction"):
        run(tmp_path, z, mask, tracks, cliques, "median")
    with pytest.raises(ClewsError, match="r must be"):
        run(tmp_path, z, mask, tracks, cliques, "bpwr-0")


def test_diagonal_tile_mirrors_exactly():
    from clews_pipe.retrieval.tiles import tile_distances

    z, mask, _, _ = make_data(n=17)
    zt, mt = torch.from_numpy(z), torch.from_numpy(mask)
    full = tile_distances(zt, mt, zt, mt, "bpwr-3", memory_mb=0.01)  # 5 x 5 blocks, a partial last one
    half = tile_distances(zt, mt, zt, mt, "bpwr-3", memory_mb=0.01, diagonal=True)
    np.testing.assert_allclose(half, full, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(half, half.T, rtol=1e-6)  # mirrored blocks exact; diagonal blocks to rounding


@pytest.mark.parametrize("redux", ["bpwr-2", "meanmin"])
def test_ranks_together_fill_the_matrix(tmp_path, redux):
    z, mask, tracks, cliques = make_data(n=14)
    single = run(tmp_path / "one", z, mask, tracks, cliques, redux)["distances"][:]
    for rank in range(3):  # ranks run one after the other here; each writes only its own row blocks
        compute_distance_matrix(
            tmp_path / "three" / "d.zarr", z, mask, z, mask, redux, query_track=tracks, candidate_track=tracks,
            query_clique=cliques, candidate_clique=cliques, settings=TileSettings(tile=4, memory_mb=0.001),
            progress=False, rank=rank, world_size=3,
        )
        if rank < 2:
            with pytest.raises(ClewsError, match="incomplete"):
                open_distances(tmp_path / "three" / "d.zarr")
    np.testing.assert_array_equal(open_distances(tmp_path / "three" / "d.zarr")["distances"][:], single)
