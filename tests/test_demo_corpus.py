"""The synthetic Discogs-VI corpus: layout, catalog round trip, determinism, musical structure."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from clews_pipe.cli.app import main
from clews_pipe.errors import ClewsError
from clews_pipe.audio.decode import decode_audio
from clews_pipe.datasets.catalogs import load_catalog
from clews_pipe.datasets.demo_corpus import SPLIT_FILE_PREFIX, _make_song, _render_version, generate_corpus

YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")


def test_layout_and_split_files(demo_corpus):
    root, audio = demo_corpus.root, demo_corpus.audio
    seen_cliques: dict[str, str] = {}
    ids = []
    for split in ("train", "val", "test"):
        content = json.loads((root / f"{SPLIT_FILE_PREFIX}.{split}").read_text())
        assert len(content) == demo_corpus["splits"][split]["cliques"] > 0
        for clique, versions in content.items():
            assert re.fullmatch(r"C-\d{7}", clique) and clique not in seen_cliques  # split by clique
            seen_cliques[clique] = split
            assert 2 <= len(versions) <= 3
            for entry in versions:
                assert set(entry) == {"version_id", "track_title", "youtube_id"}
                assert re.fullmatch(r"V-\d{7}", entry["version_id"]) and YOUTUBE_ID.match(entry["youtube_id"])
                ytid = entry["youtube_id"]
                files = [p for p in (audio / ytid[:2]).iterdir() if p.stem == ytid and p.suffix != ".meta"]
                assert len(files) == 1
                meta = json.loads((audio / ytid[:2] / f"{ytid}.meta").read_text())
                assert meta["title"] == entry["track_title"] and meta["artist"]
                ids.append(ytid)
    assert len(ids) == len(set(ids)) == demo_corpus["tracks"]
    assert set(demo_corpus["formats"]) == {"mp3", "flac", "ogg", "wav"}
    assert max(demo_corpus["formats"], key=demo_corpus["formats"].get) == "mp3"


def test_catalog_round_trip(demo_corpus, demo_catalog):
    df = demo_catalog
    assert len(df) == demo_corpus["tracks"] and (df["status"] == "pending").all()
    counts = df.groupby("split")["clique"].nunique().to_dict()
    assert counts == {s: v["cliques"] for s, v in demo_corpus["splits"].items()}
    assert all(Path(p).is_file() for p in df["path"])
    assert (df["artist"] != "").all() and (df["title"] != "").all()


def test_every_track_decodes_to_its_length(demo_catalog):
    for path in demo_catalog["path"]:
        out = decode_audio(path)
        assert not out.truncated, out.note
        assert 20.0 - 0.05 <= out.duration <= 32.0 + 0.1
        assert 0.2 < np.abs(out.waveform).max() <= 1.0


def _chroma(x: np.ndarray, sr: int, n_fft: int = 4096, hop: int = 1024) -> np.ndarray:
    """Per-frame pitch-class energy from a plain numpy STFT (independent of the CQT code):
    log power per FFT bin, averaged per semitone (MIDI 40-96) so each pitch counts once,
    folded onto 12 classes, centred and unit-normalised per frame."""
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    midi = np.round(69 + 12 * np.log2(np.maximum(freqs, 1e-3) / 440.0)).astype(int)
    band = (midi >= 40) & (midi <= 96)
    bins_per_note = np.bincount(midi[band] - 40, minlength=57)
    weights = np.zeros((band.sum(), 12))
    weights[np.arange(band.sum()), midi[band] % 12] = 1.0 / bins_per_note[midi[band] - 40]
    chroma = np.log1p(1e3 * power[:, band] / power.max()) @ weights
    chroma -= chroma.mean(axis=1, keepdims=True)
    return chroma / (np.linalg.norm(chroma, axis=1, keepdims=True) + 1e-9)


def _transition_profile(x: np.ndarray, sr: int, lag: int = 4) -> np.ndarray:
    """Pitch-class co-occurrence between frames ``lag`` apart (12 x 12): melody + harmony."""
    chroma = _chroma(x, sr)
    return chroma[:-lag].T @ chroma[lag:] / len(chroma)


def test_versions_alike_cliques_apart(demo_catalog):
    profiles = [_transition_profile(decode_audio(p).waveform, 16000) for p in demo_catalog["path"]]
    flat = np.stack([m.ravel() / np.linalg.norm(m) for m in profiles])
    # transposition-invariant similarity: the best of the 12 pitch shifts (both axes rolled)
    sim = np.full((len(flat), len(flat)), -np.inf)
    for k in range(12):
        shifted = np.stack([np.roll(m, (k, k), axis=(0, 1)).ravel() / np.linalg.norm(m) for m in profiles])
        sim = np.maximum(sim, flat @ shifted.T)
    cliques = demo_catalog["clique"].to_numpy()
    same = cliques[:, None] == cliques[None, :]
    off_diagonal = ~np.eye(len(cliques), dtype=bool)
    intra, inter = sim[same & off_diagonal].mean(), sim[~same].mean()
    assert intra > inter + 0.1, (intra, inter)
    nearest = np.where(off_diagonal, sim, -np.inf).argmax(axis=1)
    assert (cliques[nearest] == cliques).mean() >= 0.5  # chance is about 1/8


def test_version_parameters_in_range():
    song = _make_song(seed=7, clique_index=0)
    shifts, tempos = [], []
    for v in range(40):
        wave, params = _render_version(song, 7, 0, v, duration=0.5, sr=8000)
        assert wave.dtype == np.float32 and wave.shape == (4000,) and np.isfinite(wave).all()
        assert set(params["form"]) <= set(song.form) and len(params["form"]) >= 2
        shifts.append(params["shift"])
        tempos.append(params["tempo"])
    assert min(shifts) >= -6 and max(shifts) <= 6 and len(set(shifts)) > 5
    assert min(tempos) >= 0.7 and max(tempos) <= 1.4


def _digest(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            rel = str(p.relative_to(root))
            if p.suffix == ".ogg":  # libsndfile draws a random Ogg stream serial: compare the audio
                data = decode_audio(p).waveform
                out[rel] = hashlib.md5(data.tobytes()).hexdigest()
            else:
                out[rel] = hashlib.md5(p.read_bytes()).hexdigest()
    return out


def test_deterministic_for_a_seed(tmp_path):
    kw = dict(cliques=3, versions_min=2, versions_max=3, duration_min=3.0, duration_max=4.0,
              formats=("mp3", "ogg", "flac", "wav"))
    a = generate_corpus(tmp_path / "a", seed=11, workers=1, **kw)
    b = generate_corpus(tmp_path / "b", seed=11, workers=2, **kw)  # process count does not matter
    generate_corpus(tmp_path / "c", seed=12, workers=1, **kw)
    assert {k: v for k, v in a.items() if k not in ("root", "audio", "meta", "elapsed_s")} == {
        k: v for k, v in b.items() if k not in ("root", "audio", "meta", "elapsed_s")
    }
    da, db = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert da == db and any(k.endswith(".ogg") for k in da)
    assert set(_digest(tmp_path / "c")).isdisjoint(k for k in da if k.startswith("audio"))


def test_bad_arguments(tmp_path):
    with pytest.raises(ClewsError, match="cliques"):
        generate_corpus(tmp_path, cliques=0)
    with pytest.raises(ClewsError, match="versions_min"):
        generate_corpus(tmp_path, cliques=1, versions_min=4, versions_max=3)
    with pytest.raises(ClewsError, match="formats"):
        generate_corpus(tmp_path, cliques=1, formats=("aiff",))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ClewsError, match="not a directory"):
        generate_corpus(tmp_path / "file", cliques=1)


def test_cli(tmp_path, capsys):
    out = tmp_path / "corpus"
    rc = main(["demo-corpus", str(out), "--cliques", "3", "--seed", "5", "--versions-min", "2", "--versions-max", "2",
               "--duration-min", "2", "--duration-max", "3", "--workers", "1", "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tracks"] == 6 and summary["cliques"] == 3
    df = load_catalog("discogs-vi", out, out / "audio")
    assert len(df) == 6 and (df["status"] == "pending").all()
    rc = main(["demo-corpus", str(tmp_path / "x"), "--cliques", "1", "--versions-min", "3", "--versions-max", "2"])
    assert rc == 2 and "error: need 1 <= versions_min" in capsys.readouterr().err
