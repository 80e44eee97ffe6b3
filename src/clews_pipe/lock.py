"""One writer at a time: an advisory lock on a folder (a feature store during ``extract``, a run
directory during ``train``).

``with folder_lock(path, "extract"):`` holds ``flock(LOCK_EX)`` on ``<path>/.lock`` and writes the
holder (host, pid, since, what) into it. A second writer gets a :class:`ClewsError` naming the
holder and changes nothing. The kernel drops the lock when the holder dies (even SIGKILL), so a
stale ``.lock`` file never blocks a rerun. On a filesystem without ``flock`` support (some
Lustre mounts), the lock is skipped with one warning line on stderr.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from clews_pipe.errors import ClewsError

LOCK_NAME = ".lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
        return f"host {info.get('host', '?')}, pid {info.get('pid', '?')}, since {info.get('since', '?')} ({info.get('what', '?')})"
    except (OSError, ValueError, AttributeError):
        return "an unknown holder"


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str) -> Iterator[Path]:
    """Hold the advisory lock of ``folder`` (created if needed) for the block; ClewsError with
    one line naming the holder when another process holds it, or when ``folder`` is unwritable."""
    folder = Path(folder)
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ClewsError(f"{folder}: cannot write here ({exc.strerror or exc})") from None
    locked = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ClewsError(f"{folder}: in use by another writer: {_holder(path)}; wait for it or stop it") from None
            print(f"warning: {folder}: no advisory lock on this filesystem ({exc.strerror}); "
                  "make sure no other job writes here", file=sys.stderr)
        info = {"host": socket.gethostname(), "pid": os.getpid(),
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "what": what}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError as exc:
            raise ClewsError(f"{folder}: cannot write here ({exc.strerror or exc})") from None
        yield path
    finally:
        if locked:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
