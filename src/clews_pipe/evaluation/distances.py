"""The track distance matrix, computed in tiles, sharded over ranks, persisted and resumable.

``distances.zarr`` is a Zarr group with

``distances``         float32 (N, M), chunked by tile (NaN = not computed yet)
``query_track``       str (N,)      ``candidate_track`` str (M,)
``query_clique``      int64 (N,)    ``candidate_clique`` int64 (M,)
``tile_done``         uint8 (tiles_q, tiles_c), one chunk per query-row block: 1 = tile written
attributes: ``redux``, ``fingerprint`` (inputs + settings), ``tile``, ``symmetric``.

Each rank takes whole query-row blocks, so no two ranks ever write the same chunk of
``distances`` or ``tile_done``. A tile is marked done only after its values are written, so a
killed run restarts at the first unfinished tile and produces the identical matrix.

Within a tile, segment distances for a (query block x candidate block) come from one matmul and
are reduced together; the block size follows a memory budget, so peak memory is set by the
budget and tile size, not by N.

When queries and candidates are the same tracks and the reduction is symmetric in query and
candidate (min, max, mean, best-r, bpwr-r), only tiles on and above the diagonal are computed and
each is mirrored into its transposed chunk.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from clews_pipe.errors import ClewsError
from clews_pipe.retrieval.redux import Redux
from clews_pipe.retrieval.tiles import tile_distances



@dataclass
class TileSettings:
    tile: int = 512  # rows and columns per tile (= Zarr chunk)
    memory_mb: float = 256.0  # budget for one block of segment distances inside a tile
    device: str = "cpu"


def fingerprint(*arrays: np.ndarray, extra: str = "") -> str:
    """Content hash of every value of every array (shapes and dtypes too): SHA-1 over the raw
    bytes, fed in 64 MiB blocks without copying contiguous arrays (~0.6 GB/s on one slow core);
    a change anywhere means a new matrix, never stale tiles."""
    digest = hashlib.sha1(extra.encode())
    for arr in arrays:
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


def row_blocks_for_rank(n_blocks: int, rank: int, world_size: int, symmetric: bool) -> list[int]:
    """Query-row blocks of one rank. Symmetric runs have longer rows first, so ranks go in a snake."""
    if not symmetric:
        return list(range(rank, n_blocks, world_size))
    mine = []
    for i in range(n_blocks):
        lap, pos = divmod(i, world_size)
        owner = pos if lap % 2 == 0 else world_size - 1 - pos
        if owner == rank:
            mine.append(i)
    return mine


def _open_or_create(
    path: Path, n_q: int, n_c: int, tile: int, attrs: dict, tracks_cliques: dict, rank: int, barrier: Callable,
    resume: bool,
):
    import zarr

    if rank == 0:
        reuse = False
        if path.exists() and resume:
            try:
                group = zarr.open_group(str(path), mode="r")
                reuse = (
                    dict(group.attrs).get("fingerprint") == attrs["fingerprint"]
                    and group["distances"].shape == (n_q, n_c)
                )
            except Exception:
                reuse = False
        if not reuse:
            if path.exists():
                shutil.rmtree(path)
            group = zarr.open_group(str(path), mode="w")
            group.create_array("distances", shape=(n_q, n_c), chunks=(tile, tile), dtype="float32", fill_value=np.nan)
            n_tq, n_tc = -(-n_q // tile), -(-n_c // tile)
            group.create_array("tile_done", shape=(n_tq, n_tc), chunks=(1, n_tc), dtype="uint8", fill_value=0)
            for name, values in tracks_cliques.items():
                values = np.asarray(values)
                dtype = str if values.dtype.kind in "UO" else values.dtype
                arr = group.create_array(name, shape=values.shape, dtype=dtype)
                arr[:] = values
            group.attrs.update(attrs)
    barrier()
    return zarr.open_group(str(path), mode="r+")


def compute_distance_matrix(
    path: str | Path,
    zq, mask_q, zc, mask_c,
    redux: Redux | str,
    *,
    query_track, candidate_track, query_clique, candidate_clique,
    settings: TileSettings | None = None,
    symmetric: bool | None = None,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] | None = None,
    on_tile: Callable[[int, int], None] | None = None,
    progress: bool = True,
    resume: bool = True,
) -> Path:
    """Fill ``path`` (a Zarr group) with the (N, M) reduced distance matrix; return ``path``.

    Every rank calls this with the same inputs; rank ``r`` of ``world_size`` computes its query-row
    blocks. ``barrier`` synchronises ranks (needed when ``world_size > 1``). ``on_tile(qi, ci)`` is
    called after each tile is written and marked done. Tiles already marked done (from an earlier,
    interrupted run over the same inputs and settings) are skipped.
    """
    settings = settings or TileSettings()
    redux = Redux.parse(redux)
    zq_t = torch.as_tensor(np.asarray(zq))
    zc_t = torch.as_tensor(np.asarray(zc))
    mq_t = torch.as_tensor(np.asarray(mask_q, dtype=bool))
    mc_t = torch.as_tensor(np.asarray(mask_c, dtype=bool))
    if zq_t.ndim != 3 or zc_t.ndim != 3 or zq_t.shape[2] != zc_t.shape[2]:
        raise ClewsError(f"distance matrix: query embeddings {tuple(zq_t.shape)} and candidates {tuple(zc_t.shape)} must be (N, S, D) with the same D")
    if mq_t.shape != zq_t.shape[:2] or mc_t.shape != zc_t.shape[:2]:
        raise ClewsError(f"distance matrix: masks {tuple(mq_t.shape)} / {tuple(mc_t.shape)} do not match embeddings")
    n_q, n_c = zq_t.shape[0], zc_t.shape[0]
    if len(query_track) != n_q or len(candidate_track) != n_c or len(query_clique) != n_q or len(candidate_clique) != n_c:
        raise ClewsError("distance matrix: track / clique lists do not match the number of embeddings")
    same_tracks = n_q == n_c and list(map(str, query_track)) == list(map(str, candidate_track))
    same_inputs = same_tracks and zq_t.shape == zc_t.shape and bool(torch.equal(zq_t, zc_t)) and bool(torch.equal(mq_t, mc_t))
    if symmetric is None:
        symmetric = same_inputs and redux.symmetric
    elif symmetric and not (same_inputs and redux.symmetric):
        raise ClewsError(f"distance matrix: symmetric mode needs identical queries and candidates and a symmetric reduction, not {redux}")
    barrier = barrier or (lambda: None)
    tile = int(settings.tile)
    path = Path(path)
    attrs = {
        "redux": redux.name,
        "tile": tile,
        "symmetric": bool(symmetric),
        "fingerprint": fingerprint(
            zq_t.numpy(), mq_t.numpy(), zc_t.numpy(), mc_t.numpy(), np.asarray(query_track, dtype=str),
            np.asarray(candidate_track, dtype=str), np.asarray(query_clique), np.asarray(candidate_clique),
            extra=f"{redux}|{tile}|{symmetric}",
        ),
    }
    group = _open_or_create(
        path, n_q, n_c, tile, attrs,
        {
            "query_track": np.asarray(query_track, dtype=str),
            "candidate_track": np.asarray(candidate_track, dtype=str),
            "query_clique": np.asarray(query_clique, dtype=np.int64),
            "candidate_clique": np.asarray(candidate_clique, dtype=np.int64),
        },
        rank, barrier, resume,
    )
    matrix = group["distances"]
    done_marks = group["tile_done"]
    n_tq, n_tc = done_marks.shape
    my_rows = row_blocks_for_rank(n_tq, rank, world_size, symmetric)
    todo = []
    for qi in my_rows:
        done_row = done_marks[qi]
        first_col = qi if symmetric else 0
        todo.extend((qi, ci) for ci in range(first_col, n_tc) if not done_row[ci])
    bar = None
    if progress and rank == 0 and todo:
        from clews_pipe.progress import progress_bar

        bar = progress_bar(total=len(todo), desc=f"distances ({redux}, rank 0 of {world_size})", unit="tile")
    for qi, ci in todo:
        q0, q1 = qi * tile, min(n_q, (qi + 1) * tile)
        c0, c1 = ci * tile, min(n_c, (ci + 1) * tile)
        block = tile_distances(
            zq_t[q0:q1], mq_t[q0:q1], zc_t[c0:c1], mc_t[c0:c1], redux, settings.memory_mb, settings.device,
            diagonal=symmetric and qi == ci,
        )
        matrix[q0:q1, c0:c1] = block
        if symmetric and ci != qi:
            matrix[c0:c1, q0:q1] = block.T
        done_marks[qi, ci] = 1
        if bar is not None:
            bar.update(1)
        if on_tile is not None:
            on_tile(qi, ci)
    if bar is not None:
        bar.close()
    barrier()
    return path


def open_distances(path: str | Path):
    """The finished matrix group (read-only); ClewsError when absent or incomplete."""
    import zarr

    path = Path(path)
    try:
        group = zarr.open_group(str(path), mode="r")
        done = group["tile_done"][:]
    except Exception as exc:
        raise ClewsError(f"cannot open distance matrix {path}: {type(exc).__name__}: {exc}") from None
    symmetric = bool(group.attrs.get("symmetric", False))
    needed = np.triu(np.ones_like(done, dtype=bool)) if symmetric else np.ones_like(done, dtype=bool)
    if not done[needed].all():
        raise ClewsError(f"distance matrix {path} is incomplete: {int((done[needed] == 0).sum())} tiles missing")
    return group
