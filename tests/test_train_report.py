"""Training reports itself: start banner, validation progress, end summary, one TensorBoard run across
resumes with per-step scalars and the hyper-parameters, changed settings on a resume listed and ignored,
a warning for a validation split too small to rank models."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny-cpu.yaml"
QUICK = ["training.batch_size=2", "data.block_len=40", "data.workers=0"]


def _train(store: Path, run: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", CLEWS_PROGRESS_SECONDS="0.001")
    return subprocess.run([sys.executable, "-m", "clews_pipe.cli.app", "train", str(TINY), "--store", str(store),
                           "--out", str(run), *QUICK, *overrides], capture_output=True, text=True, env=env, timeout=600)


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = sorted((run / "tensorboard").iterdir())
    assert [r.name for r in runs] == ["version_0"], runs  # one run across resumes
    acc = EventAccumulator(str(runs[0]))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.fixture(scope="module")
def trained(extracted_demo_store, tmp_path_factory):
    run = tmp_path_factory.mktemp("report") / "run"
    first = _train(extracted_demo_store, run, "training.epochs=1")
    again = _train(extracted_demo_store, run, "training.epochs=2", "training.lr=0.01", "training.batch_size=3")
    return run, first, again


def test_banner_progress_and_summary(trained, extracted_demo_store):
    from clews_pipe.store import open_store

    run, first, _ = trained
    assert first.returncode == 0, first.stderr[-3000:]
    text = first.stdout + first.stderr
    train = open_store(extracted_demo_store).tracks("train")
    sizes = train["clique"].value_counts()
    kept = sizes[sizes >= 2]
    assert f"train: {int(kept.sum())} tracks in {len(kept)} cliques" in text, text  # independent count from the index
    assert "parameters" in text and "precision 32" in text
    assert "validate epoch 1" in text  # validation progress lines
    assert f"checkpoints: {run / 'checkpoint_best.ckpt'} (best)" in text and "best epoch 1" in text


def test_resume_lists_and_ignores_changed_settings(trained):
    run, _, again = trained
    assert again.returncode == 0, again.stderr[-3000:]
    text = again.stdout + again.stderr
    assert "ignoring the changed training.batch_size 2 -> 3, training.lr 0.002 -> 0.01" in text, text
    with (run / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["lr"]) == pytest.approx(0.002)  # the run's own learning rate, not 0.01
    state = torch.load(run / "checkpoint_last.ckpt", weights_only=True)
    assert state["config"]["training"]["batch_size"] == 2 and state["config"]["training"]["epochs"] == 2


def test_one_tensorboard_run_with_step_scalars(trained):
    run, _, _ = trained
    scalars = _scalars(run)
    epochs = [step for step, _ in scalars["metrics/val_MAP"]]
    assert epochs == [1, 2]
    assert "step/loss" in scalars and "step/lr" in scalars
    steps = [s for s, _ in scalars["step/loss"]]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)


def test_small_validation_split_is_warned(trained):
    _, first, _ = trained
    # the demo store's val split has 2 cliques: too few to rank models
    assert "warning: the validation split has 2 clique(s)" in first.stdout + first.stderr


def test_finished_run_says_so(trained, extracted_demo_store):
    run, _, _ = trained
    done = _train(extracted_demo_store, run, "training.epochs=2")
    assert done.returncode == 0
    assert "nothing to do" in done.stdout + done.stderr
