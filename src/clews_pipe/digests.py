"""Content digests, computed here and nowhere else.

``file_sha256`` (a checkpoint, an embeddings file), ``json_sha256`` (settings and fingerprints in
canonical JSON), ``text_sha256`` (a table written as text, e.g. the store index), ``arrays_sha1``
(every value of numpy arrays: the distance matrix's inputs) and ``text_seed`` (a 63-bit generator
seed from a text, e.g. a track id). The per-part crc32 of a feature store and the per-block SHA-1 of
an embeddings store are part of those formats and live with them (``store/writer.py``,
``embeddings/zarr_format.py``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

BUFFER = 1 << 20


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BUFFER), b""):
            digest.update(block)
    return digest.hexdigest()


def json_sha256(obj) -> str:
    """sha256 of a JSON-able object in canonical form (sorted keys)."""
    return text_sha256(json.dumps(obj, sort_keys=True, default=str))


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def text_seed(text: str) -> int:
    """A non-negative 63-bit seed from the first 8 bytes of ``sha256(text)``."""
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def arrays_sha1(*arrays, extra: str = "") -> str:
    """Content hash of every value of every array (shapes and dtypes too): SHA-1 over the raw
    bytes, fed in 64 MiB blocks without copying contiguous arrays (~0.6 GB/s on one slow core);
    a change anywhere means a new matrix, never stale tiles."""
    digest = hashlib.sha1(extra.encode())
    for arr in arrays:
        if hasattr(arr, "digest"):  # a chunked store's rows: their recorded content digest
            digest.update(f"{tuple(arr.shape)}{arr.dtype}{arr.digest}".encode())
            continue
        arr = np.asarray(arr)
        digest.update(f"{arr.shape}{arr.dtype}".encode())
        flat = arr.reshape(-1)
        if flat.dtype.kind in "UO":
            digest.update("\x1f".join(map(str, flat.tolist())).encode())
            continue
        flat = np.ascontiguousarray(flat)
        step = max(1, (64 << 20) // max(flat.itemsize, 1))
        for start in range(0, flat.size, step):
            digest.update(memoryview(flat[start:start + step]).cast("B"))
    return digest.hexdigest()
