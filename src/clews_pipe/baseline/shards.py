"""Query rows of the baseline's distance matrix, computed by the ranks block by block.

Rank ``r`` of ``w`` takes the row blocks ``r, r + w, ...`` of ``tile`` queries and writes each as
``OUT/qmax-rows/block-<b>.npy`` (write-then-rename), so no two ranks write one file and a killed
run resumes at the first missing block. ``OUT/qmax-rows/fingerprint.txt`` names the inputs and
settings (tracks, cliques, store index, Qmax parameters): rank 0 clears the folder when it differs.
After a barrier, rank 0 reads the blocks back into the (N, N) matrix (the baseline is quadratic in
N anyway; 10,000 tracks are 400 MB of float32).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

ROWS_DIR = "qmax-rows"


def _prepare(folder: Path, fingerprint: str) -> None:
    stamp = folder / "fingerprint.txt"
    if folder.exists() and (not stamp.is_file() or stamp.read_text() != fingerprint):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)


def _block_path(folder: Path, block: int) -> Path:
    return folder / f"block-{block:06d}.npy"


def write_rows(ctx, out: Path, n: int, tile: int, fingerprint: str, row_distances, progress: bool, desc: str) -> None:
    """Every missing row block of this rank: ``row_distances(i)`` ((n,) float) for each query row ``i``."""
    from clews_pipe.progress import progress_bar

    folder = Path(out) / ROWS_DIR
    if ctx.rank == 0:
        _prepare(folder, fingerprint)
    ctx.barrier()
    n_blocks = -(-n // tile)
    mine = [b for b in range(ctx.rank, n_blocks, ctx.world_size) if not _block_path(folder, b).is_file()]
    with progress_bar(total=sum(min(n, (b + 1) * tile) - b * tile for b in mine), unit="track", leave=False,
                      desc=f"{desc} (rank {ctx.rank} of {ctx.world_size})", disable=not progress) as bar:
        for b in mine:
            start, stop = b * tile, min(n, (b + 1) * tile)
            block = np.empty((stop - start, n), dtype=np.float32)
            for i in range(start, stop):
                block[i - start] = row_distances(i)
                block[i - start, i] = 0.0  # the query itself (left out of its own ranking)
                bar.update(1)
            tmp = folder / f".block-{b:06d}.{os.getpid()}.tmp.npy"
            np.save(tmp, block)
            os.replace(tmp, _block_path(folder, b))
    ctx.barrier()


def read_matrix(out: Path, n: int, tile: int) -> np.ndarray:
    folder = Path(out) / ROWS_DIR
    return np.concatenate([np.load(_block_path(folder, b), allow_pickle=False) for b in range(-(-n // tile))])
