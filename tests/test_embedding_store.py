"""Chunked embeddings store: ranks write whole blocks in place, readers stream rows; the tiled
matrix from the store equals the per-pair loop and the ``.npz`` path; bounded memory; the
low-precision matmul with float32 re-computation gives the float32 metrics."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
import zarr

from clews_pipe.errors import ClewsError
from clews_pipe.evaluation.distances import TileSettings, compute_distance_matrix
from clews_pipe.embeddings.formats import open_embeddings
from clews_pipe.embeddings.zarr_format import EmbeddingStoreWriter, LazyRows, write_embeddings_store
from clews_pipe.embeddings.npz_format import Embeddings, save_embeddings
from clews_pipe.evaluation.evaluate import evaluate_track_level, matrix_metrics
from clews_pipe.retrieval.reductions import reduce_distances


def make_set(n=23, s=5, d=8, seed=0, taus=(10.0,), dtype=np.float16, n_cliques=7, noise=1.0):
    rng = np.random.default_rng(seed)
    clique = rng.integers(0, n_cliques, n)
    centers = rng.standard_normal((n_cliques, d))
    z = (centers[clique][:, None, :] + noise * rng.standard_normal((n, s, d))).astype(dtype)
    mask = rng.random((n, s)) < 0.3
    mask[:, 0] = False
    z[mask] = 0
    queries = {t: (rng.standard_normal((n, 3, d)).astype(dtype), np.zeros((n, 3), dtype=bool)) for t in taus}
    return Embeddings(z=z, mask=mask, clique=clique, track=np.array([f"trk{i:03d}" for i in range(n)]),
                      queries=queries, clique_name=np.array([f"C{c}" for c in clique]))


def per_pair(z, mask, redux):
    n = len(z)
    out = np.zeros((n, n))
    for a in range(n):
        for b in range(n):
            seg = ((z[a][:, None, :].astype(np.float64) - z[b][None].astype(np.float64)) ** 2).mean(-1)
            excl = mask[a][:, None] | mask[b][None, :]
            out[a, b] = reduce_distances(torch.tensor(seg), redux, torch.tensor(excl)).item()
    return out


def test_round_trip_blocks_and_lazy_rows(tmp_path):
    emb = make_set()
    write_embeddings_store(tmp_path / "e.zarr", emb, block=4)
    got = open_embeddings(tmp_path / "e.zarr")
    assert isinstance(got.z, LazyRows) and got.z.shape == emb.z.shape and got.z.dtype == np.float16
    np.testing.assert_array_equal(got.z[5:11], emb.z[5:11])
    np.testing.assert_array_equal(got.mask[:], emb.mask)
    np.testing.assert_array_equal(got.z[np.array([7, 2, 2])], emb.z[[7, 2, 2]])
    np.testing.assert_array_equal(got.queries[10.0][0][:], emb.queries[10.0][0])
    assert got.track.tolist() == emb.track.tolist() and got.clique.tolist() == emb.clique.tolist()
    assert got.clique_name.tolist() == emb.clique_name.tolist()
    group = zarr.open_group(str(tmp_path / "e.zarr"), mode="r")
    assert group["z"].chunks == (4, 5, 8) and group["mask"].chunks == (4, 5)
    # another copy of the same content has the same digest; other content another
    write_embeddings_store(tmp_path / "f.zarr", emb, block=4)
    assert open_embeddings(tmp_path / "f.zarr").z.digest == got.z.digest
    emb.z[0, 0, 0] += 1
    write_embeddings_store(tmp_path / "g.zarr", emb, block=4)
    assert open_embeddings(tmp_path / "g.zarr").z.digest != got.z.digest


def test_ranks_write_their_blocks_and_incomplete_store_is_refused(tmp_path):
    emb = make_set(n=10)
    w0 = EmbeddingStoreWriter.create(tmp_path / "e.zarr", 10, 5, 8, track=emb.track, clique=emb.clique, block=4,
                                     query_segments={10.0: 3})
    w1 = EmbeddingStoreWriter(tmp_path / "e.zarr")  # the other rank, after the barrier
    assert w0.blocks_for_rank(0, 2) == [0, 2] and w1.blocks_for_rank(1, 2) == [1]
    zq, mq = emb.queries[10.0]
    for writer, rank in ((w0, 0), (w1, 1)):
        for b in writer.blocks_for_rank(rank, 2):
            a, e = b * 4, min(10, b * 4 + 4)
            if b == 2:
                continue  # rank 0 is "killed" before its last block
            writer.write_rows(a, emb.z[a:e], emb.mask[a:e], {"zq_10": zq[a:e], "maskq_10": mq[a:e]})
    with pytest.raises(ClewsError, match="incomplete: 1 of 3 blocks missing"):
        open_embeddings(tmp_path / "e.zarr")
    with pytest.raises(ClewsError, match="block boundary"):
        w0.write_rows(2, emb.z[2:6], emb.mask[2:6])
    with pytest.raises(ClewsError, match="no values for array zq_10"):
        w0.write_rows(8, emb.z[8:10], emb.mask[8:10])
    w0.write_rows(8, emb.z[8:10], emb.mask[8:10], {"zq_10": zq[8:10], "maskq_10": mq[8:10]})
    got = open_embeddings(tmp_path / "e.zarr")
    np.testing.assert_array_equal(got.z[:], emb.z)


def test_not_a_store_is_one_line(tmp_path):
    (tmp_path / "x.zarr").mkdir()
    with pytest.raises(ClewsError, match="not .*embeddings store"):
        open_embeddings(tmp_path / "x.zarr")
    with pytest.raises(ClewsError, match="not found"):
        open_embeddings(tmp_path / "nope.zarr")


@pytest.mark.parametrize("redux", ["bpwr-3", "meanmin"])
def test_matrix_from_store_equals_per_pair_and_npz(tmp_path, redux):
    emb = make_set(n=19)
    write_embeddings_store(tmp_path / "e.zarr", emb, block=4)
    save_embeddings(tmp_path / "e.npz", emb)
    results = {}
    # clews-pipe keeps every track (the lone-clique ones as distractors); the published clews
    # protocol evaluates a subset of the lazy rows: both give the .npz's matrix
    for protocol in ("clews-pipe", "clews"):
        for name in ("e.zarr", "e.npz"):
            loaded = open_embeddings(tmp_path / name)
            out = tmp_path / f"out-{protocol}-{name}"
            summary = evaluate_track_level(loaded, out, redux, settings=TileSettings(tile=4, memory_mb=0.001),
                                           progress=False, protocol=protocol)
            results[protocol, name] = (zarr.open_group(str(out / "distances.zarr"), mode="r")["distances"][:], summary)
        np.testing.assert_array_equal(results[protocol, "e.zarr"][0], results[protocol, "e.npz"][0])
        assert results[protocol, "e.zarr"][1] == results[protocol, "e.npz"][1]
    np.testing.assert_allclose(results["clews-pipe", "e.zarr"][0], per_pair(emb.z, emb.mask, redux), rtol=1e-4, atol=1e-5)


def test_two_ranks_read_rows_and_stream_candidates_within_half_the_set(tmp_path):
    """Rank 0 of 2 on a lazily opened store: the numpy memory it allocates stays under E/2
    (E: the embeddings' bytes); loading the .npz alone takes E."""
    n, s, d = 2048, 2, 1024  # E = 8 MiB fp16 + mask; a tile of 128 tracks holds 0.5 MiB
    rng = np.random.default_rng(3)
    emb = Embeddings(z=rng.standard_normal((n, s, d)).astype(np.float16), mask=np.zeros((n, s), dtype=bool),
                     clique=np.arange(n) // 2, track=np.array([f"t{i:05d}" for i in range(n)]))
    write_embeddings_store(tmp_path / "e.zarr", emb, block=128)
    save_embeddings(tmp_path / "e.npz", emb)
    e_bytes = emb.z.nbytes + emb.mask.nbytes
    del emb
    settings = TileSettings(tile=128, memory_mb=1.0)

    def peak(fn) -> int:
        tracemalloc.start()
        fn()
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    def rank0(name):
        loaded = open_embeddings(tmp_path / name)
        compute_distance_matrix(tmp_path / f"d-{name}", loaded.z, loaded.mask, loaded.z, loaded.mask, "min",
                                query_track=loaded.track, candidate_track=loaded.track, query_clique=loaded.clique,
                                candidate_clique=loaded.clique, settings=settings, rank=0, world_size=2,
                                progress=False)

    lazy_peak = peak(lambda: rank0("e.zarr"))
    npz_peak = peak(lambda: rank0("e.npz"))
    assert npz_peak >= e_bytes  # the old layout: every rank holds the whole set
    assert lazy_peak <= e_bytes / 2, (lazy_peak, e_bytes)


@pytest.mark.parametrize("precision,redux", [("bf16", "bpwr-3"), ("bf16", "min"), ("tf32", "meanmin")])
def test_low_precision_matmul_gives_fp32_metrics(tmp_path, precision, redux):
    """Near-duplicate versions (distances close together) so bf16 alone reorders candidates; the
    float32 re-computation of the values that decide ranks restores the float32 metrics."""
    emb = make_set(n=60, s=6, d=64, seed=4, n_cliques=12, noise=0.08, dtype=np.float32)
    runs = {}
    for prec in ("fp32", precision):
        out = tmp_path / prec
        summary = evaluate_track_level(emb, out, redux, settings=TileSettings(tile=16, memory_mb=0.01, precision=prec),
                                       progress=False)
        _, per_query = matrix_metrics(out / "distances.zarr", redux, "track")
        runs[prec] = (summary, per_query, zarr.open_group(str(out / "distances.zarr"), mode="r"))
    (s32, q32, g32), (slo, qlo, glo) = runs["fp32"], runs[precision]
    np.testing.assert_array_equal(qlo.ap, q32.ap)
    np.testing.assert_array_equal(qlo.r1, q32.r1)
    np.testing.assert_array_equal(qlo.nar, q32.nar)
    assert {k: v for k, v in slo.items()} == {k: v for k, v in s32.items()}
    assert glo.attrs["precision"] == precision and glo["refined"][:].all()
    if precision == "bf16":  # the approximation really differs somewhere (else the test proves nothing)
        approx = runs[precision][2]["distances"][:]
        assert not np.array_equal(approx, g32["distances"][:])


def test_bad_precision_is_one_line(tmp_path):
    emb = make_set(n=5)
    with pytest.raises(ClewsError, match="--matmul-precision"):
        evaluate_track_level(emb, tmp_path / "o", "min", settings=TileSettings(precision="fp8"), progress=False,
                             protocol="clews-pipe")  # 5 tracks: every clique alone under clews


@pytest.mark.parametrize("redux", ["bpwr-3", "min", "meanmin"])
def test_exact_pair_distances_equal_the_per_pair_loop(redux):
    from clews_pipe.retrieval.tiles import exact_pair_distances

    emb = make_set(n=9, s=5, d=8, seed=7, dtype=np.float32)
    rng = np.random.default_rng(1)
    qi, ci = rng.integers(0, 9, 20), rng.integers(0, 9, 20)
    got = exact_pair_distances(torch.as_tensor(emb.z[qi]), torch.as_tensor(emb.mask[qi]), torch.as_tensor(emb.z[ci]),
                               torch.as_tensor(emb.mask[ci]), redux, memory_mb=0.001).numpy()
    full = per_pair(emb.z, emb.mask, redux)
    np.testing.assert_allclose(got, full[qi, ci], rtol=1e-5, atol=1e-6)
