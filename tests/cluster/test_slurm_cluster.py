"""The sbatch templates and ``extract --cluster slurm`` on a real two-node Slurm cluster.

Run with ``make test-cluster`` (brings the cluster up with scripts/test-cluster.sh). Every job
is real: real sbatch/srun, real Dask scheduler and workers, real Fabric DDP over gloo on CPU.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from slurm_helpers import REPO, clews, job_info, record, sbatch, wait_job

pytestmark = pytest.mark.cluster

TRAIN = ["configs/tiny-cpu.yaml"]
PLAIN_LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] ", re.M)


def _tracks(store: Path) -> int:
    from clews_pipe.store import open_store

    index = open_store(store).index
    return int((index["status"] == "ok").sum())


def _overlap(a: dict, b: dict) -> bool:
    return a["StartTime"] < b["EndTime"] and b["StartTime"] < a["EndTime"]


# ------------------------------------------------------------------------------------ extract
def test_extract_sbatch_on_two_nodes(extract_job, corpus):
    info, log = extract_job["info"], extract_job["log"].read_text()
    assert info["JobState"] == "COMPLETED", log
    assert info["NodeList"] == "node[1-2]"
    assert _tracks(extract_job["store"]) == 20
    # progress in the batch log: plain periodic lines, no carriage returns / escape codes
    assert PLAIN_LINE.search(log) and "\r" not in log and "\x1b" not in log, log
    assert "20/20 tracks (100%)" in log
    prefix = extract_job["work"] / f"clews-extract-{extract_job['id']}"
    scheduler_log = Path(f"{prefix}.scheduler.log").read_text()
    assert scheduler_log.count("Register worker") == 2  # one worker per node, both waited for
    for task in (0, 1):
        assert "Registered to" in Path(f"{prefix}.worker-{task}.log").read_text()
    assert not Path(f"/tmp/clews-extract-{extract_job['id']}").exists()  # node scratch removed
    assert not list(extract_job["store"].parent.glob(f".clews-extract-{extract_job['id']}.*"))


def test_two_extract_jobs_at_once_on_one_node(work, corpus):
    jobs = []
    for k in (1, 2):
        jobs.append(sbatch(["--nodes=1", "--nodelist=node1", "--cpus-per-task=1", "--mem=3G", "--time=10",
                            f"--output={work}/%x-%j.out", "slurm/extract.sbatch", "discogs-vi", str(corpus),
                            str(corpus / "audio"), str(work / f"store-same-node-{k}")]))
    infos = [record(j, "extract.sbatch, 2 jobs at once on node1 (job %d)" % k, wait_job(j, 300))
             for k, j in enumerate(jobs, 1)]
    for job, info in zip(jobs, infos):
        assert info["JobState"] == "COMPLETED", (work / f"clews-extract-{job}.out").read_text()
        assert info["NodeList"] == "node1"
    assert _overlap(*infos), infos  # they did run at the same time on the same node
    ports = {re.search(r"Scheduler at:\s+tcp://[^:]+:(\d+)", (work / f"clews-extract-{j}.scheduler.log").read_text()).group(1)
             for j in jobs}
    assert len(ports) == 2  # each its own free port
    for k in (1, 2):
        assert _tracks(work / f"store-same-node-{k}") == 20


def _slurm_extract(work: Path, corpus: Path, store: Path, *extra: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    out = clews("extract", "--config", str(REPO / "configs/extract-slurm.yaml"), "--dataset", "discogs-vi",
                "--meta", str(corpus), "--audio", str(corpus / "audio"), "--out", str(store),
                "slurm.jobs=2", "slurm.cores=1", "slurm.processes=1", "slurm.memory=3GB",
                "slurm.walltime=00:10:00", "slurm.local_directory=/tmp", *extra, timeout=300, cwd=work)
    return out, time.monotonic() - started


def _new_jobs(before: int) -> list[dict]:
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i"], capture_output=True, text=True).stdout.split()
    return [job_info(j) for j in sorted(out, key=int) if int(j) > before]


def _last_job_id() -> int:
    out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i"], capture_output=True, text=True).stdout.split()
    return max([int(j) for j in out] or [0])


def test_extract_cluster_slurm_with_two_worker_jobs(work, corpus):
    logs = work / "dask-logs"
    before = _last_job_id()
    out, seconds = _slurm_extract(work, corpus, work / "store-jobqueue", f"slurm.log_directory={logs}")
    assert out.returncode == 0, out.stderr
    assert _tracks(work / "store-jobqueue") == 20
    workers = [j for j in _new_jobs(before) if j.get("JobName") == "clews-extract"]
    assert len(workers) == 2, workers
    for job in workers:
        record(job["JobId"], f"extract --cluster slurm: Dask worker job (driver {seconds:.0f} s)", job)
        assert job["JobState"] in ("COMPLETED", "CANCELLED"), job  # the driver cancels its workers at the end
    assert len(list(logs.glob("*.out")) + list(logs.glob("*.err"))) >= 2


def test_extract_cluster_slurm_with_a_partition_that_does_not_exist(work, corpus):
    before = _last_job_id()
    out, seconds = _slurm_extract(work, corpus, work / "store-nopartition", "slurm.queue=nosuchpartition",
                                  "slurm.check_seconds=2")
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: sbatch did not accept the Dask worker jobs"), out.stderr
    assert "invalid partition" in lines[0]
    assert "Traceback" not in out.stderr + out.stdout
    assert seconds < 60
    assert _new_jobs(before) == []  # nothing was queued
    record("-", f"extract --cluster slurm, slurm.queue=nosuchpartition: exit {out.returncode} after {seconds:.1f} s",
           {"JobState": "REFUSED", "RunTime": f"{seconds:.1f}s", "Restarts": "0"})


# -------------------------------------------------------------------------------------- train
EPOCHS = 8


def _train_job(work: Path, store: Path, run: str, epochs: int = EPOCHS, extra_sbatch: tuple = (),
               overrides: tuple = ()) -> str:
    return sbatch(["--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1", "--mem=3G", "--time=10",
                   "--signal=B:USR1@30", *extra_sbatch, f"--output={work}/%x-%j.out", "slurm/train.sbatch", *TRAIN, str(store),
                   str(work / run), f"training.epochs={epochs}", *overrides])


def _epoch_of(run: Path) -> int:
    from clews_pipe.model.checkpoint import load_checkpoint

    path = run / "checkpoint_last.ckpt"
    return int(load_checkpoint(path)["epoch"]) if path.exists() else 0


def _weights(run: Path) -> dict:
    from clews_pipe.model.checkpoint import load_checkpoint

    return load_checkpoint(run / "checkpoint_last.ckpt")["model"]


def test_train_two_nodes_cancelled_and_resubmitted_equals_uninterrupted(work, store):
    whole = _train_job(work, store, "run-whole")
    part = _train_job(work, store, "run-cancelled")
    # cancel the second run after its first epoch
    wait_job(part, 300, until=lambda info: _epoch_of(work / "run-cancelled") >= 1
             or info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED"))
    subprocess.run(["scancel", part], check=True)
    info = record(part, "train.sbatch 2 nodes x 1 CPU task, scancel after epoch 1", wait_job(part, 120))
    assert info["JobState"] == "CANCELLED"
    stopped_at = _epoch_of(work / "run-cancelled")
    assert 1 <= stopped_at < EPOCHS
    again = _train_job(work, store, "run-cancelled")
    info = record(again, f"train.sbatch resubmitted (resumes at epoch {stopped_at + 1})", wait_job(again, 300))
    log = (work / f"clews-train-{again}.out").read_text()
    assert info["JobState"] == "COMPLETED", log
    assert log.count("resuming ") == 1, log  # once per job, not once per node
    info = record(whole, "train.sbatch 2 nodes x 1 CPU task, uninterrupted", wait_job(whole, 300))
    whole_log = (work / f"clews-train-{whole}.out").read_text()
    assert info["JobState"] == "COMPLETED", whole_log
    assert "2 nodes x 1 cpu ranks" in whole_log and "rendezvous 127.0.0.1:" in whole_log  # an address
    assert PLAIN_LINE.search(whole_log) and "\r" not in whole_log
    a, b = _weights(work / "run-whole"), _weights(work / "run-cancelled")
    assert _epoch_of(work / "run-whole") == _epoch_of(work / "run-cancelled") == EPOCHS
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key].numpy(), b[key].numpy()), key
    # a finished run resubmitted says there is nothing to do
    done = _train_job(work, store, "run-cancelled")
    info = record(done, "train.sbatch on the finished run", wait_job(done, 300))
    log = (work / f"clews-train-{done}.out").read_text()
    assert info["JobState"] == "COMPLETED" and "nothing to do" in log, log


def test_train_time_limit_signal_checkpoint_requeue_finish(work, store):
    # enough epochs that the run cannot finish before the warning even on an idle machine
    # (about 0.6 s per epoch here when idle: 40 epochs once finished inside the first 60 s);
    # (a released job once ended FAILED at 0 s: slurmctld.log "Killing non-startable batch JobId=N:
    # Job credential revoked". The requeue revokes the job's credentials on the nodes, and a
    # restart in the same second as that revocation is refused; hence StartTime=now+5 below.)
    epochs = 250
    job = _train_job(work, store, "run-timelimit", epochs=epochs,
                     extra_sbatch=("--time=2", "--signal=B:USR1@60"),
                     overrides=("training.min_lr=1e-12",))  # all epochs, whatever the plateau schedule does
    # slurmctld checks limits every 30 s: the warning comes 60-90 s after the start (<= 60 s before
    # the 2-minute limit), after the first epochs even on a busy machine; the ranks stop at a step,
    # the job requeues itself ...
    info = wait_job(job, 300, until=lambda i: int(i.get("Restarts", 0)) >= 1 or i.get("JobState") in
                    ("COMPLETED", "FAILED", "TIMEOUT", "CANCELLED"))
    log_path = work / f"clews-train-{job}.out"
    assert int(info.get("Restarts", 0)) >= 1, log_path.read_text()
    stopped_at = _epoch_of(work / "run-timelimit")
    assert stopped_at < epochs
    # ... Slurm holds a requeued job for ~2 min (BeginTime) and would warn it again after 10 s:
    # release it now, with room to finish
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now+5", "TimeLimit=10"], check=True)
    assert stopped_at >= 1
    info = record(job, f"train.sbatch --time=2 --signal=B:USR1@60: requeued at epoch {stopped_at}",
                  wait_job(job, 600))
    log = log_path.read_text()
    assert info["JobState"] == "COMPLETED", log
    assert "time limit near (USR1)" in log and "requeueing job" in log, log
    assert "restart 1" in log and f"resuming {work / 'run-timelimit'}" in log
    assert f"stopped by SIGUSR1 during epoch {stopped_at + 1}" in log
    assert _epoch_of(work / "run-timelimit") == epochs


# ----------------------------------------------------------------------------------- evaluate
def test_evaluate_sbatch_two_tasks_equals_one_process(work, store):
    ckpt = work / "run-whole" / "checkpoint_last.ckpt"
    if not ckpt.exists():
        pytest.skip("needs the training test's checkpoint")
    job = sbatch(["--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", "--mem=3G", "--time=10",
                  f"--output={work}/%x-%j.out", "slurm/evaluate.sbatch", str(ckpt), str(store),
                  str(work / "eval-2tasks"), "--split", "test", "--tile", "2"])
    info = record(job, "evaluate.sbatch, 1 node x 2 CPU tasks", wait_job(job, 300))
    log = (work / f"clews-eval-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED", log
    assert "1 nodes x 2 cpu ranks" in log
    one = clews("evaluate", "--checkpoint", str(ckpt), "--store", str(store), "--split", "test",
                "--tile", "2", "--out", str(work / "eval-1proc"), "--quiet")
    assert one.returncode == 0, one.stderr
    two = json.loads((work / "eval-2tasks" / "metrics.json").read_text())
    single = json.loads((work / "eval-1proc" / "metrics.json").read_text())
    for key in ("MAP", "NAR", "MR1", "queries"):
        assert two[key] == single[key], (key, two, single)
