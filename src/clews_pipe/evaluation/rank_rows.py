"""Per-query results of a distance matrix, computed by the ranks that own its query rows.

Right after the distance phase (every tile written, and on tf32/bf16 the float32 re-computation
done), each rank reads its own query-row blocks of ``distances.zarr`` back, one block (tile
rows × N float32) at a time, counts their per-query results (:mod:`.row_metrics`) and writes
each block's results as one small file beside the matrix, ``distances.per_query/block-<qi>.npz``
(written atomically, tagged with the matrix fingerprint: a present file with the right
fingerprint is a finished block, so a killed run resumes at the next unfinished one and a
recomputed matrix never meets old results). Rank 0 then reads only these N small rows back (AP, R1, NAR, ARP, chance AP,
positives, the ten nearest and each block's distance range) and reduces them.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from clews_pipe.errors import ClewsError
from clews_pipe.evaluation.distances import open_distances, row_blocks_for_rank
from clews_pipe.evaluation.row_metrics import FLOAT_FIELDS, CliqueIndex, RowResults, count_rows
from clews_pipe.retrieval.metrics import self_columns

FOLDER_SUFFIX = ".per_query"
ROW_FIELDS = FLOAT_FIELDS + ("n_positives", "nn_col", "nn_dist")


def block_path(path: str | Path, qi: int) -> Path:
    path = Path(path)
    return path.parent / (path.stem + FOLDER_SUFFIX) / f"block-{qi:07d}.npz"


def _read_block(path: str | Path, qi: int, fingerprint: str) -> RowResults | None:
    """A finished block's results, or None (absent, unreadable or of another matrix)."""
    file = block_path(path, qi)
    if not file.exists():
        return None
    try:
        with np.load(file, allow_pickle=False) as data:
            if str(data["fingerprint"]) != fingerprint:
                return None
            return RowResults(**{name: data[name] for name in ROW_FIELDS},
                              d_min=float(data["d_min"]), d_max=float(data["d_max"]))
    except Exception:  # cut short, damaged, another layout: counted again
        return None


def _write_block(path: str | Path, qi: int, fingerprint: str, result: RowResults) -> None:
    """Write-then-rename, without fsync: a file lost or cut short by a crash does not load (or
    has another fingerprint) and its block is simply counted again."""
    buffer = io.BytesIO()
    np.savez(buffer, fingerprint=np.asarray(fingerprint), d_min=np.float64(result.d_min),
             d_max=np.float64(result.d_max), **{name: getattr(result, name) for name in ROW_FIELDS})
    target = block_path(path, qi)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, target)


def count_my_rows(path: str | Path, rank: int = 0, world_size: int = 1, memory_mb: float = 64.0,
                  blocks: list[int] | None = None) -> int:
    """Count and store the per-query results of this rank's row blocks (those it had in the
    distance phase) that are not stored yet; return how many blocks were counted."""
    import zarr

    group = zarr.open_group(str(path), mode="r")
    matrix = group["distances"]
    tile, fingerprint = int(group.attrs["tile"]), str(group.attrs["fingerprint"])
    if blocks is None:
        blocks = row_blocks_for_rank(group["tile_done"].shape[0], rank, world_size,
                                     bool(group.attrs.get("symmetric", False)))
    todo = [qi for qi in blocks if not block_path(path, qi).exists() or _read_block(path, qi, fingerprint) is None]
    if not todo:
        return 0
    q_clique, c_clique = group["query_clique"][:], group["candidate_clique"][:]
    own = self_columns(group["query_track"][:], group["candidate_track"][:])
    index = CliqueIndex.build(c_clique)
    for qi in todo:
        q0, q1 = qi * tile, min(matrix.shape[0], (qi + 1) * tile)
        rows = np.asarray(matrix[q0:q1], dtype=np.float32)
        if np.isnan(rows).any():
            raise ClewsError(f"distance matrix {path}: NaN distances in rows {q0}..{q1 - 1}")
        result = count_rows(rows, q_clique[q0:q1], c_clique, own[q0:q1], index, memory_mb)
        del rows
        _write_block(path, qi, fingerprint, result)
    return len(todo)


def gather_rows(path: str | Path) -> RowResults:
    """Every query's stored results (rank 0, after every rank counted its blocks)."""
    group = open_distances(path)
    fingerprint = str(group.attrs["fingerprint"])
    parts = [_read_block(path, qi, fingerprint) for qi in range(group["tile_done"].shape[0])]
    missing = sum(part is None for part in parts)
    if missing:
        raise ClewsError(f"distance matrix {path}: per-query results of {missing} row blocks are missing")
    return RowResults.concat(parts)


def matrix_rows(path: str | Path, rank: int = 0, world_size: int = 1, barrier=None,
                memory_mb: float = 64.0) -> RowResults | None:
    """Per-query results of a finished matrix, counted on every rank; all of them on rank 0, None elsewhere."""
    barrier = barrier or (lambda: None)
    if rank == 0:
        open_distances(path)  # finished, or one error line
    barrier()
    count_my_rows(path, rank, world_size, memory_mb)
    barrier()
    return gather_rows(path) if rank == 0 else None
