"""`clews-pipe train`: real Fabric runs (1 process and 2-process CPU DDP with gloo) on a small demo store."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clews_pipe.cli.app import main

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny-cpu.yaml"
CLI = [sys.executable, "-m", "clews_pipe.cli.app"]
# Small and quick: 2 anchors per step, 40 s blocks (2 shingles), no DataLoader workers.
QUICK = ["training.batch_size=2", "data.block_len=40", "data.workers=0"]


def _rows(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as fh:
        return list(csv.DictReader(fh))


def _train_cli(store: Path, run: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [*CLI, "train", str(TINY), "--store", str(store), "--out", str(run), *QUICK, *overrides],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_two_process_ddp_trains_then_resumes_at_epoch_3(extracted_demo_store, tmp_path):
    run = tmp_path / "ddp"
    ddp = ["fabric.devices=2", "fabric.strategy=ddp", "fabric.accelerator=cpu"]
    first = _train_cli(extracted_demo_store, run, "training.epochs=2", *ddp)
    assert first.returncode == 0, first.stderr[-3000:]
    rows = _rows(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for r in rows:
        for key in ("train_loss", "val_loss", "val_MAP", "val_NAR"):
            assert np.isfinite(float(r[key])), (key, r)
        assert 0.0 <= float(r["data_wait_fraction"]) <= 1.0
        assert float(r["segments_per_s"]) > 0
    for name in ("configuration.yaml", "checkpoint_last.ckpt", "checkpoint_best.ckpt"):
        assert (run / name).is_file()
    state = torch.load(run / "checkpoint_last.ckpt", weights_only=True)
    assert state["epoch"] == 2 and set(state) >= {"model", "optimizer", "scheduler", "config"}
    assert "rng" not in state  # every epoch reseeds from (seed, epoch, rank): nothing to restore

    again = _train_cli(extracted_demo_store, run, "training.epochs=3", *ddp)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "at epoch 3" in again.stdout + again.stderr
    assert [int(r["epoch"]) for r in _rows(run)] == [1, 2, 3]
    assert torch.load(run / "checkpoint_last.ckpt", weights_only=True)["epoch"] == 3


def test_resume_continues_the_same_rng_stream(extracted_demo_store, tmp_path):
    """1 epoch + resume to 2 epochs gives the weights of 2 uninterrupted epochs."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    args = [*QUICK, "fabric.devices=1"]
    base = ["train", str(TINY), "--store", str(extracted_demo_store)]
    assert main([*base, "--out", str(straight), *args, "training.epochs=2"]) == 0
    assert main([*base, "--out", str(resumed), *args, "training.epochs=1"]) == 0
    assert main([*base, "--out", str(resumed), *args, "training.epochs=2"]) == 0
    a = torch.load(straight / "checkpoint_last.ckpt", weights_only=True)["model"]
    b = torch.load(resumed / "checkpoint_last.ckpt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert _rows(straight)[1]["train_loss"] == _rows(resumed)[1]["train_loss"]


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, capsys):
    from clews_pipe.store import create_store

    store = tmp_path / "nan.store"
    writer = create_store(store)
    records, feats = [], []
    for i in range(8):
        split = "train" if i < 4 else "val"
        frames = np.full((300, 84), np.nan, dtype=np.float16)
        records.append(
            dict(track_id=f"t{i}", clique=f"c{i // 2}", version=f"v{i}", split=split, title="", artist="",
                 path="", duration=30.0, status="ok", error="")
        )
        feats.append(frames)
    writer.write_part("p0", records, feats)
    writer.consolidate()
    code = main(["train", str(TINY), "--store", str(store), "--out", str(tmp_path / "run"), *QUICK])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert "error: training loss is nan at epoch 1" in err[-1]  # after the progress bar's carriage return


def test_bad_inputs_are_one_line(extracted_demo_store, tmp_path, capsys):
    cases = [
        (["data.train_split=nosuch"], "nosuch"),
        (["training.nosuchkey=1"], "training.nosuchkey"),
        (["training.epochs=two"], "training.epochs"),
    ]
    for overrides, needle in cases:
        code = main(["train", str(TINY), "--store", str(extracted_demo_store), "--out", str(tmp_path / "r"), *QUICK, *overrides])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, overrides
        assert len(err) >= 1 and err[-1].startswith("error:") and needle in err[-1], err
    code = main(["train", str(TINY), "--store", str(tmp_path / "nostore"), "--out", str(tmp_path / "r2"), *QUICK])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "nostore" in err[-1]


def test_monitor_value():
    from clews_pipe.training.loop import monitor_value

    assert monitor_value("nar_map", 0.75, 4.0) == pytest.approx((0.04 * 0.25) ** 0.5)
    assert monitor_value("map", 0.8, 3.0) == -0.8


def test_bf16_mixed_precision_runs_the_model_under_autocast(extracted_demo_store, tmp_path):
    base = ["train", str(TINY), "--store", str(extracted_demo_store), *QUICK, "training.epochs=1"]
    assert main([*base, "--out", str(tmp_path / "fp32")]) == 0
    assert main([*base, "--out", str(tmp_path / "bf16"), "fabric.precision=bf16-mixed"]) == 0
    fp32, bf16 = _rows(tmp_path / "fp32")[0], _rows(tmp_path / "bf16")[0]
    assert np.isfinite(float(bf16["train_loss"])) and np.isfinite(float(bf16["val_loss"]))
    # Same seed and batches: only the precision of the model's arithmetic differs.
    assert bf16["train_loss"] != fp32["train_loss"]
    assert abs(float(bf16["train_loss"]) - float(fp32["train_loss"])) < 0.5
