"""The embeddings file: padded segment embeddings of every track of a partition.

``embeddings.npz`` holds

``z``        float16/32 (N, S, D)   segment embeddings (20 s shingles every 5 s), padded to a common S
``mask``     bool  (N, S)      True = padding segment
``clique``   int   (N,)        clique label (an integer per clique)
``track``    str   (N,)        track ids
optional, for the segment-level protocol, one pair per query length tau (seconds):
``zq_<tau>``    float (N, S_tau, D)  embeddings of tau-long query windows every 5 s
``maskq_<tau>`` bool  (N, S_tau)     True = padding
with ``<tau>`` written as an integer when tau is whole (``zq_20``), else as a decimal (``zq_2.5``).
optional ``zqt`` / ``maskqt``: track-level query embeddings when queries are shingled differently
from candidates (``--qslen``/``--qshop``); absent means queries use ``z``/``mask``.
optional ``clique_name`` str (N,): the dataset's clique ids behind ``clique``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clews_pipe.atomic import atomic_path
from clews_pipe.errors import ClewsError, first_line


@dataclass
class Embeddings:
    z: np.ndarray  # (N, S, D) float16 or float32 (kept as stored; distances are computed in float32)
    mask: np.ndarray  # (N, S) bool, True = padding
    clique: np.ndarray  # (N,) int64
    track: np.ndarray  # (N,) str
    queries: dict[float, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # tau -> (z, mask)
    clique_name: np.ndarray | None = None
    track_queries: tuple[np.ndarray, np.ndarray] | None = None  # (zqt, maskqt)

    @property
    def n_tracks(self) -> int:
        return int(self.z.shape[0])

    def subset(self, rows) -> "Embeddings":
        """The tracks at ``rows`` (every array taken along its first axis; arrays read lazily stay
        lazy: a view of those rows, read on demand)."""
        rows = np.asarray(rows, dtype=np.int64)
        take = lambda arr: arr.take_rows(rows) if hasattr(arr, "take_rows") else arr[rows]  # noqa: E731
        return Embeddings(
            z=take(self.z), mask=take(self.mask), clique=self.clique[rows], track=self.track[rows],
            queries={tau: (take(zq), take(mq)) for tau, (zq, mq) in self.queries.items()},
            clique_name=None if self.clique_name is None else self.clique_name[rows],
            track_queries=None if self.track_queries is None else (take(self.track_queries[0]), take(self.track_queries[1])),
        )


def tau_key(tau: float) -> str:
    tau = float(tau)
    return str(int(tau)) if tau.is_integer() else repr(tau)


def write_npz_atomically(path: str | Path, arrays: dict) -> Path:
    """``np.savez`` (uncompressed) under a temporary name in the same folder, then rename."""
    path = Path(path)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return path


class _CheckedNpz:
    """An ``NpzFile`` whose members load lazily as before, but a member that cannot be read (an
    object array, which is never unpickled; a bad CRC; a damaged header) is one ClewsError line
    naming the file and the member."""

    def __init__(self, path: Path, data):
        self.path, self._data = path, data

    @property
    def files(self) -> list[str]:
        return list(self._data.files)

    def __contains__(self, key: str) -> bool:
        return key in self._data.files

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            return self._data[key]
        except KeyError:
            raise
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise ClewsError(f"embeddings file {self.path}: array {key!r} holds Python objects (dtype object); "
                                 "they are never unpickled") from None
            raise ClewsError(f"embeddings file {self.path}: array {key!r} is unreadable ({first_line(exc)})") from None
        except Exception as exc:  # zipfile.BadZipFile (bad CRC), zlib.error, OSError, EOFError
            raise ClewsError(f"embeddings file {self.path}: array {key!r} is damaged "
                             f"({type(exc).__name__}: {first_line(exc)})") from None


def open_npz(path: str | Path):
    """``(npz, set of array names)``: members load lazily, with ``allow_pickle=False``; a missing or
    unreadable file, or a member that cannot be read, → one-line :class:`ClewsError`."""
    path = Path(path)
    if not path.is_file():
        raise ClewsError(f"embeddings file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
        if not hasattr(data, "files"):
            raise ValueError("a single .npy array, not an .npz archive of named arrays")
        return _CheckedNpz(path, data), set(data.files)
    except Exception as exc:  # zipfile / format errors
        raise ClewsError(f"cannot read embeddings file {path}: {type(exc).__name__}: {first_line(exc)}") from None


def save_embeddings(path: str | Path, emb: Embeddings) -> Path:
    """Write ``emb`` as an (uncompressed) ``.npz``; atomically (temporary name, then rename)."""
    arrays = {
        "z": np.ascontiguousarray(emb.z, dtype=_storage_dtype(emb.z)),
        "mask": np.asarray(emb.mask, dtype=bool),
        "clique": np.asarray(emb.clique, dtype=np.int64),
        "track": np.asarray(emb.track, dtype=str),
    }
    if emb.clique_name is not None:
        arrays["clique_name"] = np.asarray(emb.clique_name, dtype=str)
    if emb.track_queries is not None:
        arrays["zqt"] = np.ascontiguousarray(emb.track_queries[0], dtype=_storage_dtype(emb.track_queries[0]))
        arrays["maskqt"] = np.asarray(emb.track_queries[1], dtype=bool)
    for tau, (zq, mq) in sorted(emb.queries.items()):
        arrays[f"zq_{tau_key(tau)}"] = np.ascontiguousarray(zq, dtype=_storage_dtype(zq))
        arrays[f"maskq_{tau_key(tau)}"] = np.asarray(mq, dtype=bool)
    return write_npz_atomically(path, arrays)


def _floats(path: Path, data, name: str, mask: np.ndarray, lazy: bool):
    """Member ``name``, checked (:func:`_check_z`); with ``lazy`` an uncompressed float16/32 member
    is read by rows on demand (:mod:`clews_pipe.embeddings.npz_rows`) instead of loaded."""
    if lazy:
        from clews_pipe.embeddings.npz_rows import member_rows

        rows = member_rows(path, name, mask)
        if rows is not None:
            return rows
        _warn_whole(path, name)
    return _check_z(path, name, data[name], mask)


def _warn_whole(path: Path, name: str) -> None:
    """A member that cannot be read by rows (compressed, float64, Fortran order) is loaded whole
    by every process: said once (by the first rank), with the way out."""
    import os
    import sys

    if os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("RANK", "0") == "0":
        print(f"warning: {path}: array {name!r} is compressed or not float16/float32 in C order, so every rank "
              "loads it whole; save it with np.savez (float16/32) or convert it once to a chunked store "
              "(clews_pipe.embeddings.zarr_format.write_embeddings_store) to read it by rows", file=sys.stderr)


def load_embeddings(path: str | Path, lazy: bool = False) -> Embeddings:
    """Read and validate an embeddings file; any problem → one-line :class:`ClewsError`. ``lazy``:
    the segment embeddings of an uncompressed file are read by rows on demand (no process holds
    them whole; the evaluator's path), masks and labels are loaded."""
    path = Path(path)
    data, keys = open_npz(path)
    missing = [k for k in ("z", "mask", "clique", "track") if k not in keys]
    if missing:
        raise ClewsError(f"embeddings file {path}: missing arrays {', '.join(missing)} (need z, mask, clique, track)")
    z = _shape_of(data, path, "z")
    if len(z.shape) != 3:
        raise ClewsError(f"embeddings file {path}: z must be (N, S, D), got shape {z.shape}")
    n, s, _ = z.shape
    if n == 0 or s == 0 or z.shape[2] == 0:
        raise ClewsError(f"embeddings file {path}: z has shape {z.shape}: no tracks, segments or dimensions")
    mask = data["mask"]
    clique = data["clique"]
    track = data["track"]
    if mask.shape != (n, s):
        raise ClewsError(f"embeddings file {path}: mask shape {mask.shape} does not match z {z.shape} (need (N, S))")
    if clique.shape != (n,) or track.shape != (n,):
        raise ClewsError(
            f"embeddings file {path}: clique {clique.shape} and track {track.shape} must both be ({n},)"
        )
    if not np.issubdtype(clique.dtype, np.integer):
        raise ClewsError(f"embeddings file {path}: clique must be integers, got dtype {clique.dtype}")
    z = _floats(path, data, "z", mask.astype(bool), lazy)
    queries: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    for key in sorted(keys):
        if not key.startswith("zq_"):
            continue
        label = key[3:]
        try:
            tau = float(label)
        except ValueError:
            raise ClewsError(f"embeddings file {path}: cannot read tau from array name {key!r}") from None
        mkey = f"maskq_{label}"
        if mkey not in keys:
            raise ClewsError(f"embeddings file {path}: {key} has no matching {mkey}")
        zq, mq = _shape_of(data, path, key), data[mkey]
        if len(zq.shape) != 3 or zq.shape[0] != n or zq.shape[2] != z.shape[2] or mq.shape != zq.shape[:2]:
            raise ClewsError(
                f"embeddings file {path}: {key} {zq.shape} / {mkey} {mq.shape} must be ({n}, S_tau, {z.shape[2]}) / ({n}, S_tau)"
            )
        queries[tau] = (_floats(path, data, key, mq.astype(bool), lazy), mq.astype(bool))
    track_queries = None
    if "zqt" in keys:
        if "maskqt" not in keys:
            raise ClewsError(f"embeddings file {path}: zqt has no matching maskqt")
        zqt, mqt = _shape_of(data, path, "zqt"), data["maskqt"].astype(bool)
        if len(zqt.shape) != 3 or zqt.shape[0] != n or zqt.shape[2] != z.shape[2] or mqt.shape != zqt.shape[:2]:
            raise ClewsError(f"embeddings file {path}: zqt {zqt.shape} / maskqt {mqt.shape} must be ({n}, S_q, {z.shape[2]}) / ({n}, S_q)")
        track_queries = (_floats(path, data, "zqt", mqt, lazy), mqt)
    track = track.astype(str)
    if len(set(track.tolist())) != n:
        raise ClewsError(f"embeddings file {path}: track ids are not unique")
    clique_name = data["clique_name"].astype(str) if "clique_name" in keys else None
    return Embeddings(
        z=z, mask=mask.astype(bool), clique=clique.astype(np.int64), track=track, queries=queries,
        clique_name=clique_name, track_queries=track_queries,
    )


def _shape_of(data, path: Path, name: str):
    """A member's shape and dtype from its ``.npy`` header (nothing else read), as a small object."""
    from types import SimpleNamespace

    try:
        with data._data.zip.open(f"{name}.npy") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _fortran, dtype = read_header(handle)
        if not dtype.hasobject:
            return SimpleNamespace(shape=tuple(shape), dtype=dtype)
    except Exception:  # an unusual member: the full reader below reports what is wrong with it
        pass
    arr = data[name]  # (an object array is refused here, with its own line)
    return SimpleNamespace(shape=arr.shape, dtype=arr.dtype)


def _storage_dtype(z: np.ndarray):
    return np.float16 if np.asarray(z).dtype == np.float16 else np.float32


def _check_z(path: Path, name: str, z: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if not np.issubdtype(z.dtype, np.floating):
        raise ClewsError(f"embeddings file {path}: {name} must be floating point, got dtype {z.dtype}")
    z = z.astype(_storage_dtype(z), copy=False)
    finite = np.isfinite(z).all(axis=-1)  # (N, S)
    bad = ~finite & ~mask.astype(bool)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise ClewsError(
            f"embeddings file {path}: {name} has NaN/inf values in {int(bad.sum())} unpadded segments (first in row {row})"
        )
    if (~finite).any():  # padding may hold anything; make it harmless
        z = np.where(finite[..., None], z, 0).astype(z.dtype)
    return z
