"""Helpers of the real-Slurm tests: submit, poll ``scontrol show job``, record every job."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "test-cluster.sh"
BIN = Path(sys.executable).parent
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED")
JOBS: list[dict] = []  # every job a test ran: printed at the end of the session


def job_info(job_id: str) -> dict:
    out = subprocess.run(["scontrol", "-o", "show", "job", str(job_id)], capture_output=True, text=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_job(job_id: str, timeout: float, until=None) -> dict:
    """Poll ``scontrol show job`` until the job is in a final state (or ``until(info)`` is true)."""
    deadline = time.monotonic() + timeout
    while True:
        info = job_info(job_id)
        state = info.get("JobState", "")
        if (until is not None and until(info)) or (until is None and state in FINAL_STATES):
            return info
        if time.monotonic() > deadline:
            subprocess.run(["scancel", str(job_id)])
            raise AssertionError(f"job {job_id} still {state} after {timeout:.0f} s: {info}")
        time.sleep(0.5)


def record(job_id: str, what: str, info: dict) -> dict:
    JOBS.append({"id": str(job_id), "what": what, "state": info.get("JobState", "?"),
                 "run_time": info.get("RunTime", "?"), "restarts": info.get("Restarts", "0"),
                 "nodes": info.get("NodeList", "?"), "exit_code": info.get("ExitCode", "?")})
    return info


def sbatch(args: list[str], env: dict | None = None) -> str:
    """Submit from the repository root (the templates activate ./.venv from SLURM_SUBMIT_DIR)."""
    full_env = dict(os.environ, CLEWS_PROGRESS_SECONDS="2", **(env or {}))
    out = subprocess.run(["sbatch", "--parsable", *args], cwd=REPO, capture_output=True, text=True, env=full_env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def clews(*args: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "clews-pipe"), *args], capture_output=True, text=True, timeout=timeout, **kw)


