"""Issue 10: every case that printed a traceback prints one ``error:`` line (exit != 0) instead."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from clews_pipe.cli.app import main
from clews_pipe.embeddings.npz_format import Embeddings, save_embeddings

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny-cpu.yaml"
SPLIT_PREFIX = "DiscogsVI-YT-20240701-light.json"


def one_error_line(capsys, code) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code not in (0, None), captured
    assert "Traceback" not in captured.err + captured.out, captured.err[-2000:]
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


def _embeddings(path: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    emb = Embeddings(z=rng.standard_normal((n, 3, 8)).astype(np.float32), mask=np.zeros((n, 3), bool),
                     clique=np.arange(n) // 2, track=np.array([f"t{i}" for i in range(n)]), queries={})
    save_embeddings(path, emb)
    return path


# ------------------------------------------------------------------------------- metadata


@pytest.mark.parametrize("youtube_id", [["a", "b"], None, 12, ""])
def test_youtube_id_that_is_not_a_string(tmp_path, capsys, youtube_id):
    meta, audio = tmp_path / "m", tmp_path / "a"
    meta.mkdir()
    audio.mkdir()
    (meta / f"{SPLIT_PREFIX}.train").write_text(json.dumps({"C-1": [{"youtube_id": youtube_id}]}))
    for split in ("val", "test"):
        (meta / f"{SPLIT_PREFIX}.{split}").write_text("{}")
    code = main(["extract", "--dataset", "discogs-vi", "--meta", str(meta), "--audio", str(audio),
                 "--out", str(tmp_path / "s"), "--quiet"])
    line = one_error_line(capsys, code)
    assert f"{SPLIT_PREFIX}.train" in line and "C-1" in line and "youtube_id" in line


def test_all_split_files_empty(tmp_path, capsys):
    meta, audio = tmp_path / "m", tmp_path / "a"
    meta.mkdir()
    audio.mkdir()
    for split in ("train", "val", "test"):
        (meta / f"{SPLIT_PREFIX}.{split}").write_text("{}")
    code = main(["extract", "--dataset", "discogs-vi", "--meta", str(meta), "--audio", str(audio),
                 "--out", str(tmp_path / "s"), "--quiet"])
    assert "no tracks" in one_error_line(capsys, code)
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------------------- train config


@pytest.mark.parametrize("override, key", [
    ("training.lr=${missing}", "training.lr"),
    ("fabric.accelerator=tpu", "fabric"),
    ("fabric.strategy=bogus", "fabric"),
])
def test_bad_train_settings(extracted_demo_store, tmp_path, capsys, override, key):
    code = main(["train", str(TINY), "--store", str(extracted_demo_store), "--out", str(tmp_path / "run"),
                 "training.epochs=1", "data.workers=0", override])
    assert key in one_error_line(capsys, code)


def test_gpu_accelerator_without_a_gpu(extracted_demo_store, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code = main(["train", str(TINY), "--store", str(extracted_demo_store), "--out", str(tmp_path / "run"),
                 "training.epochs=1", "fabric.accelerator=gpu"])
    assert "fabric.accelerator" in one_error_line(capsys, code)


# ------------------------------------------------------------------------------- npz files


def test_npz_with_an_object_array(tmp_path, capsys):
    path = tmp_path / "obj.npz"
    np.savez(path, z=np.array([{"a": 1}] * 6, dtype=object), mask=np.zeros((6, 1), bool),
             clique=np.arange(6), track=np.array([f"t{i}" for i in range(6)]))
    code = main(["evaluate", "--embeddings", str(path), "--out", str(tmp_path / "o"), "--quiet"])
    line = one_error_line(capsys, code)
    assert "obj.npz" in line and "'z'" in line and "object" in line


def test_npz_with_a_bad_member_crc(tmp_path, capsys):
    path = _embeddings(tmp_path / "crc.npz")
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("z.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200  # inside z's data
    raw[start] ^= 0xFF
    path.write_bytes(bytes(raw))
    code = main(["evaluate", "--embeddings", str(path), "--out", str(tmp_path / "o"), "--quiet"])
    line = one_error_line(capsys, code)
    assert "crc.npz" in line


def test_npz_with_no_tracks(tmp_path, capsys):
    path = tmp_path / "empty.npz"
    np.savez(path, z=np.zeros((0, 3, 8), np.float32), mask=np.zeros((0, 3), bool),
             clique=np.zeros(0, np.int64), track=np.array([], dtype=str))
    code = main(["evaluate", "--embeddings", str(path), "--out", str(tmp_path / "o"), "--quiet"])
    assert "empty.npz" in one_error_line(capsys, code)


# ------------------------------------------------------------------------------- outputs


def test_evaluate_out_is_a_file(tmp_path, capsys):
    emb = _embeddings(tmp_path / "e.npz")
    blocker = tmp_path / "out-file"
    blocker.write_text("x")
    code = main(["evaluate", "--embeddings", str(emb), "--out", str(blocker), "--quiet"])
    assert "out-file" in one_error_line(capsys, code)
    assert blocker.read_text() == "x"


def test_embed_out_is_a_file(official_tiny, tmp_path, capsys):
    import soundfile as sf

    audio = tmp_path / "song.wav"
    sf.write(audio, np.zeros(16000 * 3, np.float32) + 0.01, 16000)
    blocker = tmp_path / "out-file"
    blocker.write_text("x")
    code = main(["embed", str(official_tiny / "checkpoint_best.ckpt"), str(audio), "--out", str(blocker), "--quiet"])
    assert "out-file" in one_error_line(capsys, code)


def test_index_build_out_is_a_directory_and_leaves_nothing(tmp_path, capsys):
    emb = _embeddings(tmp_path / "e.npz")
    target = tmp_path / "idx"
    target.mkdir()
    code = main(["index", "build", str(emb), "--out", str(target)])
    assert "idx" in one_error_line(capsys, code)
    assert sorted(os.listdir(tmp_path)) == ["e.npz", "idx"] and os.listdir(target) == []


def test_checkpoint_import_out_is_a_directory(official_tiny, tmp_path, capsys):
    target = tmp_path / "ckpt"
    target.mkdir()
    code = main(["checkpoint", "import", str(official_tiny / "checkpoint_best.ckpt"), "--out", str(target)])
    assert "ckpt" in one_error_line(capsys, code)
    assert os.listdir(target) == [] and sorted(os.listdir(tmp_path)) == ["ckpt"]


# ------------------------------------------------------------------------------- DDP timeout


def test_ddp_timeout_is_configurable_and_well_under_the_torch_default():
    from datetime import timedelta

    from omegaconf import OmegaConf

    from clews_pipe.model.run_config import load_train_config
    from clews_pipe.training.loop import make_fabric

    conf = load_train_config(TINY, ["fabric.devices=2", "fabric.accelerator=cpu", "fabric.strategy=ddp"])
    assert conf.fabric.timeout <= 900  # torch's default for gloo/CPU is 30 min
    fabric = make_fabric(conf.fabric)
    assert fabric.strategy._timeout == timedelta(seconds=conf.fabric.timeout)
    conf = load_train_config(TINY, ["fabric.devices=2", "fabric.accelerator=cpu", "fabric.timeout=42"])
    assert make_fabric(conf.fabric).strategy._timeout == timedelta(seconds=42)
    with pytest.raises(Exception, match="fabric.timeout"):
        load_train_config(TINY, ["fabric.timeout=0"])
    assert OmegaConf.select(conf, "fabric.timeout") == 42
