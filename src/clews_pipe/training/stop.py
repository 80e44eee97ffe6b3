"""Stop requests for the training loop (SIGUSR1: SLURM's time-limit warning; SIGTERM: scancel,
preemption). Light on purpose (no torch): ``clews-pipe train`` installs the handlers before the
heavy imports, so a signal that comes while the job starts up is not fatal either."""

from __future__ import annotations

import signal

STOP_SIGNALS = ("SIGUSR1", "SIGTERM")
requested: int = 0  # the number of the last stop signal received (0: none)


def _request_stop(signum, _frame) -> None:
    global requested
    requested = int(signum)


def reset() -> None:
    global requested
    requested = 0


def install() -> dict:
    """SIGUSR1/SIGTERM → ``requested``; returns the previous handlers (for :func:`restore`)."""
    previous = {}
    for name in STOP_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            previous[sig] = signal.signal(sig, _request_stop)
        except ValueError:  # not the main thread: no handlers (the loop still runs)
            pass
    return previous


def restore(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def name() -> str | None:
    return signal.Signals(requested).name if requested else None
