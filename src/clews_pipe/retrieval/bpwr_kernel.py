"""Compiled (numba) best-pairs-without-replacement for CPU inference.

The same algorithm as :func:`clews_pipe.retrieval.reductions._bpwr` (cached row minima; a
round takes the smallest, retires its row and column and rescans only the rows whose minimum
sat in that column; ties go to the lowest (row, column)), written as a per-pair loop and run in
parallel over pairs. Used by ``reduce_distances`` when no gradient is needed and the distances
live on the CPU; the torch version serves GPUs and training. Serial per call: CPU parallelism
comes from ranks (``--devices N`` processes), which share no threads.
"""

from __future__ import annotations

import numpy as np
import torch

_KERNEL = None


def _compile():
    global _KERNEL
    if _KERNEL is not None:
        return _KERNEL
    import numba as nb

    @nb.njit(cache=True)
    def bpwr_pairs(grid, r):
        # grid: (Q, u, C, v) float (the memory order of cross_segment_distances' output, so that
        # numba sees a C-contiguous array there), +inf = excluded.
        n_q, u, n_c, v = grid.shape
        out = np.empty(n_q * n_c, dtype=np.float64)
        n_rounds = min(r, u, v)
        row_min = np.empty(u, dtype=np.float64)  # scratch, reused for every pair
        row_arg = np.empty(u, dtype=np.int64)
        removed = np.empty(v, dtype=np.bool_)
        for pair in range(n_q * n_c):
            q = pair // n_c
            c = pair % n_c
            removed[:] = False
            for i in range(u):
                best = np.inf
                arg = -1
                for j in range(v):
                    x = grid[q, i, c, j]
                    if x < best:
                        best = x
                        arg = j
                row_min[i] = best
                row_arg[i] = arg
            total = 0.0
            count = 0
            for _ in range(n_rounds):
                best_row = -1
                best_val = np.inf
                for i in range(u):
                    if row_min[i] < best_val:
                        best_val = row_min[i]
                        best_row = i
                if best_row < 0:
                    break
                col = row_arg[best_row]
                total += best_val
                count += 1
                row_min[best_row] = np.inf
                row_arg[best_row] = -1
                removed[col] = True
                for i in range(u):
                    if row_arg[i] == col:
                        best = np.inf
                        arg = -1
                        for j in range(v):
                            if not removed[j]:
                                x = grid[q, i, c, j]
                                if x < best:
                                    best = x
                                    arg = j
                        row_min[i] = best
                        row_arg[i] = arg
            out[pair] = total / count if count > 0 else np.inf
        return out

    _KERNEL = bpwr_pairs
    return _KERNEL


def available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def bpwr_cpu(grid: torch.Tensor, r: int) -> torch.Tensor:
    """``grid (..., u, v)`` CPU float distances with ``+inf`` = excluded → ``(...,)`` bpwr-r."""
    *lead, u, v = grid.shape
    if grid.ndim == 4:
        four = grid
    elif grid.ndim < 4:
        four = grid.reshape((1,) * (4 - grid.ndim) + tuple(grid.shape))
    else:
        four = grid.reshape(-1, 1, u, v)
    values = _compile()(four.permute(0, 2, 1, 3).numpy(), int(r))
    return torch.from_numpy(values).to(grid.dtype).reshape(lead)
