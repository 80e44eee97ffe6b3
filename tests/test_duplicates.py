"""Issue 10: duplicate track ids are reported, never silent; an id listed in a training split and
an evaluated one is an error (one line naming the id and both splits) unless allowed."""

from __future__ import annotations

import json

import pytest

from clews_pipe.cli.app import main
from clews_pipe.errors import ClewsError
from clews_pipe.store import open_store
from clews_pipe.datasets.catalogs import load_catalog
from clews_pipe.extract.config import extract_config
from clews_pipe.extract.job import run_extract

SPLIT_PREFIX = "DiscogsVI-YT-20240701-light.json"


def _splits(meta, content):
    for split in ("train", "val", "test"):
        entries = {c: [{"version_id": f"V-{i}", "track_title": "t", "youtube_id": y} for i, y in enumerate(ids)]
                   for c, ids in content.get(split, {}).items()}
        (meta / f"{SPLIT_PREFIX}.{split}").write_text(json.dumps(entries))


@pytest.fixture()
def leaky(tmp_path):
    meta, audio = tmp_path / "meta", tmp_path / "audio"
    meta.mkdir()
    audio.mkdir()
    # "LeakyId0001" is in a train clique and a test clique; "TwiceVal001" in two val cliques
    _splits(meta, {"train": {"C-1": ["LeakyId0001", "TrainOnly01"]},
                   "val": {"C-5": ["TwiceVal001", "ValOnly0001"], "C-6": ["TwiceVal001", "ValOnly0002"]},
                   "test": {"C-9": ["LeakyId0001", "TestOnly001"]}})
    return meta, audio


def test_catalog_reports_every_id_in_two_cliques_or_splits(leaky):
    meta, audio = leaky
    found: list = []
    catalog = load_catalog("discogs-vi", meta, audio, duplicates=found)
    assert catalog["track_id"].is_unique and len(catalog) == 6
    by_id = {d["track_id"]: d["entries"] for d in found}
    assert set(by_id) == {"LeakyId0001", "TwiceVal001"}
    assert [(e["split"], e["clique"]) for e in by_id["LeakyId0001"]] == [("train", "C-1"), ("test", "C-9")]
    assert [(e["split"], e["clique"]) for e in by_id["TwiceVal001"]] == [("val", "C-5"), ("val", "C-6")]
    # the kept entry is the first listed
    assert catalog.set_index("track_id").loc["LeakyId0001", "split"] == "train"


def test_train_test_overlap_is_one_error_line_and_changes_nothing(leaky, tmp_path, capsys):
    meta, audio = leaky
    out = tmp_path / "s.store"
    code = main(["extract", "--dataset", "discogs-vi", "--meta", str(meta), "--audio", str(audio),
                 "--out", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:"), err
    assert "LeakyId0001" in err[0] and "split train" in err[0] and "split test" in err[0]
    assert "--allow-split-overlap" in err[0]
    assert not out.exists()


def test_allowed_overlap_is_recorded_and_listed_by_store_info(leaky, tmp_path, capsys):
    meta, audio = leaky
    out = tmp_path / "s.store"
    # no audio on disk: every track is recorded "missing", no cluster is started
    summary = run_extract(extract_config(dataset="discogs-vi", meta=str(meta), audio=str(audio), out=str(out),
                                         progress=False, allow_split_overlap=True))
    assert summary["duplicates"] == 2
    assert {d["track_id"] for d in open_store(out).duplicates()} == {"LeakyId0001", "TwiceVal001"}
    capsys.readouterr()
    assert main(["store", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {d["track_id"] for d in info["duplicates"]} == {"LeakyId0001", "TwiceVal001"}
    assert main(["store", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 track id(s) listed in more than one clique or split" in text
    assert "LeakyId0001: train/C-1, test/C-9" in text


def test_library_refusal_names_both_splits(leaky, tmp_path):
    meta, audio = leaky
    with pytest.raises(ClewsError, match=r"LeakyId0001 is listed in split train \(clique C-1\) and split test \(clique C-9\)"):
        run_extract(extract_config(dataset="discogs-vi", meta=str(meta), audio=str(audio), out=str(tmp_path / "x"),
                                   progress=False))
