"""Query rows of a baseline distance matrix, computed by the ranks block by block into
``OUT/distances.zarr`` (the evaluation's matrix layout and chunking: a rank owns whole row blocks,
so no two ranks write one chunk; a finished block is marked in ``tile_done`` and skipped by a rerun
with the same fingerprint)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_rows(job, ctx, store, tracks, chroma, candidates, row_distances) -> Path:
    """Every row block of this rank: ``row_distances(i, candidates)`` for each query row ``i``."""
    from clews_pipe.evaluation.distances import _open_or_create, fingerprint, row_blocks_for_rank
    from clews_pipe.evaluation.provenance import store_index_sha256
    from clews_pipe.progress import progress_bar

    out = Path(job.out)
    if ctx.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.json", "metrics.md", "per_query.csv"):  # never a stale report beside a failed run
            (out / name).unlink(missing_ok=True)
    ctx.barrier()
    n, tile = len(tracks.track), int(job.tile)
    attrs = {"redux": "qmax", "tile": tile, "symmetric": False,
             "fingerprint": fingerprint(tracks.track, tracks.clique,
                                        extra=f"qmax {job.settings.as_dict()} {job.maxlen} {store_index_sha256(store)}")}
    arrays = {"query_track": tracks.track, "candidate_track": tracks.track,
              "query_clique": tracks.clique, "candidate_clique": tracks.clique}
    path = out / "distances.zarr"
    group = _open_or_create(path, n, n, tile, attrs, arrays, ctx.rank, ctx.barrier, resume=True)
    n_blocks = -(-n // tile)
    mine = [b for b in row_blocks_for_rank(n_blocks, ctx.rank, ctx.world_size, symmetric=False)
            if not np.asarray(group["tile_done"][b]).all()]
    rows_left = sum(min(n, (b + 1) * tile) - b * tile for b in mine)
    with progress_bar(total=rows_left, desc=f"qmax {job.split} (rank {ctx.rank} of {ctx.world_size})", unit="track",
                      disable=not job.progress, leave=False) as bar:
        for b in mine:
            start, stop = b * tile, min(n, (b + 1) * tile)
            block = np.empty((stop - start, n), dtype=np.float32)
            for i in range(start, stop):
                block[i - start] = row_distances(i, candidates)
                block[i - start, i] = 0.0  # the query itself (left out of its ranking)
                bar.update(1)
            group["distances"][start:stop] = block
            group["tile_done"][b] = np.ones(group["tile_done"].shape[1], dtype=np.uint8)
    ctx.barrier()
    return path
