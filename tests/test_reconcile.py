"""Issue 10: a rerun reconciles the store with the disk and the metadata instead of trusting its
index: deleted / corrupted parts are extracted again, metadata changes reach the index without
decoding, failed tracks are retried on request, temporary parts of dead runs are removed, and
``store verify`` reports damaged fragments, manifests and ``store.json`` without crashing."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from clews_pipe.cli.app import main
from clews_pipe.store import layout, open_store
from clews_pipe.extract.config import extract_config
from clews_pipe.extract.job import run_extract

SPLIT_PREFIX = "DiscogsVI-YT-20240701-light.json"
IDS = {"a": "AaSine440aa", "b": "BbSine660bb", "c": "CcSine880cc", "bad": "DdGarbage00"}


@pytest.fixture(scope="module")
def scheduler():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.WARNING) as cluster:
        yield cluster.scheduler_address


def _sine(freq: float, seconds: float, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_splits(meta: Path, splits: dict[str, dict[str, list[tuple[str, str]]]]) -> None:
    """``{split: {clique: [(youtube_id, title), ...]}}`` as Discogs-VI light split files."""
    for split in ("train", "val", "test"):
        content = {c: [{"version_id": f"V-{c[-2:]}{i}", "track_title": t, "youtube_id": y}
                       for i, (y, t) in enumerate(items)]
                   for c, items in splits.get(split, {}).items()}
        (meta / f"{SPLIT_PREFIX}.{split}").write_text(json.dumps(content))


def audio_path(audio: Path, ytid: str, ext: str = "wav") -> Path:
    folder = audio / ytid[:2]
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{ytid}.{ext}"


@pytest.fixture()
def corpus(tmp_path):
    meta, audio = tmp_path / "meta", tmp_path / "audio"
    meta.mkdir()
    audio.mkdir()
    for key, freq in (("a", 440.0), ("b", 660.0), ("c", 880.0)):
        sf.write(audio_path(audio, IDS[key]), _sine(freq, 3.0), 16000)
    audio_path(audio, IDS["bad"]).write_bytes(np.random.default_rng(0).bytes(5000))
    write_splits(meta, {"train": {"C-01": [(IDS["a"], "a"), (IDS["b"], "b")]},
                        "test": {"C-02": [(IDS["c"], "c"), (IDS["bad"], "bad")]}})
    return {"meta": meta, "audio": audio}


def conf_for(corpus, out, scheduler, **kw):
    return extract_config(dataset="discogs-vi", meta=str(corpus["meta"]), audio=str(corpus["audio"]),
                          out=str(out), scheduler=scheduler, progress=False, part_size=1, balance=False, **kw)


def part_of(store_path: Path, track_id: str) -> str:
    return str(open_store(store_path).index.loc[track_id, "part"])


def frames_of(store_path: Path) -> dict[str, np.ndarray]:
    store = open_store(store_path)
    return {t: np.array(store.read(t)) for t in store.tracks().index}


def test_deleted_part_is_extracted_again(corpus, scheduler, tmp_path):
    out = tmp_path / "s.store"
    run_extract(conf_for(corpus, out, scheduler))
    before = frames_of(out)
    shutil.rmtree(out / layout.PARTS_DIR / part_of(out, IDS["b"]))
    again = run_extract(conf_for(corpus, out, scheduler))
    assert again["tracks_submitted"] == 1 and again["this_run"]["ok"] == 1
    assert list(again["damaged_parts"]) and again["tracks_reextracted_from_damaged_parts"] == 1
    assert open_store(out).verify() == []
    after = frames_of(out)
    assert sorted(after) == sorted(before)
    for track, frames in before.items():
        np.testing.assert_array_equal(after[track], frames)
    # the next rerun has nothing to do
    third = run_extract(conf_for(corpus, out, scheduler))
    assert third["tracks_submitted"] == 0 and not third["damaged_parts"]


def _flip_bytes(store_path: Path, track_id: str) -> Path:
    part = part_of(store_path, track_id)
    manifest = json.loads((store_path / layout.PARTS_DIR / part / layout.PART_MANIFEST).read_text())
    data = store_path / layout.PARTS_DIR / part / manifest["data_file"]
    raw = bytearray(data.read_bytes())
    raw[manifest["data_offset"] + 100] ^= 0x40  # same size, one flipped bit in a frame value
    data.write_bytes(bytes(raw))
    return data


def test_flipped_bytes_are_found_by_verify_and_extracted_again(corpus, scheduler, tmp_path):
    out = tmp_path / "s.store"
    run_extract(conf_for(corpus, out, scheduler))
    before = frames_of(out)
    _flip_bytes(out, IDS["a"])
    assert not np.array_equal(frames_of(out)[IDS["a"]], before[IDS["a"]])
    plain = run_extract(conf_for(corpus, out, scheduler))  # size and layout unchanged: not seen
    assert plain["tracks_submitted"] == 0
    checked = run_extract(conf_for(corpus, out, scheduler, verify=True))
    assert checked["tracks_submitted"] == 1
    assert "checksum" in next(iter(checked["damaged_parts"].values()))
    np.testing.assert_array_equal(frames_of(out)[IDS["a"]], before[IDS["a"]])
    assert open_store(out).verify() == []


def test_truncated_data_file_and_garbage_manifest_are_extracted_again(corpus, scheduler, tmp_path, capsys):
    out = tmp_path / "s.store"
    run_extract(conf_for(corpus, out, scheduler))
    before = frames_of(out)
    data = _flip_bytes(out, IDS["a"])
    data.write_bytes(data.read_bytes()[:-200])
    (out / layout.PARTS_DIR / part_of(out, IDS["c"]) / layout.PART_MANIFEST).write_text("{not json")
    assert main(["store", "verify", str(out)]) == 1  # reports both, no traceback
    captured = capsys.readouterr()
    assert "raw float16 layout" in captured.out and "unreadable part manifest" in captured.out
    again = run_extract(conf_for(corpus, out, scheduler))
    assert again["tracks_submitted"] == 2 and len(again["damaged_parts"]) == 2
    after = frames_of(out)
    for track, frames in before.items():
        np.testing.assert_array_equal(after[track], frames)
    names = os.listdir(out / layout.PARTS_DIR)
    assert sum(n.startswith(".damaged-") for n in names) == 2  # kept aside, never read
    capsys.readouterr()
    assert main(["store", "info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["damaged_parts_set_aside"] == 2


def test_metadata_changes_reach_the_index_without_decoding(corpus, scheduler, tmp_path):
    out = tmp_path / "s.store"
    run_extract(conf_for(corpus, out, scheduler))
    # clique C-01 moves from train to test, a track is relabelled and retitled
    write_splits(corpus["meta"], {"test": {"C-01": [(IDS["a"], "a"), (IDS["b"], "b")],
                                           "C-03": [(IDS["c"], "renamed"), (IDS["bad"], "bad")]}})
    parts_before = sorted(os.listdir(out / layout.PARTS_DIR))
    again = run_extract(conf_for(corpus, out, scheduler))
    assert again["tracks_submitted"] == 0 and sorted(os.listdir(out / layout.PARTS_DIR)) == parts_before
    assert again["metadata_updated"] == 4  # a, b: split; c: clique + title; bad: clique
    index = open_store(out).index
    assert index.loc[IDS["a"], "split"] == "test" and index.loc[IDS["b"], "split"] == "test"
    assert index.loc[IDS["c"], "clique"] == "C-03" and index.loc[IDS["c"], "title"] == "renamed"
    assert index.loc[IDS["bad"], "clique"] == "C-03"
    assert run_extract(conf_for(corpus, out, scheduler))["metadata_updated"] == 0


def test_failed_tracks_are_retried_on_request(corpus, scheduler, tmp_path):
    out = tmp_path / "s.store"
    run_extract(conf_for(corpus, out, scheduler))
    assert open_store(out).index.loc[IDS["bad"], "status"] == "failed"
    sf.write(audio_path(corpus["audio"], IDS["bad"]), _sine(330.0, 2.0), 16000)  # the file is fixed
    plain = run_extract(conf_for(corpus, out, scheduler))
    assert plain["tracks_submitted"] == 0
    retried = run_extract(conf_for(corpus, out, scheduler, retry_failed=True))
    assert retried["failed_retried"] == 1 and retried["tracks_submitted"] == 1
    store = open_store(out)
    assert store.index.loc[IDS["bad"], "status"] == "ok"
    assert store.read(IDS["bad"]).shape[0] == pytest.approx(20, abs=2)


def test_temporary_parts_of_dead_runs_are_removed(corpus, scheduler, tmp_path):
    out = tmp_path / "s.store"
    run_extract(conf_for(corpus, out, scheduler))
    stale = out / layout.PARTS_DIR / f"{layout.TEMP_PREFIX}deadrun-p00000-0123"
    stale.mkdir()
    (stale / "frames.h5").write_bytes(b"x" * 1000)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    again = run_extract(conf_for(corpus, out, scheduler))
    assert again["temporaries_removed"] == 1 and not stale.exists()


# ----------------------------------------------------------------------------- store verify


def test_verify_reads_fragments_and_survives_damaged_manifest_and_store_json(corpus, scheduler, tmp_path, capsys):
    out = tmp_path / "s.store"
    run_extract(conf_for(corpus, out, scheduler))
    part_a, part_c = part_of(out, IDS["a"]), part_of(out, IDS["c"])
    (out / layout.PARTS_DIR / part_a / layout.PART_INDEX).write_bytes(b"garbage, not parquet")
    manifest_path = out / layout.PARTS_DIR / part_c / layout.PART_MANIFEST
    manifest = json.loads(manifest_path.read_text())
    del manifest["data_file"]
    manifest_path.write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["store", "verify", str(out)]) == 1
    out_lines = capsys.readouterr().out
    assert f"part {part_a}: " in out_lines and "unreadable index fragment" in out_lines
    assert f"part {part_c}: manifest key 'data_file'" in out_lines
    meta_path = out / layout.STORE_META
    meta = json.loads(meta_path.read_text())
    del meta["n_bins"]
    meta_path.write_text(json.dumps(meta))
    for command in (["store", "verify", str(out)], ["store", "info", str(out)]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and "'n_bins'" in err[0]


def test_damaged_consolidated_index_is_rebuilt_from_the_parts(corpus, scheduler, tmp_path):
    out = tmp_path / "s.store"
    run_extract(conf_for(corpus, out, scheduler))
    before = open_store(out).index.sort_index()
    (out / layout.CONSOLIDATED_INDEX).write_bytes(b"PAR1 garbage")
    again = run_extract(conf_for(corpus, out, scheduler))
    assert again["tracks_submitted"] == 0 and layout.CONSOLIDATED_INDEX in again["damaged_parts"]
    after = open_store(out).index.sort_index()
    assert after.drop(columns=["part"]).equals(before.drop(columns=["part"]))
