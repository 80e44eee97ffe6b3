"""Feature store: round trips on both backends, atomic parts, superseding, verify, info, pickling."""

from __future__ import annotations

import json
import os
import pickle
import zlib

import h5py
import numpy as np
import pytest
import zarr

from clews_pipe.cli.app import main
from clews_pipe.errors import ClewsError
from clews_pipe.store import INDEX_COLUMNS, create_store, open_store

CQT = {"samplerate": 16000, "hoplen": 0.02, "noctaves": 7, "nbinsoct": 12, "fscale": 1.0, "pool": 5}
BACKENDS = ["zarr", "hdf5"]


def _record(track_id, status="ok", split="train", clique="C-1", **extra):
    rec = {"track_id": track_id, "clique": clique, "version": f"V-{track_id}", "split": split,
           "title": f"title {track_id}", "artist": "artist", "path": f"/audio/{track_id}.mp3",
           "duration": 0.0, "status": status, "error": ""}
    rec.update(extra)
    return rec


def _features(rng, n_frames):
    return (rng.random((n_frames, 84)) * 4).astype(np.float16)


@pytest.fixture()
def corpus():
    """Five tracks: three ok (one of zero length), one failed, one missing."""
    rng = np.random.default_rng(7)
    feats = {"t-a": _features(rng, 37), "t-b": _features(rng, 0), "t-c": _features(rng, 120)}
    records = [
        _record("t-a", duration=3.7),
        _record("t-b", duration=0.0),
        _record("t-c", status="truncated", split="val", duration=12.0, error="truncated at 12 s"),
        _record("t-d", status="failed", error="AudioDecodeError: garbage"),
        _record("t-e", status="missing", split="test", error="looked for /audio/t-e.*"),
    ]
    features = [feats["t-a"], feats["t-b"], feats["t-c"], None, None]
    return records, features, feats


def _build(tmp_path, backend, corpus, name="s"):
    records, features, _ = corpus
    writer = create_store(tmp_path / name, backend=backend, cqt_params=CQT, attrs={"dataset": "unit"})
    writer.write_part("part-000", records[:3], features[:3])
    writer.write_part("part-001", records[3:], features[3:])
    return writer


@pytest.mark.parametrize("backend", BACKENDS)
def test_round_trip(tmp_path, backend, corpus):
    _, _, feats = corpus
    _build(tmp_path, backend, corpus)
    store = open_store(tmp_path / "s")
    assert store.backend == backend and store.frame_rate == 10.0 and store.n_bins == 84
    assert store.cqt_params == CQT and store.attrs == {"dataset": "unit"}
    assert list(store.index.columns) == INDEX_COLUMNS[1:] and store.index.index.name == "track_id"
    assert sorted(store.index.index) == ["t-a", "t-b", "t-c", "t-d", "t-e"]
    for tid, expected in feats.items():
        got = store.read(tid)
        assert got.dtype == np.float16 and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(store.read("t-c", 10, 25), feats["t-c"][10:25])
    np.testing.assert_array_equal(store.read("t-c", 100, 500), feats["t-c"][100:])
    np.testing.assert_array_equal(store.read("t-a", start=-5), feats["t-a"][-5:])
    assert store.read("t-c", 50, 40).shape == (0, 84)
    row = store.index.loc["t-c"]
    assert (row["part"], row["offset"], row["n_frames"]) == ("part-000", 37, 120)
    assert row["status"] == "truncated" and row["error"] == "truncated at 12 s"
    assert store.index.loc["t-e", "error"] == "looked for /audio/t-e.*"
    with pytest.raises(ClewsError, match="t-d"):
        store.read("t-d")
    with pytest.raises(ClewsError, match="nope"):
        store.read("nope")
    assert list(store.tracks("train").index) == ["t-a", "t-b"]
    assert sorted(store.tracks(statuses=None).index) == ["t-a", "t-b", "t-c", "t-d", "t-e"]
    assert store.verify() == []


def test_backends_hold_identical_frames(tmp_path, corpus):
    _build(tmp_path, "zarr", corpus, "z")
    _build(tmp_path, "hdf5", corpus, "h")
    z, h = open_store(tmp_path / "z"), open_store(tmp_path / "h")
    for tid in ("t-a", "t-b", "t-c"):
        np.testing.assert_array_equal(z.read(tid), h.read(tid))
    cols = ["n_frames", "offset", "status", "split", "clique"]
    assert z.index.sort_index()[cols].equals(h.index.sort_index()[cols])


def test_zarr_part_is_a_real_zarr_array_mapped_raw(tmp_path, corpus):
    _, _, feats = corpus
    _build(tmp_path, "zarr", corpus)
    store = open_store(tmp_path / "s")
    array = zarr.open_array(str(tmp_path / "s" / "parts" / "part-000" / "frames.zarr"), mode="r")
    expected = np.concatenate([feats["t-a"], feats["t-b"], feats["t-c"]])
    np.testing.assert_array_equal(array[:], expected)
    mapped = store.part_frames("part-000")
    assert isinstance(mapped, np.memmap)  # served from the chunk file's raw bytes
    np.testing.assert_array_equal(mapped, array[:])
    assert store.manifest("part-000")["crc32"] == zlib.crc32(expected.astype("<f2").tobytes())
    # the all-failed part has zero frames and is still a valid (empty) zarr array
    empty = zarr.open_array(str(tmp_path / "s" / "parts" / "part-001" / "frames.zarr"), mode="r")
    assert empty.shape == (0, 84)


def test_hdf5_part_is_plain_contiguous_hdf5(tmp_path, corpus):
    _, _, feats = corpus
    _build(tmp_path, "hdf5", corpus)
    with h5py.File(tmp_path / "s" / "parts" / "part-000" / "frames.h5", "r") as fh:
        dset = fh["frames"]
        assert dset.chunks is None and dset.compression is None
        data = dset[:]
    np.testing.assert_array_equal(data[37:157], feats["t-c"])
    assert isinstance(open_store(tmp_path / "s").part_frames("part-000"), np.memmap)


def test_killed_writer_temp_part_is_invisible(tmp_path, corpus):
    writer = _build(tmp_path, "zarr", corpus)
    tmp_part = tmp_path / "s" / "parts" / ".tmp-part-002-deadbeef"
    tmp_part.mkdir()
    (tmp_part / "index.parquet").write_bytes(b"half written garbage")
    (tmp_part / "frames.zarr").mkdir()
    store = open_store(tmp_path / "s")
    assert len(store.index) == 5 and store.verify() == []
    assert store.summary()["temporary_parts"] == 1
    assert writer.done_track_ids() == {"t-a", "t-b", "t-c", "t-d"}
    writer.consolidate()
    assert len(open_store(tmp_path / "s").index) == 5


def test_done_ids_exclude_missing_and_later_records_supersede(tmp_path, corpus):
    _, _, feats = corpus
    writer = _build(tmp_path, "hdf5", corpus)
    assert writer.done_track_ids() == {"t-a", "t-b", "t-c", "t-d"}
    writer.consolidate()
    rng = np.random.default_rng(3)
    new_e, new_a = _features(rng, 11), _features(rng, 5)
    # a rerun found t-e, and re-extracted t-a; t-x appears twice in one part: the last wins
    writer.write_part("part-002",
                      [_record("t-e", split="test", duration=1.1), _record("t-a"),
                       _record("t-x", status="failed", error="first"), _record("t-x", status="failed", error="second")],
                      [new_e, new_a, None, None])
    assert writer.done_track_ids() == {"t-a", "t-b", "t-c", "t-d", "t-e", "t-x"}
    for reopen in (False, True):  # before and after consolidating again
        if reopen:
            merged = writer.consolidate()
            assert sorted(merged["track_id"]) == ["t-a", "t-b", "t-c", "t-d", "t-e", "t-x"]
        store = open_store(tmp_path / "s")
        np.testing.assert_array_equal(store.read("t-e"), new_e)
        np.testing.assert_array_equal(store.read("t-a"), new_a)
        np.testing.assert_array_equal(store.read("t-c"), feats["t-c"])
        assert store.index.loc["t-e", "status"] == "ok" and store.index.loc["t-a", "part"] == "part-002"
        assert store.index.loc["t-x", "error"] == "second"
        assert store.summary()["unconsolidated_parts"] == (0 if reopen else 1)
        assert store.verify() == []


def test_reused_part_name_gets_a_unique_directory(tmp_path, corpus):
    writer = _build(tmp_path, "zarr", corpus)
    rng = np.random.default_rng(5)
    again = _features(rng, 4)
    final = writer.write_part("part-000", [_record("t-a")], [again])
    assert final != "part-000" and final.startswith("part-000")
    store = open_store(tmp_path / "s")
    assert store.index.loc["t-a", "part"] == final
    np.testing.assert_array_equal(store.read("t-a"), again)
    assert store.verify() == []


def test_create_store_rejects_mismatches_and_non_stores(tmp_path, corpus):
    _build(tmp_path, "zarr", corpus)
    with pytest.raises(ClewsError, match="backend"):
        create_store(tmp_path / "s", backend="hdf5")
    with pytest.raises(ClewsError, match="cqt_params"):
        create_store(tmp_path / "s", backend="zarr", cqt_params={**CQT, "pool": 3})
    assert create_store(tmp_path / "s", backend="zarr").backend == "zarr"
    with pytest.raises(ClewsError, match="backend"):
        create_store(tmp_path / "t", backend="lmdb")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(ClewsError, match="other"):
        create_store(tmp_path / "other")
    with pytest.raises(ClewsError, match="not a clews-pipe feature store"):
        open_store(tmp_path / "other")
    with pytest.raises(ClewsError, match="nowhere"):
        open_store(tmp_path / "nowhere")
    writer = create_store(tmp_path / "s", backend="zarr")
    with pytest.raises(ClewsError, match="84"):
        writer.write_part("bad", [_record("q")], [np.zeros((3, 12), np.float16)])
    with pytest.raises(ClewsError, match="part name"):
        writer.write_part("../escape", [_record("q")], [np.zeros((3, 84), np.float16)])
    assert not any(n.startswith(".tmp-") for n in os.listdir(tmp_path / "s" / "parts"))


def test_pickle_round_trip_reopens_memmaps_lazily(tmp_path, corpus):
    _, _, feats = corpus
    _build(tmp_path, "zarr", corpus)
    store = open_store(tmp_path / "s")
    store.read("t-a")
    assert store._maps  # memmaps cached in the parent
    clone = pickle.loads(pickle.dumps(store))
    assert clone._maps == {} and clone._index is None  # only the compact lookup travelled
    np.testing.assert_array_equal(clone.read("t-c", 3, 9), feats["t-c"][3:9])
    assert clone._index is None and "t-a" in clone and len(clone) == 5
    with pytest.raises(ClewsError, match="t-e.*missing"):
        clone.read("t-e")
    assert clone.index.equals(store.index)  # reloaded lazily from disk


def _corrupt_nan(part_file, byte_offset):
    with open(part_file, "r+b") as fh:
        fh.seek(byte_offset)
        fh.write(np.array([np.nan, 1.0], dtype="<f2").tobytes())


@pytest.mark.parametrize("backend", BACKENDS)
def test_verify_catches_nan_written_into_a_part(tmp_path, corpus, backend, capsys):
    _build(tmp_path, backend, corpus)
    store = open_store(tmp_path / "s")
    manifest = store.manifest("part-000")
    data_file = tmp_path / "s" / "parts" / "part-000" / manifest["data_file"]
    # frame 40 belongs to t-c (t-a has frames 0..36, t-b none)
    _corrupt_nan(data_file, manifest["data_offset"] + 40 * 84 * 2)
    problems = open_store(tmp_path / "s").verify()
    assert any("t-c" in p and "NaN" in p for p in problems)
    assert any("checksum" in p for p in problems)
    assert not any("t-a" in p for p in problems)
    assert main(["store", "verify", str(tmp_path / "s")]) == 1
    assert "t-c" in capsys.readouterr().out


@pytest.mark.parametrize("backend", BACKENDS)
def test_verify_catches_truncated_and_overwritten_parts(tmp_path, corpus, backend, capsys):
    _build(tmp_path, backend, corpus)
    assert main(["store", "verify", str(tmp_path / "s")]) == 0
    store = open_store(tmp_path / "s")
    manifest = store.manifest("part-000")
    data_file = tmp_path / "s" / "parts" / "part-000" / manifest["data_file"]
    size = os.path.getsize(data_file)
    with open(data_file, "r+b") as fh:  # overwrite a span with other finite positive values
        fh.seek(manifest["data_offset"] + 100)
        fh.write(np.full(20, 0.5, dtype="<f2").tobytes())
    assert any("checksum" in p for p in open_store(tmp_path / "s").verify())
    os.truncate(data_file, size - 84 * 2 * 10)
    problems = open_store(tmp_path / "s").verify()
    assert problems and any("part-000" in p for p in problems)
    assert main(["store", "verify", str(tmp_path / "s")]) == 1
    capsys.readouterr()


def test_cli_info_json(tmp_path, corpus, capsys):
    _build(tmp_path, "zarr", corpus)
    assert main(["store", "info", str(tmp_path / "s"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tracks"] == 5 and info["backend"] == "zarr" and info["frame_rate"] == 10.0
    assert info["statuses"] == {"ok": 2, "truncated": 1, "failed": 1, "missing": 1}
    assert info["splits"]["train"] == {"ok": 2, "truncated": 0, "failed": 1, "missing": 0}
    assert info["splits"]["test"]["missing"] == 1 and info["splits"]["val"]["truncated"] == 1
    assert info["frames"] == 37 + 0 + 120
    assert info["hours"] == pytest.approx((3.7 + 0.0 + 12.0) / 3600)
    assert info["bytes_on_disk"] >= (37 + 120) * 84 * 2
    problems = {p["track_id"]: (p["status"], p["error"]) for p in info["problems"]}
    assert problems == {"t-c": ("truncated", "truncated at 12 s"),
                        "t-d": ("failed", "AudioDecodeError: garbage"),
                        "t-e": ("missing", "looked for /audio/t-e.*")}
    assert main(["store", "info", str(tmp_path / "s")]) == 0
    assert "train" in capsys.readouterr().out


def test_cli_not_a_store(tmp_path, capsys):
    assert main(["store", "info", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(tmp_path) in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_library_read_fallback_when_bytes_are_not_raw(tmp_path, corpus, backend):
    """A part whose manifest says its bytes cannot be mapped is read through zarr / h5py."""
    _, _, feats = corpus
    _build(tmp_path, backend, corpus)
    manifest_path = tmp_path / "s" / "parts" / "part-000" / "part.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.update(raw=False, data_file="frames.zarr" if backend == "zarr" else "frames.h5", data_offset=0)
    manifest_path.write_text(json.dumps(manifest))
    store = open_store(tmp_path / "s")
    assert store.part_frames("part-000") is None
    np.testing.assert_array_equal(store.read("t-c", 5, 17), feats["t-c"][5:17])
    assert store.path == tmp_path / "s" and store.verify() == []


def _write_one_part(args):
    root, backend, k = args
    rng = np.random.default_rng(100 + k)
    records = [_record(f"w{k}-{i}", clique=f"C-{i}") for i in range(6)]
    features = [_features(rng, 3 + i) for i in range(6)]
    writer = create_store(root, backend=backend, cqt_params=CQT)
    return writer.write_part(f"part-{k}", records, features), [f.tolist() for f in features]


def test_concurrent_writer_processes(tmp_path):
    """Independent processes create/reopen the same store and write distinct parts at once."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    jobs = [(str(tmp_path / backend), backend, k) for backend in BACKENDS for k in range(3)]
    with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_write_one_part, jobs))
    for backend in BACKENDS:
        store = open_store(tmp_path / backend)
        assert store.backend == backend
        assert sorted(store.part_seqs) == ["part-0", "part-1", "part-2"]
        assert store.verify() == []
    for (root, _backend, k), (name, features) in zip(jobs, results):
        assert name == f"part-{k}"
        store = open_store(root)
        for i, expected in enumerate(features):
            np.testing.assert_array_equal(store.read(f"w{k}-{i}"), np.asarray(expected, dtype=np.float16))
