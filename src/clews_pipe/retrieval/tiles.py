"""Reduced distances between a block of query tracks and a block of candidate tracks, in memory-bounded blocks.

The segment distances of (query block x candidate block) come from one matmul and are reduced
together; the block size follows a memory budget, so peak memory is set by the budget, not by the
number of tracks. Used by validation during training and by the persisted evaluation matrix.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from clews_pipe.retrieval.reductions import reduce_distances
from clews_pipe.retrieval.redux import Redux
from clews_pipe.retrieval.segment_distances import cross_segment_distances, pair_mask

BYTES_PER_SEGMENT_PAIR = 16  # distances, the masked copy, masks and top-k workspace


def _block_shape(tile_q: int, tile_c: int, u: int, v: int, memory_mb: float) -> tuple[int, int]:
    pairs = max(1, int(memory_mb * 2**20 // (u * v * BYTES_PER_SEGMENT_PAIR)))
    bq = max(1, min(tile_q, int(math.sqrt(pairs))))
    bc = max(1, min(tile_c, pairs // bq))
    return bq, bc


def tile_distances(
    zq: torch.Tensor, mask_q: torch.Tensor, zc: torch.Tensor, mask_c: torch.Tensor, redux: Redux | str, memory_mb: float,
    device: str = "cpu", diagonal: bool = False,
) -> np.ndarray:
    """Reduced distances between every query and candidate track of one tile → (Q, C) float32.

    ``diagonal``: the tile's queries are its candidates and the reduction is symmetric, so only
    blocks on and above the diagonal are computed and the others mirrored.
    """
    n_q, u, _ = zq.shape
    n_c, v, _ = zc.shape
    bq, bc = _block_shape(n_q, n_c, u, v, memory_mb)
    if diagonal:
        bq = bc = max(1, int(math.sqrt(bq * bc)))
    redux = Redux.parse(redux)
    out = torch.empty(n_q, n_c, dtype=torch.float32)
    with torch.inference_mode():
        for q0 in range(0, n_q, bq):
            q_block = zq[q0 : q0 + bq].to(device, torch.float32, non_blocking=True)
            mq_block = mask_q[q0 : q0 + bq].to(device)
            for c0 in range(0, n_c, bc):
                if diagonal and c0 < q0:
                    continue
                c_block = zc[c0 : c0 + bc].to(device, torch.float32, non_blocking=True)
                mc_block = mask_c[c0 : c0 + bc].to(device)
                if redux.excludes_inf:  # padding folded into the matmul as +inf distances
                    seg = cross_segment_distances(q_block, c_block, mq_block, mc_block)
                    red = reduce_distances(seg, redux)
                else:
                    seg = cross_segment_distances(q_block, c_block)
                    red = reduce_distances(seg, redux, pair_mask(mq_block, mc_block))
                out[q0 : q0 + bq, c0 : c0 + bc] = red.float().cpu()
    if diagonal:
        for q0 in range(0, n_q, bq):
            for c0 in range(0, q0, bc):
                out[q0 : q0 + bq, c0 : c0 + bc] = out[c0 : c0 + bc, q0 : q0 + bq].T
    return out.numpy()
