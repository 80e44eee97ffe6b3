"""Atomic file replacement for every file a rerun trusts (store metadata, index, checkpoints, embeddings,
segment indexes, evaluation outputs).

:func:`atomic_path` yields a temporary name in the target's own folder (so the rename never crosses
a filesystem); when the block ends without an exception the file is fsynced and renamed over the
target (``os.replace``, atomic on POSIX), then the folder entry is fsynced. On an exception the
temporary file is removed and the target is untouched: a reader sees the old file or the new one,
never half of one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from pathlib import Path
from typing import Any, Iterator

from clews_pipe.errors import ClewsError

TEMP_MARK = ".tmp-"  # temporary names start with this (dot-files: ignored by listings of finished files)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(folder: Path) -> None:
    """fsync a folder's entries (a rename or a new file in it is durable after this); errors ignored."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def ensure_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create folder ``path`` (and its parents); one ClewsError line naming it when it is a file,
    lies below a file, or cannot be created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ClewsError(f"{path}: {what} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClewsError(f"{path}: cannot create the {what} ({exc.strerror or exc})") from None
    return path


def check_dir_target(path: str | Path, what: str = "output folder") -> Path:
    """ClewsError when folder ``path`` could not be created (it, or the nearest existing folder
    above it, is a file); creates nothing."""
    path = Path(path)
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ClewsError(f"{path}: {what} {'exists and is' if probe == path else f'lies below {probe}, which is'} not a directory")
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (ending in ``suffix``, e.g. ``.npz`` for ``np.savez``);
    write the file there; on success it replaces ``path``."""
    path = Path(path)
    if path.is_dir():
        raise ClewsError(f"{path}: is a directory; give the path of a file to write")
    ensure_dir(path.parent)
    tmp = path.with_name(f"{TEMP_MARK}{path.name}-{uuid.uuid4().hex[:12]}{suffix}")
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf) replaced by ``None``, numpy scalars as Python ones."""
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", None) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2, sort_keys: bool = False) -> None:
    """Strict JSON (non-finite numbers become ``null``, never a bare ``NaN``) written atomically."""
    text = json.dumps(strict_json(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)
    write_text_atomic(path, text + "\n")


def read_json_object(path: str | Path, what: str) -> dict:
    """A JSON object file (``what`` names it in the one-line ClewsError when it is missing,
    unreadable or not an object)."""
    path = Path(path)
    try:
        with open(path) as handle:
            obj = json.load(handle)
    except FileNotFoundError:
        raise ClewsError(f"{path}: {what} not found") from None
    except (OSError, ValueError) as exc:
        raise ClewsError(f"{path}: unreadable {what} ({exc})") from None
    if not isinstance(obj, dict):
        raise ClewsError(f"{path}: {what} is not a JSON object")
    return obj
