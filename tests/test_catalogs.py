"""Catalogs on small hand-made metadata and audio trees (files are real but tiny)."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from clews_pipe.errors import ClewsError
from clews_pipe.datasets import catalogs
from clews_pipe.datasets.catalogs import TRACK_COLUMNS, load_catalog, youtube_id_from_url


def _touch(path, content=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _check_frame(df: pd.DataFrame):
    assert list(df.columns) == TRACK_COLUMNS
    assert df["track_id"].is_unique
    for column in TRACK_COLUMNS:
        assert all(isinstance(v, str) for v in df[column]), column
        assert pd.api.types.is_string_dtype(df[column]), column


def _dvi_entry(version, ytid, title=""):
    return {"version_id": version, "track_title": title, "youtube_id": ytid}


@pytest.fixture
def dvi(tmp_path):
    """Light splits in both spellings, audio with a case-variant folder, a missing file, .meta."""
    meta = tmp_path / "meta"
    meta.mkdir()
    train = {
        "C-0000001": [_dvi_entry("V-1", "abCDEFGHIJ1", "Song One"), _dvi_entry("V-2", "Xy_-0123456", "Song One (Live)")],
        "C-0000002": [_dvi_entry("V-3", "missingAAAA", "Gone")],  # single version, audio missing
    }
    val = {"C-0000003": [_dvi_entry("V-4", "q9zzzzzzzzz", "Third"), _dvi_entry("V-5", "Q9yyyyyyyyy", "Third again")]}
    test = {"C-0000004": [_dvi_entry("V-6", "t1aaaaaaaaa", "Four")]}
    (meta / "DiscogsVI-YT-20240701-light.json.train").write_text(json.dumps(train))
    (meta / "Discogs-VI-YT-20240701-light.json.val").write_text(json.dumps(val))  # dataset-repo spelling
    (meta / "DiscogsVI-YT-20240701-light.json.test").write_text(json.dumps(test))
    audio = tmp_path / "audio"
    _touch(audio / "AB" / "abCDEFGHIJ1.mp3")  # folder in upper case
    _touch(audio / "AB" / "abCDEFGHIJ1.meta", json.dumps({"artist": "The Band", "title": "Song One (YT)"}).encode())
    _touch(audio / "Xy" / "Xy_-0123456.mp4")
    _touch(audio / "Xy" / "Xy_-0123456.mp3")  # mp3 preferred over mp4
    _touch(audio / "Xy" / "Xy_-0123456.meta", b"{not json")  # unreadable .meta is ignored
    _touch(audio / "q9" / "q9zzzzzzzzz.m4a")
    _touch(audio / "Q9" / "Q9yyyyyyyyy.flac")  # both case variants exist as separate folders
    _touch(audio / "t1" / "t1aaaaaaaaa.opus")
    _touch(audio / "t1" / "t1aaaaaaaaa.txt")  # not audio
    return meta, audio


def test_discogs_light_folder(dvi):
    meta, audio = dvi
    df = load_catalog("discogs-vi", meta, audio)
    _check_frame(df)
    rows = df.set_index("track_id")
    assert len(df) == 6
    assert rows.loc["abCDEFGHIJ1", "path"] == str(audio.resolve() / "AB" / "abCDEFGHIJ1.mp3")
    assert rows.loc["Xy_-0123456", "path"].endswith("Xy_-0123456.mp3")
    assert rows.loc["q9zzzzzzzzz", "path"].endswith(os.path.join("q9", "q9zzzzzzzzz.m4a"))
    assert rows.loc["Q9yyyyyyyyy", "path"].endswith(os.path.join("Q9", "Q9yyyyyyyyy.flac"))
    assert rows.loc["t1aaaaaaaaa", "path"].endswith(".opus")
    assert rows.loc["abCDEFGHIJ1", ["clique", "version", "split"]].tolist() == ["C-0000001", "V-1", "train"]
    assert rows.loc["q9zzzzzzzzz", "split"] == "val" and rows.loc["t1aaaaaaaaa", "split"] == "test"
    # .meta fills artist/title; otherwise the split file's title stays
    assert rows.loc["abCDEFGHIJ1", ["artist", "title"]].tolist() == ["The Band", "Song One (YT)"]
    assert rows.loc["Xy_-0123456", ["artist", "title"]].tolist() == ["", "Song One (Live)"]
    # missing audio is recorded, not raised; single-version cliques are still listed
    missing = rows.loc["missingAAAA"]
    assert missing["status"] == "missing" and missing["path"] == ""
    assert "missingAAAA" in missing["error"] and "mi" in missing["error"]
    assert (df.loc[df["track_id"] != "missingAAAA", "status"] == "pending").all()
    assert (df.loc[df["track_id"] != "missingAAAA", "error"] == "").all()


def test_discogs_split_selection_and_single_file(dvi):
    meta, audio = dvi
    df = load_catalog("discogs-vi", meta, audio, splits=("val",))
    assert sorted(df["track_id"]) == ["Q9yyyyyyyyy", "q9zzzzzzzzz"]
    one = load_catalog("discogs-vi", meta / "Discogs-VI-YT-20240701-light.json.val", audio)
    assert set(one["split"]) == {"val"} and len(one) == 2
    _check_frame(one)


def test_discogs_lists_each_folder_once(dvi, monkeypatch):
    meta, audio = dvi
    calls = []
    real = os.scandir

    def spy(path="."):
        calls.append(os.fspath(path))
        return real(path)

    monkeypatch.setattr(catalogs.os, "scandir", spy)
    load_catalog("discogs-vi", meta, audio, read_meta_files=False)
    # the root once, then each needed two-letter folder once (AB, Xy, q9, Q9, t1), never per track
    assert len(calls) == len(set(calls)) == 6


def test_discogs_errors(dvi, tmp_path):
    meta, audio = dvi
    with pytest.raises(ClewsError, match="no Discogs-VI split file .*json.bogus"):
        load_catalog("discogs-vi", meta, audio, splits=("train", "bogus"))
    with pytest.raises(ClewsError, match="does not exist"):
        load_catalog("discogs-vi", tmp_path / "nowhere", audio)
    with pytest.raises(ClewsError, match="audio folder"):
        load_catalog("discogs-vi", meta, tmp_path / "no-audio")
    with pytest.raises(ClewsError, match="unknown dataset"):
        load_catalog("covers80", meta, audio)
    with pytest.raises(ClewsError, match="needs its metadata"):
        load_catalog("discogs-vi", None, audio)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "DiscogsVI-YT-20240701-light.json.train").write_text('{"C-1": [')
    with pytest.raises(ClewsError, match=r"light\.json\.train: not valid JSON"):
        load_catalog("discogs-vi", bad, audio, splits=("train",))
    (bad / "DiscogsVI-YT-20240701-light.json.train").write_text('{"C-1": [{"version_id": "V-1"}]}')
    with pytest.raises(ClewsError, match="without 'youtube_id'"):
        load_catalog("discogs-vi", bad, audio, splits=("train",))


def test_youtube_url_parsing():
    assert youtube_id_from_url("https://www.youtube.com/watch?v=Lf6OnUKMK-c") == "Lf6OnUKMK-c"
    assert youtube_id_from_url("https://www.youtube.com/watch?feature=x&v=Lf6OnUKMK-c&t=3s") == "Lf6OnUKMK-c"
    assert youtube_id_from_url("https://youtu.be/Lf6OnUKMK-c?t=1") == "Lf6OnUKMK-c"
    assert youtube_id_from_url("https://example.com/") == ""


def _jsonl_line(clique, versions):
    return json.dumps({"clique_id": clique, "versions": versions}) + "\n"


def _jsonl_version(version, urls, title="", artists=()):
    return {
        "version_id": version,
        "tracks": [{"title": title, "artists": [{"name": a} for a in artists]}],
        "youtube_video": [{"url": u, "title": "yt"} for u in urls],
    }


def test_discogs_full_jsonl(dvi, tmp_path):
    _, audio = dvi
    path = tmp_path / "full" / "Discogs-VI-YT-20240701.jsonl"
    path.parent.mkdir()
    path.write_text(
        _jsonl_line("C-0000001", [
            _jsonl_version("V-1", ["https://www.youtube.com/watch?v=abCDEFGHIJ1", "https://www.youtube.com/watch?v=zzzzzzzzzzz"],
                           "Song One", ["A", "B"]),
            _jsonl_version("V-2", []),  # no video: no track
        ])
        + "\n"
        + _jsonl_line("C-0000009", [_jsonl_version("V-9", ["https://www.youtube.com/watch?v=Xy_-0123456&t=1"], "Nine")])
    )
    df = load_catalog("discogs-vi", path, audio, read_meta_files=False)
    _check_frame(df)
    rows = df.set_index("track_id")
    assert sorted(df["track_id"]) == ["Xy_-0123456", "abCDEFGHIJ1"]  # first URL only
    assert rows.loc["abCDEFGHIJ1", ["clique", "version", "split", "title", "artist"]].tolist() == [
        "C-0000001", "V-1", "all", "Song One", "A, B"]
    assert rows.loc["Xy_-0123456", "status"] == "pending"
    # light split files beside the JSONL give the split
    (path.parent / "DiscogsVI-YT-20240701-light.json.test").write_text(json.dumps({"C-0000009": []}))
    df = load_catalog("discogs-vi", path, audio, splits=("test",), read_meta_files=False)
    assert df["track_id"].tolist() == ["Xy_-0123456"] and df["split"].tolist() == ["test"]
    path.write_text('{"clique_id": "C-1", "versions": []}\nnot json\n')
    with pytest.raises(ClewsError, match=r"\.jsonl:2:"):
        load_catalog("discogs-vi", path, audio)


@pytest.fixture
def shs(tmp_path):
    meta = tmp_path / "shs"
    meta.mkdir()
    (meta / "list").write_text(
        "0\t0\tYesterday\tThe Beatles\thttps://www.youtube.com/watch?v=aaaaaaaaaaa\tT\n"
        "0\t1\tYesterday\t\"Boyz\" II Men\thttps://www.youtube.com/watch?v=bbbbbbbbbbb\tT\n"
        "12\t0\tSong\tSomeone\thttps://www.youtube.com/watch?v=ccccccccccc\tT\n"
        "12\t3\tSong\tOther\thttps://www.youtube.com/watch?v=ddddddddddd\tF\n"
    )
    (meta / "SHS100K-TRAIN").write_text("0\t0\n0\t1\n")
    (meta / "SHS100K-VAL").write_text("12\t0\n")
    (meta / "SHS100K-TEST").write_text("12\t3\n")
    audio = tmp_path / "shs-audio"
    _touch(audio / "0-" / "0-0.mp3")
    _touch(audio / "0-" / "0-1.m4a")
    _touch(audio / "12" / "12-0.mp3")
    return meta, audio


def test_shs100k(shs):
    meta, audio = shs
    df = load_catalog("shs100k", meta, audio)
    _check_frame(df)
    rows = df.set_index("track_id")
    assert sorted(df["track_id"]) == ["0-0", "0-1", "12-0", "12-3"]
    assert rows.loc["0-1", ["clique", "version", "split", "title", "artist"]].tolist() == [
        "0", "1", "train", "Yesterday", '"Boyz" II Men']
    assert rows.loc["0-1", "path"].endswith(os.path.join("0-", "0-1.m4a"))
    assert rows.loc["12-0", "split"] == "val"
    assert rows.loc["12-3", ["split", "status", "path"]].tolist() == ["test", "missing", ""]
    assert "12-3" in rows.loc["12-3", "error"]
    only_val = load_catalog("shs100k", meta / "list", audio, splits=("val",))
    assert only_val["track_id"].tolist() == ["12-0"]


def test_shs100k_header_no_splits_and_errors(shs, tmp_path):
    meta, audio = shs
    lst = meta / "list"
    lst.write_text("set_id\tver_id\ttitle\tperformer\turl\tstatus\n" + lst.read_text())
    for name in ("SHS100K-TRAIN", "SHS100K-VAL", "SHS100K-TEST"):
        (meta / name).unlink()
    df = load_catalog("shs100k", meta, audio)
    assert len(df) == 4 and set(df["split"]) == {"all"}
    (meta / "SHS100K-TRAIN").write_text("0\t0\n")
    with pytest.raises(ClewsError, match="SHS100K-VAL"):
        load_catalog("shs100k", meta, audio)
    (meta / "SHS100K-TRAIN").write_text("0\t0\n77\t1\n")
    with pytest.raises(ClewsError, match="not in the list, e.g. 77-1"):
        load_catalog("shs100k", meta, audio, splits=("train",))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ClewsError, match="no SHS100K 'list' file"):
        load_catalog("shs100k", empty, audio)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "music"
    _touch(root / "a.mp3")
    _touch(root / "sub" / "b.flac")
    _touch(root / "sub" / "deeper" / "c.wav")
    _touch(root / "sub" / "deeper" / "c.ogg")  # same track_id: ogg preferred over wav (AUDIO_EXTENSIONS order)
    _touch(root / "sub" / "deeper" / "c.meta", json.dumps({"artist": "Cee", "title": "See"}).encode())
    _touch(root / "notes.txt")
    return root


def test_folder_without_csv(folder):
    df = load_catalog("folder", None, folder)
    _check_frame(df)
    assert df["track_id"].tolist() == ["a", "sub/b", "sub/deeper/c"]
    assert (df["clique"] == df["track_id"]).all() and set(df["split"]) == {"all"}
    rows = df.set_index("track_id")
    assert rows.loc["sub/deeper/c", "path"].endswith("c.ogg")
    assert rows.loc["sub/deeper/c", ["artist", "title"]].tolist() == ["Cee", "See"]


def test_folder_with_csv(folder, tmp_path):
    csv = tmp_path / "cliques.csv"
    csv.write_text("track,clique,split\na.mp3,song1,train\nsub/b,song1,train\nsub/deeper/c,song2,test\nghost,song2,train\n")
    df = load_catalog("folder", csv, folder, splits=("train",))
    _check_frame(df)
    rows = df.set_index("track_id")
    assert sorted(df["track_id"]) == ["a", "ghost", "sub/b"]
    assert rows.loc["a", "clique"] == "song1" and rows.loc["a", "status"] == "pending"
    assert rows.loc["ghost", "status"] == "missing" and "ghost" in rows.loc["ghost", "error"]
    csv.write_text("name,clique\nx,y\n")
    with pytest.raises(ClewsError, match="missing 'track'"):
        load_catalog("folder", csv, folder)
