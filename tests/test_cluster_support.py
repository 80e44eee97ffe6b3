"""The library side of the SLURM support, without a cluster (the real-cluster tests are in
tests/cluster/, ``make test-cluster``): dask-jobqueue settings, progress lines in batch logs,
CPU allocation, and the stop signal of the training loop."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask.config
import dask_jobqueue  # noqa: F401  (its defaults loaded before dask.config.set, which restores on exit)
import torch

from clews_pipe.extract.cluster import slurm_cluster_kwargs, slurm_job_script
from clews_pipe.extract.config import load_extract_config
from clews_pipe.progress import PlainProgress
from clews_pipe.resources import allocated_cpus, threads_per_rank

REPO = Path(__file__).resolve().parents[1]


def test_site_jobqueue_config_applies_where_the_clews_config_sets_nothing():
    site = {"jobqueue.slurm.job-script-prologue": ["module load python/3.11"], "jobqueue.slurm.cores": 4,
            "jobqueue.slurm.processes": 2, "jobqueue.slurm.memory": "8GB", "jobqueue.slurm.queue": "short",
            "jobqueue.slurm.walltime": "00:30:00"}
    with dask.config.set(site):
        conf = load_extract_config(None, ["cluster=slurm"])
        kwargs = slurm_cluster_kwargs(conf)
        assert not {"cores", "processes", "memory", "queue", "walltime"} & set(kwargs)  # the site's apply
        script = slurm_job_script(conf)
        for expected in ("module load python/3.11", "export OMP_NUM_THREADS=1", "#SBATCH -p short",
                         "#SBATCH --cpus-per-task=4", "--nworkers 2", "#SBATCH -t 00:30:00"):
            assert expected in script, expected
        # a key the clews-pipe config sets wins over the site's
        ours = slurm_job_script(load_extract_config(None, ["cluster=slurm", "slurm.cores=8", "slurm.processes=8",
                                                           "slurm.job_script_prologue=['source venv/bin/activate']"]))
        assert "#SBATCH --cpus-per-task=8" in ours and "source venv/bin/activate" in ours
        assert "module load" not in ours
    # nothing set anywhere: the fallbacks
    kwargs = slurm_cluster_kwargs(load_extract_config(None, ["cluster=slurm"]))
    assert (kwargs["cores"], kwargs["processes"], kwargs["memory"]) == (16, 16, "32GB")


def test_scheduler_and_worker_interfaces_are_separate():
    conf = load_extract_config(None, ["cluster=slurm", "slurm.interface=lo"])
    kwargs = slurm_cluster_kwargs(conf)
    assert kwargs["interface"] == "lo"
    assert kwargs["scheduler_options"]["interface"] is None  # not the workers' interface
    assert "--interface lo" in slurm_job_script(conf)
    both = slurm_cluster_kwargs(load_extract_config(None, ["cluster=slurm", "slurm.interface=ib0",
                                                           "slurm.scheduler_interface=eth0"]))
    assert (both["interface"], both["scheduler_options"]["interface"]) == ("ib0", "eth0")
    assert both["scheduler_options"]["dashboard_address"] is None


def test_plain_progress_lines_for_batch_logs():
    out = io.StringIO()
    bar = PlainProgress(total=4, desc="epoch 1/2", unit="batch", stream=out, interval=0)
    for _ in range(4):
        bar.update(1)
        bar.set_postfix(loss="1.000")
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("epoch 1/2: 0/4 batches (0%), 0.0 s (started)")
    assert "4/4 batches (100%)" in lines[-1] and "loss=1.000" in lines[-1]
    assert len(lines) == 5 and "\r" not in out.getvalue()


def test_cpus_come_from_the_allocation(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert allocated_cpus() == 3
    assert threads_per_rank(2, launched_by_slurm=True) == 3  # every srun task has its own CPUs
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert allocated_cpus() == 7
    assert threads_per_rank(2, launched_by_slurm=False) == 3  # local ranks share them
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert allocated_cpus() == len(os.sched_getaffinity(0))


def test_usr1_stops_training_at_a_step_with_exit_75_then_the_same_command_resumes(extracted_demo_store, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "clews_pipe.cli.app", "train", str(REPO / "configs" / "tiny-cpu.yaml"),
           "--store", str(extracted_demo_store), "--out", str(run), "training.batch_size=2", "data.block_len=40",
           "data.workers=0"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([*cmd, "training.epochs=200"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    deadline = time.monotonic() + 300
    while not (run / "checkpoint_last.ckpt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err[-2000:]
    stopped = torch.load(run / "checkpoint_last.ckpt", weights_only=True)["epoch"]
    assert 1 <= stopped < 200
    assert f"stopped by SIGUSR1 during epoch {stopped + 1}" in out, out
    again = subprocess.run([*cmd, f"training.epochs={stopped + 1}"], capture_output=True, text=True, env=env,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("resuming ") == 1
    assert torch.load(run / "checkpoint_last.ckpt", weights_only=True)["epoch"] == stopped + 1
    done = subprocess.run([*cmd, f"training.epochs={stopped + 1}"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0 and "nothing to do" in done.stdout, done.stdout
