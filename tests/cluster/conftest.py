"""Fixtures of the real-Slurm tests (``make test-cluster``; marker ``cluster``).

``slurm_cluster`` brings up the two-node test cluster of ``scripts/test-cluster.sh`` (installing
slurm-wlm + munge when root allows) and stops it at the end if it started it. Where the cluster
cannot be had (not root and the packages missing), every test skips with the script's one line;
under CI (``CI`` set) that is a failure instead.

Every job a test runs is recorded (id, what it was, final state, run time, restarts) and printed
as a table at the end of the session, and written to ``$CLEWS_CLUSTER_REPORT`` when that is set.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from slurm_helpers import JOBS, SCRIPT, clews, record, sbatch, wait_job


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)


def pytest_terminal_summary(terminalreporter):
    if not JOBS:
        return
    tr = terminalreporter
    tr.section("jobs run on the test cluster")
    tr.write_line(f"{'job':>5}  {'what':<58} {'state':<10} {'run time':>9} {'restarts':>8}")
    for job in JOBS:
        tr.write_line(f"{job['id']:>5}  {job['what'][:58]:<58} {job['state']:<10} {job['run_time']:>9} "
                      f"{job['restarts']:>8}")
    report = os.environ.get("CLEWS_CLUSTER_REPORT")
    if report:
        Path(report).write_text(json.dumps(JOBS, indent=2) + "\n")


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def slurm_cluster():
    status = subprocess.run([str(SCRIPT), "status"], capture_output=True, text=True)
    was_up = "slurmctld: pid" in status.stdout
    up = subprocess.run([str(SCRIPT), "up"], capture_output=True, text=True)
    if up.returncode == 3:
        line = (up.stderr.strip().splitlines() or ["the test cluster cannot be had here"])[-1]
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the cluster tests: {line}")
        pytest.skip(line)
    assert up.returncode == 0, up.stderr
    conf = subprocess.run([str(SCRIPT), "env"], capture_output=True, text=True).stdout.strip().split("=", 1)[1]
    os.environ["SLURM_CONF"] = conf
    yield conf
    if not was_up:
        subprocess.run([str(SCRIPT), "down"], capture_output=True, text=True)


@pytest.fixture(scope="session")
def work(tmp_path_factory, slurm_cluster) -> Path:
    return tmp_path_factory.mktemp("cluster")


@pytest.fixture(scope="session")
def corpus(work) -> Path:
    root = work / "corpus"
    out = clews("demo-corpus", str(root), "--cliques", "8", "--versions-min", "2", "--versions-max", "3",
                "--duration-min", "20", "--duration-max", "30", "--splits", "0.5,0.25,0.25", "--workers", "1",
                "--seed", "3")
    assert out.returncode == 0, out.stderr
    return root


@pytest.fixture(scope="session")
def extract_job(work, corpus) -> dict:
    """``extract.sbatch`` on 2 nodes, one worker each; its store feeds the training tests."""
    store = work / "store-2nodes"
    job = sbatch(["--nodes=2", "--cpus-per-task=1", "--mem=3G", "--time=10", f"--output={work}/%x-%j.out",
                  "slurm/extract.sbatch", "discogs-vi", str(corpus), str(corpus / "audio"), str(store)])
    info = record(job, "extract.sbatch, 2 nodes x 1 worker", wait_job(job, 300))
    return {"id": job, "info": info, "store": store, "log": work / f"clews-extract-{job}.out", "work": work}


@pytest.fixture(scope="session")
def store(extract_job) -> Path:
    assert extract_job["info"]["JobState"] == "COMPLETED", extract_job["log"].read_text()
    return extract_job["store"]
