"""``--embeddings FILE.npz`` is read by rows on demand: no rank loads the whole set."""

import json

import numpy as np
import pytest

from clews_pipe.errors import ClewsError
from clews_pipe.evaluation.distances import TileSettings
from clews_pipe.embeddings.formats import open_embeddings
from clews_pipe.embeddings.npz_format import Embeddings, load_embeddings, save_embeddings
from clews_pipe.embeddings.npz_rows import NpzMemberRows, RowsView
from clews_pipe.evaluation.evaluate import evaluate_track_level


def _set(n=60, s=4, d=8, seed=0, dtype=np.float16):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, s, d)).astype(dtype)
    mask = np.zeros((n, s), bool)
    mask[::3, -1] = True
    clique = np.arange(n) // 3
    clique[-1] = 10_000  # a clique of one: dropped by the published protocol (a lazy subset)
    return Embeddings(z=z, mask=mask, clique=clique, track=np.asarray([f"t{i}" for i in range(n)]))


def test_rows_read_on_demand_equal_the_loaded_arrays(tmp_path, monkeypatch):
    emb = _set()
    emb.z[0, -1] = np.nan  # padding may hold anything: read as 0, as the eager loader does
    save_embeddings(tmp_path / "e.npz", emb)
    eager = load_embeddings(tmp_path / "e.npz")
    reads = []
    import os

    real_pread = os.pread
    monkeypatch.setattr(os, "pread", lambda fd, n, off: reads.append(n) or real_pread(fd, n, off))
    lazy = open_embeddings(tmp_path / "e.npz")
    assert isinstance(lazy.z, NpzMemberRows) and lazy.z.shape == eager.z.shape and lazy.z.dtype == np.float16
    reads.clear()
    np.testing.assert_array_equal(lazy.z[5:9], eager.z[5:9])
    assert reads == [4 * lazy.z.row_bytes]  # only those rows
    idx = np.array([3, 4, 5, 40, 2])
    np.testing.assert_array_equal(lazy.z[idx], eager.z[idx])
    np.testing.assert_array_equal(np.asarray(lazy.z), eager.z)
    view = lazy.subset(np.array([1, 7, 8, 30])).z
    assert isinstance(view, RowsView)
    np.testing.assert_array_equal(view[1:3], eager.z[[7, 8]])


def test_nonfinite_unpadded_segment_is_one_error(tmp_path):
    emb = _set()
    emb.z[4, 0, 2] = np.inf
    save_embeddings(tmp_path / "e.npz", emb)
    with pytest.raises(ClewsError, match="NaN/inf values in unpadded segments .first in row 4"):
        open_embeddings(tmp_path / "e.npz")


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_lazy_evaluation_equals_the_in_memory_one(tmp_path, dtype):
    emb = _set(dtype=dtype)
    save_embeddings(tmp_path / "e.npz", emb)
    lazy = open_embeddings(tmp_path / "e.npz")
    assert isinstance(lazy.z, NpzMemberRows)
    small = TileSettings(tile=16, memory_mb=0.001)  # a tile of rows over 1/4 of the budget: read block by block
    a = evaluate_track_level(lazy, tmp_path / "lazy", "bpwr-2", settings=small, progress=False)
    b = evaluate_track_level(load_embeddings(tmp_path / "e.npz"), tmp_path / "eager", "bpwr-2", settings=small,
                             progress=False)
    assert {k: a[k] for k in ("MAP", "MR1", "NAR", "queries")} == {k: b[k] for k in ("MAP", "MR1", "NAR", "queries")}
    assert (tmp_path / "lazy" / "per_query.csv").read_text() == (tmp_path / "eager" / "per_query.csv").read_text()


def test_compressed_file_is_still_read(tmp_path):
    emb = _set()
    np.savez_compressed(tmp_path / "c.npz", z=emb.z, mask=emb.mask, clique=emb.clique, track=emb.track)
    got = open_embeddings(tmp_path / "c.npz")
    assert isinstance(got.z, np.ndarray)  # compressed members cannot be read by rows: loaded as before
    np.testing.assert_array_equal(got.z, emb.z)
    assert json.dumps(float(got.z.astype(np.float32).sum()))
