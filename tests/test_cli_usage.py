"""Usage errors are one ``error:`` line plus the command's usage hint (exit 2), never a traceback;
the published code's habits get a hint; ``--version``."""

import subprocess
import sys

import pytest

import clews_pipe
from clews_pipe.cli.app import main


def _run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["stor"], "No such command 'stor'"),
        (["train"], "Missing argument"),
        (["train", "configs/tiny-cpu.yaml"], "Missing option '--out'"),
        (["evaluate", "--bogus"], "No such option: --bogus"),
        (["evaluate", "--tile", "x"], "Invalid value for '--tile'"),
        (["evaluate", "out=3"], "options are written --out 3, not out=3"),
        (["store", "info"], "Missing argument"),
    ],
)
def test_usage_errors_are_one_error_line_and_a_usage_hint(capsys, argv, expected):
    code, _, err = _run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2
    assert lines[0].startswith("error: ") and expected in lines[0], err
    assert len(lines) == 2 and lines[1].startswith("Usage: clews-pipe"), err
    assert "Traceback" not in err


def test_usage_error_from_the_console_script_has_no_traceback():
    """Through the installed entry point, as a user types it (typer's bundled click exceptions)."""
    proc = subprocess.run([sys.executable, "-c", "from clews_pipe.cli.app import run; run()", "stor"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: No such command 'stor'")
    assert "Traceback" not in proc.stderr


def test_version(capsys):
    code, out, _ = _run(capsys, "--version")
    assert code == 0 and out.strip() == f"clews-pipe {clews_pipe.__version__}"


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "configs/tiny-cpu.yaml", "--out", "r", "fabric.ngpus=2"], "fabric.ngpus is fabric.devices"),
        (["train", "configs/tiny-cpu.yaml", "--out", "r", "fabric.nnodes=2"], "fabric.nnodes is fabric.nodes"),
        (["train", "jobname=myrun", "conf=configs/tiny-cpu.yaml", "--out", "r"],
         "clews-pipe train configs/tiny-cpu.yaml --store STORE --out myrun"),
    ],
)
def test_published_code_habits_get_the_clews_pipe_form(capsys, tmp_path, monkeypatch, argv, expected):
    code, _, err = _run(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and expected in err, err
