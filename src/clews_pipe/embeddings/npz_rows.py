"""Rows of an uncompressed ``.npz`` member read on demand, so no rank holds a whole embeddings file.

``np.savez`` stores each member uncompressed (``ZIP_STORED``): its ``.npy`` bytes lie contiguous
in the archive. :func:`member_rows` finds where a member's data starts (the zip local header, then
the ``.npy`` header) and returns :class:`NpzMemberRows`: ``rows[a:b]`` / ``rows[index array]`` read
only those rows with ``os.pread`` (nothing is memory-mapped, so nothing the process did not ask for
counts in its resident memory). One streamed pass at open checks every unpadded segment is finite
and computes the member's SHA-1 (its ``digest``, which the distance matrix fingerprints instead of
reading the rows again). :class:`RowsView` is a subset of the rows of any such array (the tracks a
protocol evaluates), still read on demand.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zipfile
from pathlib import Path

import numpy as np

from clews_pipe.errors import ClewsError

CHECK_BYTES = 8 << 20  # bytes read per step of the validation pass
_LOCAL_HEADER = struct.Struct("<IHHHHHIIIHH")  # zip local file header (30 bytes)


def _runs(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and length of each run of consecutive values in ``rows`` (in the given order)."""
    if rows.size == 0:
        return rows, rows
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.r_[0, breaks]
    lengths = np.diff(np.r_[starts, rows.size])
    return rows[starts], lengths


class RowsView:
    """The rows ``rows`` (sorted or not) of a lazily read array, themselves read lazily."""

    def __init__(self, base, rows):
        self.base = base
        self.rows = np.asarray(rows, dtype=np.int64)
        self.shape = (len(self.rows),) + tuple(base.shape[1:])
        self.dtype = np.dtype(base.dtype)
        self.ndim = len(self.shape)
        self.digest = f"{base.digest}:rows:{hashlib.sha1(self.rows.tobytes()).hexdigest()}"

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        return self.base[self.rows[key]] if not isinstance(key, (int, np.integer)) else self.base[int(self.rows[key])]

    def take_rows(self, rows) -> "RowsView":
        return RowsView(self.base, self.rows[np.asarray(rows, dtype=np.int64)])

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)


class NpzMemberRows:
    """One uncompressed ``.npz`` member (C order), read by rows; see the module docstring."""

    def __init__(self, path: Path, name: str, offset: int, shape: tuple, dtype: np.dtype, digest: str,
                 zero_nonfinite: bool):
        self.path, self.name, self.offset = Path(path), name, int(offset)
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), len(shape)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.digest = digest
        self.zero_nonfinite = zero_nonfinite  # padding held NaN/inf: read as 0, as the eager loader does

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, start: int, count: int) -> np.ndarray:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            data = os.pread(fd, count * self.row_bytes, self.offset + start * self.row_bytes)
        finally:
            os.close(fd)
        if len(data) != count * self.row_bytes:
            raise ClewsError(f"embeddings file {self.path}: array {self.name!r} is truncated")
        out = np.frombuffer(data, dtype=self.dtype).reshape((count,) + self.shape[1:]).copy()
        if self.zero_nonfinite:
            out[~np.isfinite(out)] = 0
        return out

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._read(int(key) % self.shape[0], 1)[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(self.shape[0])
            if step == 1:
                return self._read(start, max(0, stop - start))
            key = np.arange(start, stop, step)
        rows = np.asarray(key, dtype=np.int64) % max(1, self.shape[0])
        starts, lengths = _runs(rows)
        parts = [self._read(int(s), int(n)) for s, n in zip(starts, lengths)]  # one read per run of rows
        return np.concatenate(parts) if parts else np.zeros((0,) + self.shape[1:], self.dtype)

    def take_rows(self, rows) -> RowsView:
        return RowsView(self, rows)

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def _data_offset(path: Path, name: str) -> int | None:
    """Offset of member ``name.npy``'s bytes in the archive, None when it is compressed."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as handle:
        handle.seek(info.header_offset)
        fields = _LOCAL_HEADER.unpack(handle.read(_LOCAL_HEADER.size))
    name_len, extra_len = fields[-2], fields[-1]
    return info.header_offset + _LOCAL_HEADER.size + name_len + extra_len


def member_rows(path: str | Path, name: str, mask: np.ndarray | None = None) -> NpzMemberRows | None:
    """A lazily read float16/float32 member of an ``.npz`` (None when it is compressed, of another
    dtype or Fortran-ordered: the caller loads it as before). ``mask`` (N, S), True = padding: NaN/inf there are read as 0, and
    anywhere else they are one-line :class:`ClewsError`."""
    path = Path(path)
    start = _data_offset(path, name)
    if start is None:
        return None
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(handle)
            data_at = handle.tell()
    except (ValueError, OSError):
        return None
    if fortran or dtype not in (np.dtype(np.float16), np.dtype(np.float32)) or len(shape) < 1:
        return None
    rows = NpzMemberRows(path, name, data_at, shape, dtype, "", False)
    rows.digest, nonfinite_padding = _check_pass(rows, mask)
    rows.zero_nonfinite = nonfinite_padding
    return rows


def _check_pass(rows: NpzMemberRows, mask: np.ndarray | None) -> tuple[str, bool]:
    """(SHA-1 of the member's bytes, whether padding holds NaN/inf), in blocks of rows."""
    digest = hashlib.sha1(f"{rows.path.name}:{rows.name}:{rows.shape}:{rows.dtype}".encode())
    step = max(1, CHECK_BYTES // max(1, rows.row_bytes))
    padding_bad = False
    for a in range(0, rows.shape[0], step):
        block = rows._read(a, min(step, rows.shape[0] - a))
        digest.update(memoryview(np.ascontiguousarray(block)).cast("B"))
        if mask is None:
            continue
        finite = np.isfinite(block).all(axis=-1)
        bad = ~finite & ~mask[a:a + len(block)]
        if bad.any():
            row = a + int(np.argwhere(bad)[0][0])
            raise ClewsError(f"embeddings file {rows.path}: {rows.name} has NaN/inf values in unpadded segments "
                             f"(first in row {row})")
        padding_bad |= bool((~finite).any())
    return digest.hexdigest(), padding_bad
