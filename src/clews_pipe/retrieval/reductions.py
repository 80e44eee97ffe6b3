"""Segment distances and their reductions to one distance per track pair.

A track pair (query with ``u`` segments, candidate with ``v`` segments) has a ``(u, v)`` matrix of
segment distances. A *reduction* turns it into one number. Every function here works on a batch
``(..., u, v)`` at once, honours a padding mask (True = excluded) and is differentiable w.r.t. the
distances (the CLEWS loss reduces positives with ``bpwr-5`` and negatives with ``min``).

Reductions (docs/clews-method.md, "Distances and reductions"):

``min`` / ``max`` / ``mean``
    over all valid segment pairs.
``meanmin``
    mean over valid query rows of the row minimum.
``minmean``
    minimum over valid query rows of the row mean.
``best-r``
    mean of the ``r`` smallest valid pair distances (fewer when fewer are valid).
``bpwr-r``
    best pairs without replacement: ``r`` greedy rounds of "take the smallest remaining pair,
    remove its row and its column", then the mean of the taken distances. ``r`` is capped by the
    number of rounds that can find a valid pair (``min(valid rows, valid columns)`` for the usual
    row-or-column padding masks).

A pair with no valid segment pair at all reduces to ``+inf``.

``bpwr-r`` is computed exactly without scanning the whole ``(u, v)`` matrix ``r`` times: each row's
minimum over the still-free columns is cached, a round takes the smallest cached minimum, and only
rows whose minimum sat in the column just removed are rescanned (after ``t`` rounds at most ``t``
columns are gone, so the work per round is a handful of (pairs x u) operations). Ties go to the
lowest (row, column), exactly as the textbook greedy loop ``min((value, row, col))`` breaks them.
"""

from __future__ import annotations

import torch

from clews_pipe.errors import ClewsError
from clews_pipe.retrieval.redux import Redux


def _masked_fill(d: torch.Tensor, excluded: torch.Tensor | None, value: float) -> torch.Tensor:
    if excluded is None:
        return d
    return torch.where(excluded, torch.full((), value, dtype=d.dtype, device=d.device), d)


def _safe_divide(num: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``num / count`` where ``count >= 1``, ``+inf`` where ``count == 0`` (NaN-free gradients)."""
    empty = count <= 0
    out = num / count.clamp_min(1).to(num.dtype)
    return torch.where(empty, torch.full((), float("inf"), dtype=num.dtype, device=num.device), out)


def reduce_distances(d: torch.Tensor, redux: Redux | str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reduce segment distances ``d (..., u, v)`` to one distance per pair ``(...,)``.

    ``mask`` is bool, broadcastable to ``d``, True = excluded (padding). Pairs with no valid entry
    give ``+inf``. Differentiable w.r.t. ``d``.
    """
    redux = Redux.parse(redux)
    kind, r = redux.kind, redux.r
    if d.ndim < 2:
        raise ClewsError(f"reduce_distances: expected (..., u, v) distances, got shape {tuple(d.shape)}")
    if mask is not None:
        mask = mask.to(torch.bool)
        if not _broadcastable(mask.shape, d.shape):
            raise ClewsError(
                f"reduce_distances: mask shape {tuple(mask.shape)} does not broadcast to distances {tuple(d.shape)}"
            ) from None
    inf = float("inf")
    valid = None if mask is None else ~mask

    if kind == "min":
        return _masked_fill(d, mask, inf).amin(dim=(-2, -1))
    if kind == "max":
        out = _masked_fill(d, mask, -inf).amax(dim=(-2, -1))
        return torch.where(torch.isneginf(out), torch.full_like(out, inf), out)
    if kind == "mean":
        total = _masked_fill(d, mask, 0.0).sum(dim=(-2, -1))
        count = _count(valid, d, dim=(-2, -1))
        return _safe_divide(total, count)
    if kind == "meanmin":
        row_min = _masked_fill(d, mask, inf).amin(dim=-1)  # (..., u)
        row_ok = torch.isfinite(row_min) if mask is None else _count(valid, d, dim=-1) > 0
        total = torch.where(row_ok, row_min, torch.zeros((), dtype=d.dtype, device=d.device)).sum(-1)
        return _safe_divide(total, row_ok.sum(-1))
    if kind == "minmean":
        row_sum = _masked_fill(d, mask, 0.0).sum(dim=-1)
        row_count = _count(valid, d, dim=-1)
        row_mean = _safe_divide(row_sum, row_count)  # +inf for rows without valid entries
        return row_mean.amin(dim=-1)
    if kind == "best":
        flat = _masked_fill(d, mask, inf).flatten(-2)
        k = min(r, flat.shape[-1])
        smallest = flat.topk(k, dim=-1, largest=False).values
        taken = torch.isfinite(smallest) if mask is None else (
            torch.arange(k, device=d.device) < _count(valid, d, dim=(-2, -1)).unsqueeze(-1)
        )
        total = torch.where(taken, smallest, torch.zeros((), dtype=d.dtype, device=d.device)).sum(-1)
        return _safe_divide(total, taken.sum(-1))
    if not d.requires_grad and d.device.type == "cpu" and d.dtype in (torch.float32, torch.float64) and _use_kernel():
        from clews_pipe.retrieval.bpwr_kernel import bpwr_cpu

        return bpwr_cpu(_masked_fill(d, mask, float("inf")), r)
    return _bpwr(d, mask, r)


USE_COMPILED_BPWR = True  # CPU inference uses the numba kernel when numba is installed


def _use_kernel() -> bool:
    if not USE_COMPILED_BPWR:
        return False
    from clews_pipe.retrieval.bpwr_kernel import available

    return available()


def _broadcastable(small: torch.Size, big: torch.Size) -> bool:
    if len(small) > len(big):
        return False
    return all(a == 1 or a == b for a, b in zip(reversed(small), reversed(big)))


def _count(valid: torch.Tensor | None, d: torch.Tensor, dim) -> torch.Tensor:
    """Number of valid entries of ``d`` along ``dim`` (-1 or (-2, -1))."""
    if valid is not None:
        return valid.expand(d.shape).sum(dim=dim)
    if dim == -1:
        return torch.full(d.shape[:-1], d.shape[-1], dtype=torch.long, device=d.device)
    return torch.full(d.shape[:-2], d.shape[-2] * d.shape[-1], dtype=torch.long, device=d.device)


def _rows_view(grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Rows of ``grid (..., u, v)`` as a ``(R, v)`` tensor plus, when needed, each logical row's index in it.

    A permuted matmul output (rows contiguous, other strides multiples of ``v``) is addressed in
    place through its storage; anything else is copied once into ``(pairs * u, v)``.
    """
    v = grid.shape[-1]
    if grid.is_contiguous():
        return grid.reshape(-1, v), None
    strides, sizes = grid.stride()[:-1], grid.shape[:-1]
    if grid.stride(-1) != 1 or any(st % v for st in strides):
        return grid.reshape(-1, v), None
    n_rows = sum((size - 1) * st for size, st in zip(sizes, strides)) // v + 1
    rows = grid.as_strided((n_rows, v), (v, 1))
    ids = torch.zeros((), dtype=torch.long, device=grid.device)
    for size, st in zip(sizes, strides):
        ids = ids.unsqueeze(-1) + torch.arange(size, device=grid.device) * (st // v)
    return rows, ids.reshape(-1)


def _bpwr(d: torch.Tensor, mask: torch.Tensor | None, r: int) -> torch.Tensor:
    """Best pairs without replacement, exact, with one pass over the ``(u, v)`` matrix.

    Every row's minimum over its free columns is cached. A round takes the smallest cached minimum
    (lowest row among ties), finds its column within that one row (lowest free column among
    ties), retires the row and the column, and rescans only the rows whose minimum value sits in
    that column (a row's minimum can change only then). Ties therefore resolve to the lowest
    (row, column), as in the textbook loop ``min((value, row, col))`` over free cells. ``+inf``
    entries count as excluded.
    """
    *lead, u, v = d.shape
    inf = float("inf")
    n_rounds = min(r, u, v)
    device = d.device
    with torch.no_grad():
        grid = _masked_fill(d.detach(), mask, inf)  # (..., u, v), read only
        row_source, row_ids = _rows_view(grid)
        row_min = grid.amin(dim=-1).reshape(-1, u).contiguous()
        batch = row_min.shape[0]
        if row_ids is None:
            row_ids = torch.arange(batch * u, device=device)
        row_ids = row_ids.view(batch, u)
        cells = row_source.reshape(-1)  # flat storage: row id * v + column
        pairs = torch.arange(batch, device=device)
        removed = torch.zeros(batch, v, dtype=torch.bool, device=device)
        taken_flat = torch.zeros(n_rounds, batch, dtype=torch.long, device=device)
        taken_val = torch.full((n_rounds, batch), inf, dtype=d.dtype, device=device)
        for t in range(n_rounds):
            best_val, best_row = row_min.min(dim=1)
            if t and bool(torch.isinf(best_val).all()):
                break
            chosen = row_source.index_select(0, row_ids[pairs, best_row]).masked_fill_(removed, inf)
            best_col = chosen.argmin(dim=1)
            taken_val[t] = best_val
            taken_flat[t] = best_row * v + best_col
            if t == n_rounds - 1:
                break
            best_col = best_col.unsqueeze(1)
            row_min.scatter_(1, best_row.unsqueeze(1), inf)  # retire the row
            removed.scatter_(1, best_col, True)  # and the column (harmless when none was found)
            in_column = cells.index_select(0, (row_ids * v + best_col).view(-1)).view(batch, u)
            stale = (in_column == row_min) & torch.isfinite(row_min)
            flat = stale.view(-1).nonzero().squeeze(1)
            if flat.numel():
                rows = row_source.index_select(0, row_ids.view(-1).index_select(0, flat))
                rows.masked_fill_(removed.index_select(0, flat // u), inf)
                row_min.view(-1).index_copy_(0, flat, rows.amin(dim=1))
        taken_ok = torch.isfinite(taken_val).t()
        taken_val = taken_val.t()
        taken_flat = taken_flat.t()
    if d.requires_grad:
        taken_val = torch.gather(d.reshape(batch, u * v), 1, taken_flat)
    zero = torch.zeros((), dtype=d.dtype, device=device)
    total = torch.where(taken_ok, taken_val, zero).sum(-1)
    return _safe_divide(total, taken_ok.sum(-1)).reshape(lead)
