"""A chunked embeddings store (Zarr) that ranks write in place and read a block at a time.

``embeddings.zarr`` is a Zarr group with the arrays of ``embeddings.npz`` (see
:mod:`clews_pipe.embeddings.npz_format`), chunked by blocks of ``block`` tracks:

``z``       float16/32 (N, S, D), chunks (block, S, D)     ``mask`` bool (N, S), chunks (block, S)
``clique``  int64 (N,)   ``track`` str (N,)   optional ``clique_name`` str (N,)
optional ``zq_<tau>``/``maskq_<tau>`` and ``zqt``/``maskqt`` chunked the same way
``block_done``  uint8 (n_blocks,), one chunk per block: 1 = every array's rows of the block written
``block_sha1``  uint8 (n_blocks, 20), one chunk per block: SHA-1 of the block's bytes (all arrays)
attributes: ``format``, ``version``, ``block``, ``arrays`` (the per-track array names)

Rank 0 creates the group (:meth:`EmbeddingStoreWriter.create`), every rank then writes whole
blocks (:meth:`EmbeddingStoreWriter.write_rows`): no two ranks share a chunk and nothing is merged
through Python lists or read back whole. :func:`open_zarr_embeddings` returns an
:class:`~clews_pipe.embeddings.npz_format.Embeddings` whose per-track arrays are
:class:`LazyRows`: ``arr[a:b]`` reads only those rows, so a rank reads its query rows and streams
candidate blocks; the set's fingerprint comes from the recorded block digests, not a full read.
``clews_pipe.embeddings.formats.open_embeddings`` opens this layout or the ``.npz`` one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from clews_pipe.errors import ClewsError
from clews_pipe.embeddings.npz_format import Embeddings, tau_key

FORMAT_NAME = "clews-pipe-embeddings"
FORMAT_VERSION = 1
DEFAULT_BLOCK = 512  # tracks per chunk (= the evaluator's default tile)


class LazyRows:
    """Rows of one chunked array, read on demand: ``shape``, ``dtype``, ``ndim``, ``len``,
    ``arr[a:b]`` / ``arr[index array]`` → numpy; ``digest`` identifies the content."""

    def __init__(self, array, digest: str):
        self._array = array
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)
        self.digest = digest

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            return np.asarray(self._array[key])
        if isinstance(key, np.ndarray) and key.dtype.kind in "iu":
            return np.asarray(self._array.get_orthogonal_selection((key,)))
        return np.asarray(self._array[key])

    def __array__(self, dtype=None, copy=None):
        out = np.asarray(self._array[...])
        return out if dtype is None else out.astype(dtype)

    def take_rows(self, rows):
        """The rows ``rows``, still read on demand."""
        from clews_pipe.embeddings.npz_rows import RowsView

        return RowsView(self, rows)

    def __repr__(self) -> str:
        return f"LazyRows(shape={self.shape}, dtype={self.dtype})"


def _strings(values) -> np.ndarray:
    """Zarr's variable-length strings (numpy StringDType) as a fixed-width ``str`` array."""
    return np.asarray(np.asarray(values).tolist(), dtype=str)


def is_lazy(array) -> bool:
    return isinstance(array, LazyRows)


def _pairs(queries: dict | None, track_queries: tuple | None) -> list[tuple[str, str]]:
    names = [("z", "mask")]
    if track_queries is not None:
        names.append(("zqt", "maskqt"))
    for tau in sorted(queries or {}):
        names.append((f"zq_{tau_key(tau)}", f"maskq_{tau_key(tau)}"))
    return names


class EmbeddingStoreWriter:
    """Writes whole blocks of rows into an embeddings store created by :meth:`create`."""

    def __init__(self, path: str | Path):
        import zarr

        self.path = Path(path)
        try:
            self.group = zarr.open_group(str(self.path), mode="r+")
            attrs = dict(self.group.attrs)
        except Exception as exc:  # zarr raises several types for a missing/broken group
            raise ClewsError(f"{self.path}: not an embeddings store ({type(exc).__name__})") from None
        if attrs.get("format") != FORMAT_NAME:
            raise ClewsError(f"{self.path}: not an embeddings store (format={attrs.get('format')!r})")
        self.block = int(attrs["block"])
        self.arrays = [tuple(p) for p in attrs["arrays"]]
        self.n_tracks = int(self.group["clique"].shape[0])

    @classmethod
    def create(cls, path: str | Path, n_tracks: int, n_segments: int, dim: int, *, track, clique,
               dtype: str = "float16", clique_name=None, query_segments: dict | None = None,
               track_query_segments: int | None = None, block: int = DEFAULT_BLOCK) -> "EmbeddingStoreWriter":
        """Create the group (rank 0 only; other ranks open it with ``EmbeddingStoreWriter(path)``
        after a barrier). ``query_segments``: {tau: S_tau} for segment-level queries;
        ``track_query_segments``: S of ``zqt`` when track-level queries are shingled apart."""
        import shutil

        import zarr

        path = Path(path)
        if n_tracks < 1 or n_segments < 1 or dim < 1 or block < 1:
            raise ClewsError(f"{path}: embeddings store needs N, S, D, block >= 1 (got {n_tracks}, {n_segments}, {dim}, {block})")
        if dtype not in ("float16", "float32"):
            raise ClewsError(f"{path}: embeddings dtype must be float16 or float32, not {dtype!r}")
        track = np.asarray(track, dtype=str)
        clique = np.asarray(clique)
        if track.shape != (n_tracks,) or clique.shape != (n_tracks,):
            raise ClewsError(f"{path}: track {track.shape} and clique {clique.shape} must be ({n_tracks},)")
        if len(set(track.tolist())) != n_tracks:
            raise ClewsError(f"{path}: track ids are not unique")
        if path.exists():
            shutil.rmtree(path)
        group = zarr.open_group(str(path), mode="w")
        queries = {float(t): int(s) for t, s in (query_segments or {}).items()}
        pairs = _pairs(queries, (0, 0) if track_query_segments else None)
        widths = {"z": n_segments, "zqt": track_query_segments}
        widths.update({f"zq_{tau_key(t)}": s for t, s in queries.items()})
        for zname, mname in pairs:
            s = int(widths[zname])
            group.create_array(zname, shape=(n_tracks, s, dim), chunks=(block, s, dim), dtype=dtype, fill_value=0)
            group.create_array(mname, shape=(n_tracks, s), chunks=(block, s), dtype=bool, fill_value=True)
        group.create_array("clique", shape=(n_tracks,), dtype="int64")[:] = clique.astype(np.int64)
        group.create_array("track", shape=(n_tracks,), dtype=str)[:] = track
        if clique_name is not None:
            group.create_array("clique_name", shape=(n_tracks,), dtype=str)[:] = np.asarray(clique_name, dtype=str)
        n_blocks = -(-n_tracks // block)
        group.create_array("block_done", shape=(n_blocks,), chunks=(1,), dtype="uint8", fill_value=0)
        group.create_array("block_sha1", shape=(n_blocks, 20), chunks=(1, 20), dtype="uint8", fill_value=0)
        group.attrs.update({"format": FORMAT_NAME, "version": FORMAT_VERSION, "block": int(block),
                            "arrays": [list(p) for p in pairs]})
        return cls(path)

    def blocks_for_rank(self, rank: int, world_size: int) -> list[int]:
        n_blocks = -(-self.n_tracks // self.block)
        return list(range(rank, n_blocks, world_size))

    def write_rows(self, start: int, z: np.ndarray, mask: np.ndarray, extra: dict | None = None) -> None:
        """Write rows ``start : start + len(z)``: one whole block (the last may be short).
        ``extra``: {array name: values} for the other arrays of the set (``zqt``, ``zq_<tau>``, masks)."""
        if start % self.block:
            raise ClewsError(f"{self.path}: writes must start at a block boundary ({self.block}), not row {start}")
        stop = start + len(z)
        if stop != min(self.n_tracks, start + self.block):
            raise ClewsError(f"{self.path}: rows {start}:{stop} are not one whole block of {self.block}")
        values = {"z": z, "mask": mask, **(extra or {})}
        digest = hashlib.sha1()
        for zname, mname in self.arrays:
            for name in (zname, mname):
                if name not in values:
                    raise ClewsError(f"{self.path}: block at row {start} has no values for array {name}")
                target = self.group[name]
                arr = np.ascontiguousarray(values[name], dtype=target.dtype)
                if arr.shape[1:] != tuple(target.shape[1:]):
                    raise ClewsError(f"{self.path}: {name} rows of shape {arr.shape[1:]} != store {tuple(target.shape[1:])}")
                target[start:stop] = arr
                digest.update(arr.tobytes())
        b = start // self.block
        self.group["block_sha1"][b] = np.frombuffer(digest.digest(), dtype=np.uint8)
        self.group["block_done"][b] = 1

    def close(self) -> None:
        """Nothing is buffered (every block is written when given); kept for symmetry."""


def is_embeddings_store(path: Path) -> bool:
    """True when ``path`` is laid out as a chunked embeddings store (a zarr group with block records)."""
    return path.is_dir() and (path / "zarr.json").is_file() and (path / "block_done").exists()


def open_zarr_embeddings(path: Path) -> Embeddings:
    """A chunked embeddings store with its rows read lazily (:class:`LazyRows`).

    Any problem → one-line :class:`ClewsError` naming the path."""
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
        attrs = dict(group.attrs)
    except Exception as exc:
        raise ClewsError(f"{path}: not an embeddings store ({type(exc).__name__}: {exc})") from None
    if attrs.get("format") != FORMAT_NAME or attrs.get("version") != FORMAT_VERSION:
        raise ClewsError(f"{path}: not a clews-pipe embeddings store (format={attrs.get('format')!r}, "
                         f"version={attrs.get('version')!r})")
    try:
        done = group["block_done"][:]
        sha = group["block_sha1"][:]
        clique = group["clique"][:]
        track = _strings(group["track"][:])
        clique_name = _strings(group["clique_name"][:]) if "clique_name" in group else None
        pairs = [tuple(p) for p in attrs["arrays"]]
        arrays = {name: group[name] for pair in pairs for name in pair}
    except Exception as exc:
        raise ClewsError(f"{path}: unreadable embeddings store ({type(exc).__name__}: {exc})") from None
    if not done.all():
        missing = np.flatnonzero(done == 0)
        raise ClewsError(f"{path}: embeddings store is incomplete: {len(missing)} of {len(done)} blocks missing "
                         f"(first at row {int(missing[0]) * int(attrs['block'])})")
    base = hashlib.sha1(sha.tobytes()).hexdigest()

    def lazy(name: str) -> LazyRows:
        return LazyRows(arrays[name], f"{base}:{name}")

    queries = {}
    for zname, mname in pairs:
        if zname.startswith("zq_"):
            queries[float(zname[3:])] = (lazy(zname), lazy(mname))
    track_queries = (lazy("zqt"), lazy("maskqt")) if ("zqt", "maskqt") in pairs else None
    return Embeddings(z=lazy("z"), mask=lazy("mask"), clique=clique.astype(np.int64), track=track, queries=queries,
                      clique_name=clique_name, track_queries=track_queries)


def content_sha256(path: str | Path) -> str:
    """sha256 of a complete store's content: its recorded per-block digests (every value of every
    per-track array), track ids and cliques; nothing else is read. ClewsError when incomplete."""
    emb = open_zarr_embeddings(Path(path))
    digest = hashlib.sha256(str(emb.z.digest).encode())
    digest.update("\x1f".join(np.asarray(emb.track, dtype=str).tolist()).encode())
    digest.update(np.ascontiguousarray(emb.clique, dtype=np.int64).tobytes())
    return digest.hexdigest()


def write_embeddings_store(path: str | Path, emb: Embeddings, block: int = DEFAULT_BLOCK) -> Path:
    """Copy an in-memory :class:`Embeddings` into a chunked store (one process; for conversions
    of ``.npz`` files and tests)."""
    z = np.asarray(emb.z)
    queries = {t: int(np.asarray(q[0]).shape[1]) for t, q in emb.queries.items()}
    writer = EmbeddingStoreWriter.create(
        path, z.shape[0], z.shape[1], z.shape[2], track=emb.track, clique=emb.clique,
        dtype="float16" if z.dtype == np.float16 else "float32", clique_name=emb.clique_name,
        query_segments=queries,
        track_query_segments=None if emb.track_queries is None else int(np.asarray(emb.track_queries[0]).shape[1]),
        block=block,
    )
    for start in range(0, z.shape[0], block):
        stop = min(z.shape[0], start + block)
        extra = {}
        if emb.track_queries is not None:
            extra["zqt"], extra["maskqt"] = emb.track_queries[0][start:stop], emb.track_queries[1][start:stop]
        for tau, (zq, mq) in emb.queries.items():
            extra[f"zq_{tau_key(tau)}"], extra[f"maskq_{tau_key(tau)}"] = zq[start:stop], mq[start:stop]
        writer.write_rows(start, z[start:stop], np.asarray(emb.mask)[start:stop], extra)
    return Path(path)
