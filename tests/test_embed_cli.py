"""``clews-pipe embed``: the published fixture's embeddings, mixed containers, broken files, batching."""


import numpy as np
import pytest
import soundfile as sf
import torch

from clews_pipe.cli.app import main
from clews_pipe.embeddings.from_audio import collect_audio_jobs, load_file_embedding
from clews_pipe.audio.decode import decode_audio
from clews_pipe.model.checkpoint import load_model


# Decoding input.flac ourselves differs from the fixture's float waveform by 16-bit quantisation
# (max 1.6e-5 in the waveform); through the model that measured 9.2e-7 max abs on embeddings whose
# largest entry is 0.124 (the CQTPrepare noise, 1e-6·U(0,1), adds the same order). Tolerance: ~4x.
EMBED_ATOL = 4e-6
# Same decoded waveform, embedded alone vs packed with other files' shingles: only the CQTPrepare
# noise draws differ (measured 2.2e-8 max abs); tolerance ~10x.
PACKING_ATOL = 2e-7


def test_embed_fixture_matches_published(official_tiny, tmp_path, capsys):
    FIXTURE = official_tiny
    OFFICIAL = official_tiny / "checkpoint_best.ckpt"
    out = tmp_path / "emb"
    code = main(["embed", str(OFFICIAL), str(FIXTURE / "input.flac"), "--out", str(out), "--hop", "5", "--len", "20",
                 "--batch", "3", "--quiet"])
    assert code == 0, capsys.readouterr().err
    data = np.load(out / "input.flac.npz")
    expected = np.load(FIXTURE / "embedding.npy")
    assert data["z"].shape == expected.shape == (7, 48) and data["z"].dtype == np.float32
    assert np.abs(data["z"] - expected).max() <= EMBED_ATOL
    np.testing.assert_array_equal(data["starts"], [0, 5, 10, 15, 20, 25, 30])
    assert float(data["duration"]) == pytest.approx(47.0, abs=1e-3)
    assert str(data["source"]) == str(FIXTURE / "input.flac")


def _tone(seconds: float, freq: float, sr: int = 22050, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    return np.stack([wave, 0.5 * wave], axis=1) if channels == 2 else wave


@pytest.fixture(scope="module")
def mixed_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("audio")
    (root / "a" / "b").mkdir(parents=True)
    (root / "c").mkdir()
    sr = 22050
    sf.write(root / "one.wav", _tone(4.0, 220.0), sr)
    sf.write(root / "a" / "two.flac", _tone(3.0, 330.0, channels=2), sr)
    sf.write(root / "a" / "b" / "three.ogg", _tone(27.0, 440.0), sr, format="OGG", subtype="VORBIS")
    sf.write(root / "c" / "four.mp3", _tone(5.0, 262.0), sr, format="MP3", subtype="MPEG_LAYER_III")
    (root / "c" / "broken.mp3").write_bytes(b"ID3 this is not an mp3 stream at all" * 20)
    (root / "c" / "notes.txt").write_text("not audio, not an audio extension: ignored")
    return root


def test_embed_mixed_containers_mirror_tree_and_skip_broken(official_tiny, mixed_tree, tmp_path, capsys):
    OFFICIAL = official_tiny / "checkpoint_best.ckpt"
    out = tmp_path / "emb"
    code = main(["embed", str(OFFICIAL), str(mixed_tree), "--out", str(out), "--hop", "5", "--len", "20",
                 "--batch", "2", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npz"))
    assert written == ["a/b/three.ogg.npz", "a/two.flac.npz", "c/four.mp3.npz", "one.wav.npz"]
    skipped = [line for line in captured.err.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 1 and str(mixed_tree / "c" / "broken.mp3") in skipped[0]
    assert "embedded 4 of 5" in captured.out

    # independent computation: each file alone through decode → prepare → embed, no packing
    model, _ = load_model(OFFICIAL)
    for rel, seconds in [("one.wav", 4.0), ("a/two.flac", 3.0), ("a/b/three.ogg", 27.0), ("c/four.mp3", 5.0)]:
        wave = decode_audio(mixed_tree / rel).waveform
        with torch.no_grad():
            expected = model.embed(model.prepare(torch.from_numpy(wave)[None], 20, 5))[0].numpy()
        got = load_file_embedding(out / f"{rel}.npz")
        n_expected = max(int(np.ceil((seconds - 20) / 5)), 0) + 1  # 1 for the short files, 3 for 27 s
        assert got.z.shape == (n_expected, 48) == expected.shape
        assert np.abs(got.z - expected).max() <= PACKING_ATOL
        np.testing.assert_allclose(got.starts, np.arange(n_expected) * 5.0)
        assert got.duration == pytest.approx(seconds, abs=0.06)  # mp3 encoder delay/padding


def test_all_broken_exits_nonzero(official_tiny, tmp_path, capsys):
    OFFICIAL = official_tiny / "checkpoint_best.ckpt"
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.wav").write_bytes(b"RIFF....garbage")
    (bad / "y.flac").write_bytes(b"")
    code = main(["embed", str(OFFICIAL), str(bad), "--out", str(tmp_path / "emb"), "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and code != 2
    assert f"skipped {bad / 'x.wav'}" in err and f"skipped {bad / 'y.flac'}" in err
    assert "no file could be embedded" in err
    assert not list((tmp_path / "emb").rglob("*.npz")) if (tmp_path / "emb").exists() else True


def test_no_audio_and_missing_path_are_one_line_errors(official_tiny, tmp_path, capsys):
    OFFICIAL = official_tiny / "checkpoint_best.ckpt"
    (tmp_path / "empty").mkdir()
    assert main(["embed", str(OFFICIAL), str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no audio files found" in capsys.readouterr().err
    assert main(["embed", str(OFFICIAL), str(tmp_path / "missing.wav"), "--out", str(tmp_path / "o")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_output_names_are_the_input_name_plus_npz(tmp_path):
    for name in ("a.wav", "a.mp3", "b.flac"):
        (tmp_path / name).write_bytes(b"x")
    jobs = collect_audio_jobs([tmp_path])
    assert sorted(j.relative_out.as_posix() for j in jobs) == ["a.mp3.npz", "a.wav.npz", "b.flac.npz"]
    (tmp_path / "a.mp3").unlink()  # what else is in the folder does not change a name
    assert sorted(j.relative_out.as_posix() for j in collect_audio_jobs([tmp_path])) == ["a.wav.npz", "b.flac.npz"]


@pytest.mark.parametrize("batch", ["1", "2", "32"])
def test_broken_file_among_good_ones_is_skipped_not_an_empty_output(official_tiny, tmp_path, capsys, batch):
    """Files that do not decode (no samples; garbage), between files whose shingles are still queued,
    are reported and counted as skipped; they never become (0, D) outputs (index build tripped on
    those). Output names are the input's name plus .npz, whatever else is in the folder."""
    tree = tmp_path / "in"
    tree.mkdir()
    sf.write(tree / "a.wav", _tone(4.0, 220.0), 22050)
    sf.write(tree / "b.wav", np.zeros(0), 22050)  # a valid header, no samples
    sf.write(tree / "c.wav", _tone(4.0, 330.0), 22050)
    (tree / "d.mp3").write_bytes(b"ID3 this is not an mp3 stream at all" * 20)
    sf.write(tree / "e.wav", _tone(4.0, 440.0), 22050)
    out = tmp_path / "emb"
    code = main(["embed", str(official_tiny / "checkpoint_best.ckpt"), str(tree), "--out", str(out),
                 "--batch", batch, "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npz"))
    assert written == ["a.wav.npz", "c.wav.npz", "e.wav.npz"], written
    for path in out.rglob("*.npz"):
        assert load_file_embedding(path).z.shape[0] >= 1
    assert "embedded 3 of 5 file(s)" in captured.out and "2 skipped" in captured.out
    skipped = sorted(line.split(":")[0] for line in captured.err.splitlines() if line.startswith("skipped"))
    assert skipped == [f"skipped {tree / 'b.wav'}", f"skipped {tree / 'd.mp3'}"]
