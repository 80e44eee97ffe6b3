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

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from clews_pipe.digests import arrays_sha1
from clews_pipe.errors import ClewsError
from clews_pipe.retrieval.redux import Redux
from clews_pipe.retrieval.tiles import (
    CandidateFeed, LazySource, check_precision, exact_pair_distances, tile_distances,
)

WIDE_TILE_FRACTION = 4  # a tile of rows larger than 1/4 of --memory-mb is read block by block


@dataclass
class TileSettings:
    tile: int = 512  # rows and columns per tile (= Zarr chunk)
    memory_mb: float = 256.0  # budget for one block of segment distances inside a tile
    device: str = "cpu"
    precision: str = "fp32"  # segment-distance matmul: fp32 | tf32 | bf16 (ranks re-decided in fp32)


def fingerprint(*arrays: np.ndarray, extra: str = "") -> str:
    """Content hash of the matrix's inputs (:func:`clews_pipe.digests.arrays_sha1`)."""
    return arrays_sha1(*arrays, extra=extra)


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
            if attrs.get("precision", "fp32") != "fp32":
                group.create_array("refined", shape=(n_tq,), chunks=(1,), dtype="uint8", fill_value=0)
            for name, values in tracks_cliques.items():
                values = np.asarray(values)
                dtype = str if values.dtype.kind in "UO" else values.dtype
                arr = group.create_array(name, shape=values.shape, dtype=dtype)
                arr[:] = values
            group.attrs.update(attrs)
    barrier()
    return zarr.open_group(str(path), mode="r+")


def _rows(array, a: int, b: int) -> torch.Tensor:
    """Rows ``a:b`` of an in-memory array or a chunked store's :class:`LazyRows` as a tensor."""
    return torch.as_tensor(np.ascontiguousarray(array[a:b]))


def _same_inputs(zq, mask_q, zc, mask_c) -> bool:
    if zq is zc and mask_q is mask_c:
        return True
    if hasattr(zq, "digest") or hasattr(zc, "digest"):
        return getattr(zq, "digest", None) == getattr(zc, "digest", None) and \
            getattr(mask_q, "digest", None) == getattr(mask_c, "digest", None)
    return zq.shape == zc.shape and np.array_equal(zq, zc) and np.array_equal(mask_q, mask_c)


@dataclass
class _Inputs:
    """The checked inputs of one matrix."""

    zq: object
    mask_q: object
    zc: object
    mask_c: object
    symmetric: bool


def _check_inputs(zq, mask_q, zc, mask_c, redux: Redux, query_track, candidate_track, query_clique,
                  candidate_clique, symmetric: bool | None) -> _Inputs:
    if not hasattr(zq, "digest"):
        zq, mask_q = np.asarray(zq), np.asarray(mask_q, dtype=bool)
    if not hasattr(zc, "digest"):
        zc, mask_c = np.asarray(zc), np.asarray(mask_c, dtype=bool)
    if len(zq.shape) != 3 or len(zc.shape) != 3 or zq.shape[2] != zc.shape[2]:
        raise ClewsError(f"distance matrix: query embeddings {tuple(zq.shape)} and candidates {tuple(zc.shape)} must be (N, S, D) with the same D")
    if tuple(mask_q.shape) != tuple(zq.shape[:2]) or tuple(mask_c.shape) != tuple(zc.shape[:2]):
        raise ClewsError(f"distance matrix: masks {tuple(mask_q.shape)} / {tuple(mask_c.shape)} do not match embeddings")
    n_q, n_c = zq.shape[0], zc.shape[0]
    if len(query_track) != n_q or len(candidate_track) != n_c or len(query_clique) != n_q or len(candidate_clique) != n_c:
        raise ClewsError("distance matrix: track / clique lists do not match the number of embeddings")
    same_tracks = n_q == n_c and list(map(str, query_track)) == list(map(str, candidate_track))
    same_inputs = same_tracks and _same_inputs(zq, mask_q, zc, mask_c)
    if symmetric is None:
        symmetric = same_inputs and redux.symmetric
    elif symmetric and not (same_inputs and redux.symmetric):
        raise ClewsError(f"distance matrix: symmetric mode needs identical queries and candidates and a symmetric reduction, not {redux}")
    return _Inputs(zq, mask_q, zc, mask_c, bool(symmetric))


def _todo_tiles(done_marks, my_rows: list[int], symmetric: bool) -> list[tuple[int, int]]:
    todo = []
    n_tc = done_marks.shape[1]
    for qi in my_rows:
        done_row = done_marks[qi]
        first_col = qi if symmetric else 0
        todo.extend((qi, ci) for ci in range(first_col, n_tc) if not done_row[ci])
    return todo


def _fill_tiles(group, todo, inputs: _Inputs, redux: Redux, settings: TileSettings, precision: str, tile: int,
                bar, on_tile) -> None:
    """Compute, write and mark each (query block, candidate block) tile of ``todo``."""
    matrix, done_marks = group["distances"], group["tile_done"]
    zq, mask_q, zc, mask_c = inputs.zq, inputs.mask_q, inputs.zc, inputs.mask_c
    n_q, n_c = zq.shape[0], zc.shape[0]
    row_bytes = int(zc.shape[1]) * int(zc.shape[2]) * np.dtype(zc.dtype).itemsize + int(zc.shape[1])
    # wide rows on the CPU: a tile's rows are read block by block inside the tile, never whole
    lazy = (settings.device == "cpu" and hasattr(zc, "digest")  # rows read on demand (store, npz), not in memory
            and tile * row_bytes > settings.memory_mb * 2**20 / WIDE_TILE_FRACTION)
    feed = CandidateFeed(lambda a, b: (zc[a:b], mask_c[a:b]), n_c, row_bytes, settings.device,
                         block_rows=tile if lazy else max(tile, 4096 // tile * tile),
                         lazy_rows=LazySource(zc, mask_c) if lazy else None)
    queries = LazySource(zq, mask_q) if lazy else None
    if lazy:  # the bounded-memory path: freed block copies return to the system (costs page faults)
        from clews_pipe.resources import bound_heap

        bound_heap()
    current_qi, q_block = None, None
    for qi, ci in todo:
        q0, q1 = qi * tile, min(n_q, (qi + 1) * tile)
        c0, c1 = ci * tile, min(n_c, (ci + 1) * tile)
        if qi != current_qi:  # this rank's query rows, one row block at a time (sent to the device once)
            current_qi = qi
            q_block = (queries.rows(q0, q1) if lazy else _rows(zq, q0, q1).to(settings.device),
                       _rows(mask_q, q0, q1).to(settings.device))
        zc_block, mc_block = feed.get(c0, c1)
        block = tile_distances(
            q_block[0], q_block[1], zc_block, mc_block, redux, settings.memory_mb, settings.device,
            diagonal=inputs.symmetric and qi == ci, precision=precision,
        )
        matrix[q0:q1, c0:c1] = block
        if inputs.symmetric and ci != qi:
            matrix[c0:c1, q0:q1] = block.T
        done_marks[qi, ci] = 1
        if bar is not None:
            bar.update(1)
        if on_tile is not None:
            on_tile(qi, ci)


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

    The embeddings may be numpy arrays or the lazy rows of a chunked embeddings store
    (:func:`~clews_pipe.embeddings.formats.open_embeddings`): a rank then reads only its
    query rows, one tile at a time, and streams candidate blocks (see :class:`CandidateFeed`),
    so its memory is set by the tile and block sizes. With ``settings.precision`` tf32/bf16
    every value that decides a rank is recomputed in float32 afterwards (:func:`_refine_rows`).
    """
    settings = settings or TileSettings()
    redux = Redux.parse(redux)
    precision = check_precision(settings.precision)
    inputs = _check_inputs(zq, mask_q, zc, mask_c, redux, query_track, candidate_track, query_clique,
                           candidate_clique, symmetric)
    barrier = barrier or (lambda: None)
    tile = int(settings.tile)
    path = Path(path)
    names = {
        "query_track": np.asarray(query_track, dtype=str),
        "candidate_track": np.asarray(candidate_track, dtype=str),
        "query_clique": np.asarray(query_clique, dtype=np.int64),
        "candidate_clique": np.asarray(candidate_clique, dtype=np.int64),
    }
    attrs = {
        "redux": redux.name, "tile": tile, "symmetric": inputs.symmetric, "precision": precision,
        "fingerprint": fingerprint(
            inputs.zq, inputs.mask_q, inputs.zc, inputs.mask_c, names["query_track"], names["candidate_track"],
            np.asarray(query_clique), np.asarray(candidate_clique),
            extra=f"{redux}|{tile}|{inputs.symmetric}" + ("" if precision == "fp32" else f"|{precision}"),
        ),
    }
    group = _open_or_create(path, inputs.zq.shape[0], inputs.zc.shape[0], tile, attrs, names, rank, barrier, resume)
    my_rows = row_blocks_for_rank(group["tile_done"].shape[0], rank, world_size, inputs.symmetric)
    todo = _todo_tiles(group["tile_done"], my_rows, inputs.symmetric)
    bar = None
    if progress and rank == 0 and todo:
        from clews_pipe.progress import progress_bar

        bar = progress_bar(total=len(todo), desc=f"distances ({redux}, rank 0 of {world_size})", unit="tile")
    if todo:
        _fill_tiles(group, todo, inputs, redux, settings, precision, tile, bar, on_tile)
    if bar is not None:
        bar.close()
    barrier()
    if precision != "fp32":
        _refine_rows(group, my_rows, inputs.zq, inputs.mask_q, inputs.zc, inputs.mask_c, redux, settings, tile)
        barrier()
    return path


REFINE_ERROR_FACTOR = 4.0  # margin = this x the largest |approximate - exact| seen in the row block
REFINE_RELATIVE_FLOOR = 2.0**-6  # and at least this fraction of the block's median distance


def _refine_rows(group, my_rows, zq, mask_q, zc, mask_c, redux: Redux, settings: TileSettings, tile: int) -> None:
    """:func:`refine_block` over this rank's row blocks of the persisted matrix (resumable:
    ``refined`` marks each finished row block)."""
    matrix = group["distances"]
    refined = group["refined"] if "refined" in group else None
    q_track = np.asarray(group["query_track"][:].tolist(), dtype=str)
    c_track = np.asarray(group["candidate_track"][:].tolist(), dtype=str)
    q_clique, c_clique = group["query_clique"][:], group["candidate_clique"][:]
    col_of = {t: j for j, t in enumerate(c_track.tolist())}
    for qi in my_rows:
        if refined is not None and refined[qi]:
            continue
        q0, q1 = qi * tile, min(matrix.shape[0], (qi + 1) * tile)
        rows = matrix[q0:q1]
        own = np.asarray([col_of.get(t, -1) for t in q_track[q0:q1]])
        refine_block(rows, q0, q_clique[q0:q1], c_clique, own, zq, mask_q, zc, mask_c, redux, settings)
        matrix[q0:q1] = rows
        if refined is not None:
            refined[qi] = 1


def refine_block(rows: np.ndarray, q0: int, q_clique, c_clique, own: np.ndarray, zq, mask_q, zc, mask_c,
                 redux: Redux, settings: TileSettings) -> int:
    """Recompute in float32, in place, every value of the approximate rows ``rows`` (queries
    ``q0 .. q0 + len(rows)``) that decides a rank; returns how many values were recomputed.

    Per query: its relevant candidates (same clique, its own column ``own`` excluded), then every
    candidate whose approximate value is at most the largest relevant value plus a margin
    (REFINE_ERROR_FACTOR times the largest approximation error measured on the relevant pairs of
    the block, and at least REFINE_RELATIVE_FLOOR of its median distance). Candidates beyond that
    rank after every relevant one whatever their exact value, so AP, the rank of the first match
    and NAR equal the float32 ones.
    """
    q1 = q0 + rows.shape[0]
    rel = np.asarray(q_clique)[:, None] == np.asarray(c_clique)[None, :]
    has_own = own >= 0
    rel[np.flatnonzero(has_own), own[has_own]] = False
    pick_i, pick_j = np.nonzero(rel)
    exact = _exact_values(pick_i + q0, pick_j, zq, mask_q, zc, mask_c, redux, settings)
    approx = rows[pick_i, pick_j]
    finite = np.isfinite(exact) & np.isfinite(approx)
    err = float(np.abs(exact[finite] - approx[finite]).max()) if finite.any() else 0.0
    rows[pick_i, pick_j] = exact
    finite_rows = rows[np.isfinite(rows)]
    floor = REFINE_RELATIVE_FLOOR * float(np.median(np.abs(finite_rows))) if finite_rows.size else 0.0
    margin = max(REFINE_ERROR_FACTOR * err, floor)
    worst = np.full(q1 - q0, -np.inf)
    np.maximum.at(worst, pick_i, np.where(np.isfinite(exact), exact, np.inf))
    near = (rows <= (worst + margin)[:, None]) & ~rel
    if has_own.any():
        near[np.flatnonzero(has_own), own[has_own]] = False
    near_i, near_j = np.nonzero(near)
    if near_i.size:
        rows[near_i, near_j] = _exact_values(near_i + q0, near_j, zq, mask_q, zc, mask_c, redux, settings)
    return int(len(pick_i) + len(near_i))


def _exact_values(qs: np.ndarray, cs: np.ndarray, zq, mask_q, zc, mask_c, redux: Redux, settings: TileSettings,
                  batch: int = 4096) -> np.ndarray:
    """Float32 reduced distance of the pairs ``(qs[k], cs[k])``, in batches of gathered rows."""
    out = np.empty(len(qs), dtype=np.float32)
    for p0 in range(0, len(qs), batch):
        q_idx, c_idx = qs[p0 : p0 + batch], cs[p0 : p0 + batch]
        uq, q_inv = np.unique(q_idx, return_inverse=True)
        uc, c_inv = np.unique(c_idx, return_inverse=True)
        q_z, q_m = torch.as_tensor(np.asarray(zq[uq])), torch.as_tensor(np.asarray(mask_q[uq], dtype=bool))
        c_z, c_m = torch.as_tensor(np.asarray(zc[uc])), torch.as_tensor(np.asarray(mask_c[uc], dtype=bool))
        q_inv, c_inv = torch.as_tensor(q_inv), torch.as_tensor(c_inv)
        out[p0 : p0 + len(q_idx)] = exact_pair_distances(
            q_z[q_inv], q_m[q_inv], c_z[c_inv], c_m[c_inv], redux, settings.memory_mb, settings.device).numpy()
    return out


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
    if "refined" in group and not group["refined"][:].all():
        raise ClewsError(f"distance matrix {path} is incomplete: the float32 re-computation of "
                         f"{int((group['refined'][:] == 0).sum())} row blocks is missing")
    return group
