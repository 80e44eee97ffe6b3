"""Issue 10: one writer at a time. An advisory lock on the store during extract and on the run
directory during train; a second writer exits with one line naming the holder (host, pid, since)
and changes nothing. A resume refuses another data section (store, splits) unless told."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clews_pipe.cli.app import main
from clews_pipe.errors import ClewsError
from clews_pipe.lock import folder_lock

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny-cpu.yaml"
QUICK = ["training.batch_size=2", "data.block_len=40", "data.workers=0", "fabric.devices=1"]


def _tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.name != ".lock"}


def test_lock_names_the_holder_and_is_released(tmp_path):
    with folder_lock(tmp_path / "d", "first"):
        with pytest.raises(ClewsError) as info:
            with folder_lock(tmp_path / "d", "second"):
                pass
        msg = str(info.value)
        assert f"pid {os.getpid()}" in msg and socket.gethostname() in msg and "since 20" in msg and "first" in msg
        assert "\n" not in msg
    with folder_lock(tmp_path / "d", "third"):  # released on exit
        pass


def test_lock_of_a_killed_holder_does_not_block(tmp_path):
    code = ("import sys, time; sys.path.insert(0, sys.argv[2]); from clews_pipe.lock import folder_lock\n"
            "with folder_lock(sys.argv[1], 'victim'):\n    print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "d"), str(REPO / "src")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(ClewsError, match=f"pid {proc.pid}"):
            with folder_lock(tmp_path / "d", "me"):
                pass
    finally:
        proc.kill()
        proc.wait()
    with folder_lock(tmp_path / "d", "me"):
        pass


def test_second_extract_on_a_locked_store_changes_nothing(extracted_demo_store, demo_corpus, tmp_path, capsys):
    store = tmp_path / "copy.store"
    shutil.copytree(extracted_demo_store, store)
    before = _tree(store)
    with folder_lock(store, "clews-pipe extract"):
        code = main(["extract", "--dataset", "discogs-vi", "--meta", str(demo_corpus.meta), "--audio",
                     str(demo_corpus.audio), "--out", str(store), "--quiet", "--workers", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:"), err
    assert f"pid {os.getpid()}" in err[0] and "clews-pipe extract" in err[0]
    assert _tree(store) == before


def test_unwritable_store_root_is_one_line_before_any_decoding(demo_corpus, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    targets = [blocker / "s.store"]  # a parent that cannot hold folders (works as root too)
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        targets.append(ro / "s.store")
    try:
        for target in targets:
            code = main(["extract", "--dataset", "discogs-vi", "--meta", str(demo_corpus.meta), "--audio",
                         str(demo_corpus.audio), "--out", str(target), "--quiet"])
            err = capsys.readouterr().err.strip().splitlines()
            assert code == 2 and len(err) == 1 and "cannot write" in err[0], err
    finally:
        if os.geteuid() != 0:
            (tmp_path / "ro").chmod(0o755)


def test_second_training_on_a_locked_run_dir_changes_nothing(extracted_demo_store, tmp_path, capsys):
    run = tmp_path / "run"
    with folder_lock(run, "clews-pipe train"):
        code = main(["train", str(TINY), "--store", str(extracted_demo_store), "--out", str(run), *QUICK,
                     "training.epochs=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err and err[-1].startswith("error:") and f"pid {os.getpid()}" in err[-1], err
    assert not (run / "metrics.csv").exists() and not (run / "configuration.yaml").exists()


def test_resume_on_another_store_is_refused_unless_allowed(extracted_demo_store, tmp_path, capsys):
    other = tmp_path / "other.store"
    shutil.copytree(extracted_demo_store, other)
    run = tmp_path / "run"
    base = ["train", str(TINY), "--out", str(run), *QUICK]
    assert main([*base, "--store", str(extracted_demo_store), "training.epochs=1"]) == 0
    capsys.readouterr()
    assert main([*base, "--store", str(other), "training.epochs=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "data.store" in err[-1] and "--allow-data-change" in err[-1]
    assert main([*base, "--store", str(extracted_demo_store), "training.epochs=2", "data.val_split=test"]) == 2
    assert "data.val_split" in capsys.readouterr().err
    assert main([*base, "--store", str(other), "training.epochs=2", "--allow-data-change"]) == 0
    import csv

    with (run / "metrics.csv").open() as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2]


def test_unwritable_parts_folder_is_one_line_before_any_decoding(extracted_demo_store, demo_corpus, tmp_path, capsys):
    """``parts/`` made immutable (``chattr +i``: root cannot write it either): one error line,
    exit 2, before a cluster starts or a track is decoded (no Dask traceback floods)."""
    store = tmp_path / "copy.store"
    shutil.copytree(extracted_demo_store, store)
    parts = store / "parts"
    shutil.rmtree(next(p for p in parts.iterdir() if not p.name.startswith(".")))  # work to do
    if subprocess.run(["chattr", "+i", str(parts)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        started = time.perf_counter()
        code = main(["extract", "--dataset", "discogs-vi", "--meta", str(demo_corpus.meta), "--audio",
                     str(demo_corpus.audio), "--out", str(store), "--quiet"])
        seconds = time.perf_counter() - started
    finally:
        subprocess.run(["chattr", "-i", str(parts)], check=True)
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error:") and "not writable" in err[0], err
    assert "Traceback" not in captured.out + captured.err
    assert seconds < 30  # no cluster started, nothing decoded three times
