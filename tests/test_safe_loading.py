"""Issue 10: nothing from a user file is executed. WEALY pickles go through a restricted unpickler
(dicts, lists, tuples, str, numbers, numpy arrays); anything else is refused with one line naming
the refused global unless ``--trust-pickle``. The other load paths (npz, faiss) refuse objects."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from clews_pipe.cli.app import main
from clews_pipe.errors import ClewsError
from clews_pipe.evaluation.wealy import load_matrix


def _wealy_payload(n=4):
    rng = np.random.default_rng(0)
    d = rng.random((n, n)).astype(np.float32)
    np.fill_diagonal(d, 0)
    refs_q = [{"clique": i // 2, "version": i, "matrix_row": i, "track": f"t{i}"} for i in range(n)]
    refs_c = [{"clique": i // 2, "version": i, "matrix_col": i, "track": f"t{i}"} for i in range(n)]
    return {"distance_matrix": d, "query_references": refs_q, "candidate_references": refs_c,
            "metadata": {"source": "wealy", "score": np.float32(0.5), "shape": (n, n)}}


class _RunsCommand:
    """What a hostile pickle does: call os.system when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _hostile(tmp_path):
    marker = tmp_path / "pwned"
    payload = _wealy_payload()
    payload["metadata"]["x"] = _RunsCommand(marker)
    path = tmp_path / "hostile.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    return path, marker


def test_hostile_wealy_pickle_is_refused_and_never_executed(tmp_path):
    path, marker = _hostile(tmp_path)
    with pytest.raises(ClewsError) as info:
        load_matrix(path)
    assert not marker.exists()
    assert "system" in str(info.value) and "--trust-pickle" in str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_fuse_cli_refuses_hostile_pickle_with_one_line(tmp_path, capsys):
    path, marker = _hostile(tmp_path)
    good = tmp_path / "good.pkl"
    good.write_bytes(pickle.dumps(_wealy_payload()))
    code = main(["fuse", str(good), str(path), "--out", str(tmp_path / "f.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and not marker.exists()
    assert len(err) == 1 and err[0].startswith("error:")
    assert "posix.system" in err[0] or "os.system" in err[0]
    assert not (tmp_path / "f.csv").exists()


def test_trust_pickle_opts_in(tmp_path, capsys):
    # a legitimate pickle with a class outside the WEALY layout (a set): refused, loads with trust
    payload = _wealy_payload()
    payload["metadata"]["tags"] = {"a", "b"}
    path = tmp_path / "set.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(ClewsError, match=r"builtin\w*\.set"):
        load_matrix(path)
    assert load_matrix(path, trust=True).distances.shape == (4, 4)
    good = tmp_path / "good.pkl"
    good.write_bytes(pickle.dumps(_wealy_payload()))
    code = main(["fuse", str(good), str(path), "--trust-pickle", "--alphas", "0,1", "--out", str(tmp_path / "f.csv")])
    assert code == 0, capsys.readouterr().err


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_wealy_layout_loads_every_protocol(tmp_path, protocol):
    payload = _wealy_payload()
    payload["metadata"]["obj"] = np.array([1.5, 2.5])
    path = tmp_path / f"p{protocol}.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    m = load_matrix(path)
    np.testing.assert_array_equal(m.distances, payload["distance_matrix"].astype(np.float64))
    assert m.query_key == ["t0", "t1", "t2", "t3"]
    assert list(m.query_clique) == [0, 0, 1, 1]


def test_object_array_elements_are_restricted_too(tmp_path):
    marker = tmp_path / "pwned"
    payload = _wealy_payload()
    arr = np.empty(1, dtype=object)
    arr[0] = _RunsCommand(marker)
    payload["metadata"]["arr"] = arr
    path = tmp_path / "objarr.pkl"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(ClewsError, match="system"):
        load_matrix(path)
    assert not marker.exists()


def test_wealy_pickle_of_wrong_shape_is_one_line(tmp_path):
    path = tmp_path / "list.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ClewsError, match="list.pkl"):
        load_matrix(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ClewsError, match="list.pkl"):
        load_matrix(path)



def test_crafted_faiss_header_is_refused_before_allocation(tmp_path, capsys):
    """A flat index whose codes length says 2^36 floats (256 GiB): one line, nothing allocated."""
    import struct

    from clews_pipe.embeddings.npz_format import Embeddings, save_embeddings
    from clews_pipe.search.segment_index import mapping_path

    rng = np.random.default_rng(1)
    n, s, d = 4, 3, 8
    emb = Embeddings(z=rng.standard_normal((n, s, d)).astype(np.float32), mask=np.zeros((n, s), bool),
                     clique=np.arange(n), track=np.array([f"t{i}" for i in range(n)]), queries={})
    save_embeddings(tmp_path / "e.npz", emb)
    index = tmp_path / "i.faiss"
    assert main(["index", "build", str(tmp_path / "e.npz"), "--out", str(index)]) == 0
    raw = bytearray(index.read_bytes())
    assert raw[:3] == b"IxF"
    struct.pack_into("<Q", raw, 4 + 4 + 8 + 8 + 8 + 1 + 4, 1 << 36)
    index.write_bytes(bytes(raw))
    assert mapping_path(index).is_file()
    capsys.readouterr()
    code = main(["search", str(index), str(tmp_path / "e.npz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "68719476736 floats" in err[0], err


class _Hostile:
    def __reduce__(self):
        return (os.system, ("true",))


def test_checkpoint_refusal_names_the_global(tmp_path):
    import torch

    from clews_pipe.model.checkpoint import load_checkpoint

    path = tmp_path / "h.ckpt"
    torch.save({"model": {}, "x": _Hostile()}, path)
    with pytest.raises(ClewsError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert "posix.system" in msg and "--trust-checkpoint" in msg and "\n" not in msg
    with pytest.raises(ClewsError) as info:
        load_checkpoint(path, hint="use another --out")
    assert "posix.system" in str(info.value) and "--trust-checkpoint" not in str(info.value)


def test_distance_fingerprint_covers_every_value():
    """Issue 10: the fingerprint sampled at most ~1M values per array, so a change between two
    samples reused stale tiles. Every single value now changes it."""
    from clews_pipe.evaluation.distances import fingerprint

    base = np.zeros(3_000_001, dtype=np.float32)
    reference = fingerprint(base, extra="x")
    for position in (1, 2, 1_500_001, 3_000_000):
        changed = base.copy()
        changed[position] = 1e-3
        assert fingerprint(changed, extra="x") != reference, position
    assert fingerprint(base.copy(), extra="x") == reference
    assert fingerprint(base.reshape(1, -1), extra="x") != reference  # shape counts
    assert fingerprint(np.array(["a", "b"]), extra="") != fingerprint(np.array(["a", "c"]), extra="")
