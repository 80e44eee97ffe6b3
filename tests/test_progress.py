"""Progress in batch logs: plain periodic lines (done/total, rate, ETA, failures), bars on a terminal."""

import io
import re

from clews_pipe.progress import PlainProgress, interactive, progress_bar


def test_plain_lines_carry_done_total_rate_eta_and_failures():
    stream = io.StringIO()
    bar = PlainProgress(total=4, desc="embed", unit="file", stream=stream, interval=0.0)
    bar.update(1)
    bar.set_postfix(skipped=1)
    bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("(started)") and "0/4 files (0%)" in lines[0]
    assert re.search(r"embed: 1/4 files \(25%\), [0-9.]+ s, [0-9.e+-]+ files/s, ETA [0-9]+ s$", lines[1]), lines[1]
    assert "2/4 files (50%)" in lines[2] and lines[2].endswith("skipped=1")
    assert lines[-1].endswith("(stopped)")  # closed before the total: said so
    assert all("\r" not in line and "\x1b" not in line for line in lines)


def test_lines_are_rate_limited():
    stream = io.StringIO()
    bar = PlainProgress(total=1000, desc="x", stream=stream, interval=3600.0)
    for _ in range(1000):
        bar.update(1)
    bar.close()
    assert len(stream.getvalue().splitlines()) == 2  # the start and the end, nothing in between
    assert stream.getvalue().splitlines()[-1].endswith("(done)")


def test_a_pipe_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not interactive()
    assert isinstance(progress_bar(total=3, desc="d"), PlainProgress)
