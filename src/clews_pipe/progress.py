"""Progress for long steps: a tqdm bar on a terminal, plain periodic lines in a batch log.

``progress_bar(total=..., desc=...)`` has the subset of tqdm's interface the pipeline uses
(``update``, ``set_postfix``, ``close``, iteration, context manager). When stderr is not a
terminal (a SLURM job's log), it prints one plain line at the start, then at most one every
``CLEWS_PROGRESS_SECONDS`` seconds (default 60), and one at the end:

    [12:03:04] epoch 3/30: 120/400 batches (30%), 41.2 s, ETA 96 s, loss=1.234
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Optional

DEFAULT_SECONDS = 60.0


def interactive(stream=None) -> bool:
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def log_interval() -> float:
    """Seconds between plain progress lines (``CLEWS_PROGRESS_SECONDS``, default 60)."""
    try:
        value = float(os.environ.get("CLEWS_PROGRESS_SECONDS", DEFAULT_SECONDS))
    except ValueError:
        return DEFAULT_SECONDS
    return value if value > 0 else DEFAULT_SECONDS


def _plural(unit: str) -> str:
    return unit + ("es" if unit.endswith(("ch", "sh", "s", "x")) else "s")


class PlainProgress:
    """A progress report as plain lines (no carriage returns, no escape codes)."""

    def __init__(self, iterable: Optional[Iterable] = None, total: Optional[int] = None, desc: str = "",
                 unit: str = "it", disable: bool = False, stream=None, interval: Optional[float] = None, **_):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc = desc
        self.unit = unit
        self.disable = disable
        self.stream = stream if stream is not None else sys.stderr
        self.interval = log_interval() if interval is None else float(interval)
        self.n = 0
        self.postfix = ""
        self.started = time.monotonic()
        self._last = self.started
        self._closed = False
        if not disable:
            self._line("started")

    def _line(self, note: str = "") -> None:
        elapsed = time.monotonic() - self.started
        if self.total:
            done = f"{self.n}/{self.total} {_plural(self.unit)} ({100.0 * self.n / self.total:.0f}%)"
            eta = f", ETA {(self.total - self.n) * elapsed / self.n:.0f} s" if 0 < self.n < self.total else ""
            if self.n and elapsed > 0:
                eta = f", {self.n / elapsed:.3g} {_plural(self.unit)}/s" + eta
        else:
            done, eta = f"{self.n} {_plural(self.unit)}", ""
        text = f"[{time.strftime('%H:%M:%S')}] {self.desc}: {done}, {elapsed:.1f} s{eta}"
        if self.postfix:
            text += f", {self.postfix}"
        if note:
            text += f" ({note})"
        print(text, file=self.stream, flush=True)

    def update(self, n: int = 1) -> None:
        if self.disable:
            return
        self.n += n
        now = time.monotonic()
        if self.total and self.n >= self.total:
            return  # the closing line reports the total
        if now - self._last >= self.interval:
            self._last = now
            self._line()

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.disable or self._closed:
            return
        self._closed = True
        self._line("done" if self.total is None or self.n >= self.total else "stopped")

    def __iter__(self):
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(iterable: Optional[Iterable] = None, **kwargs):
    """tqdm on a terminal, :class:`PlainProgress` otherwise (same keyword arguments)."""
    if interactive():
        from tqdm.auto import tqdm

        return tqdm(iterable, **kwargs)
    return PlainProgress(iterable, **kwargs)
