"""Segment distances and their reductions to one distance per track pair.

A track pair (query with ``u`` segments, candidate with ``v`` segments) has a ``(u, v)`` matrix of
segment distances. A *reduction* turns it into one number. Every function here works on a batch
``(..., u, v)`` at once, honours a padding mask (True = excluded) and is differentiable w.r.t. the
distances (the CLEWS loss reduces positives with ``bpwr-5`` and negatives with ``min``).

Reductions (FACTS.md):

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

``bpwr-r`` is computed exactly without scanning the whole ``(u, v)`` matrix ``r`` times: after
``t < r`` rounds at most ``t`` columns are removed, so the smallest remaining entry of any row is
always among that row's ``r`` smallest entries. Only those (``(..., u, min(r, v))`` values and
column indices) are kept and the greedy rounds run on them. Ties between equal distances are broken
by ``torch.topk``/``argmin`` order (deterministic for a given input on a given device); for
distances without ties the result equals the textbook greedy loop exactly.
"""

from __future__ import annotations

import re

import torch

from clews_pipe.errors import ClewsError

REDUCTIONS: tuple[str, ...] = ("min", "max", "mean", "meanmin", "minmean", "best-<r>", "bpwr-<r>")

_PLAIN = ("min", "max", "mean", "meanmin", "minmean")
_WITH_R = re.compile(r"^(best|bpwr)-(-?\d+)$")


def parse_redux(name: str) -> tuple[str, int | None]:
    """``"bpwr-10"`` → ``("bpwr", 10)``, ``"meanmin"`` → ``("meanmin", None)``.

    Unknown names and ``r < 1`` raise :class:`ClewsError` (one line).
    """
    text = str(name).strip().lower()
    if text in _PLAIN:
        return text, None
    match = _WITH_R.match(text)
    if match is None:
        raise ClewsError(
            f"unknown reduction {name!r}: expected one of min, max, mean, meanmin, minmean, best-<r>, bpwr-<r>"
        )
    r = int(match.group(2))
    if r < 1:
        raise ClewsError(f"reduction {name!r}: r must be >= 1, got {r}")
    return match.group(1), r


def segment_distances(zq: torch.Tensor, zc: torch.Tensor) -> torch.Tensor:
    """Normalised squared Euclidean distance ``||q - c||^2 / D`` between segment embeddings.

    ``zq (..., u, D)``, ``zc (..., v, D)`` (leading dims broadcast) → ``(..., u, v)``, computed by the
    matmul expansion ``|q|^2 + |c|^2 - 2 q.c`` and clamped at 0. No L2 normalisation of the vectors.
    """
    if zq.shape[-1] != zc.shape[-1]:
        raise ClewsError(f"segment_distances: embedding sizes differ ({zq.shape[-1]} vs {zc.shape[-1]})")
    dim = zq.shape[-1]
    sq_q = zq.pow(2).sum(-1).unsqueeze(-1)  # (..., u, 1)
    sq_c = zc.pow(2).sum(-1).unsqueeze(-2)  # (..., 1, v)
    dot = torch.matmul(zq, zc.transpose(-1, -2))
    return (sq_q + sq_c - 2.0 * dot).clamp_min(0.0) / dim


def cross_segment_distances(zq: torch.Tensor, zc: torch.Tensor) -> torch.Tensor:
    """All query tracks against all candidate tracks in one matmul.

    ``zq (Q, u, D)``, ``zc (C, v, D)`` → ``(Q, C, u, v)``; same values as
    ``segment_distances(zq[:, None], zc[None])`` without materialising the broadcast inputs.
    """
    if zq.ndim != 3 or zc.ndim != 3 or zq.shape[-1] != zc.shape[-1]:
        raise ClewsError(
            f"cross_segment_distances: expected (Q,u,D) and (C,v,D), got {tuple(zq.shape)} and {tuple(zc.shape)}"
        )
    n_q, u, dim = zq.shape
    n_c, v, _ = zc.shape
    flat_q = zq.reshape(n_q * u, dim)
    flat_c = zc.reshape(n_c * v, dim)
    sq_q = flat_q.pow(2).sum(-1).unsqueeze(1)
    sq_c = flat_c.pow(2).sum(-1).unsqueeze(0)
    dist = torch.addmm(sq_q + sq_c, flat_q, flat_c.t(), beta=1.0, alpha=-2.0)
    if dist.requires_grad:
        dist = dist.clamp_min(0.0) / dim
    else:
        dist = dist.clamp_min_(0.0).div_(dim)
    return dist.view(n_q, u, n_c, v).permute(0, 2, 1, 3)


def pair_mask(mask_q: torch.Tensor | None, mask_c: torch.Tensor | None) -> torch.Tensor | None:
    """Padding masks ``(Q, u)`` and ``(C, v)`` (True = padding) → a mask broadcastable to ``(Q, C, u, v)``."""
    if mask_q is None and mask_c is None:
        return None
    if mask_c is None:
        return mask_q[:, None, :, None]
    if mask_q is None:
        return mask_c[None, :, None, :]
    return mask_q[:, None, :, None] | mask_c[None, :, None, :]


def _masked_fill(d: torch.Tensor, excluded: torch.Tensor | None, value: float) -> torch.Tensor:
    if excluded is None:
        return d
    return torch.where(excluded, torch.full((), value, dtype=d.dtype, device=d.device), d)


def _safe_divide(num: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``num / count`` where ``count >= 1``, ``+inf`` where ``count == 0`` (NaN-free gradients)."""
    empty = count <= 0
    out = num / count.clamp_min(1).to(num.dtype)
    return torch.where(empty, torch.full((), float("inf"), dtype=num.dtype, device=num.device), out)


def reduce_distances(d: torch.Tensor, redux: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reduce segment distances ``d (..., u, v)`` to one distance per pair ``(...,)``.

    ``mask`` is bool, broadcastable to ``d``, True = excluded (padding). Pairs with no valid entry
    give ``+inf``. Differentiable w.r.t. ``d``.
    """
    kind, r = parse_redux(redux)
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
    return _bpwr(d, mask, r)


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


def _bpwr(d: torch.Tensor, mask: torch.Tensor | None, r: int) -> torch.Tensor:
    """Best pairs without replacement via each row's ``r`` smallest entries (exact, see module doc).

    A round looks only at the kept ``(u, min(r, v))`` entries: those of retired rows are set to
    ``+inf`` and those in retired columns are skipped, the smallest remaining one is taken.
    """
    *lead, u, v = d.shape
    inf = float("inf")
    filled = _masked_fill(d, mask, inf)
    k = min(r, v)
    top = filled.topk(k, dim=-1, largest=False)
    top_vals = top.values.reshape(-1, u * k)
    batch = top_vals.shape[0]
    device = d.device
    with torch.no_grad():
        top_cols = top.indices.reshape(batch, u * k)
        search = top_vals.detach().clone()
        if mask is not None:  # rows with fewer than k valid entries also keep masked ones: drop those
            valid_full = (~mask).expand(d.shape).reshape(batch, u, v)
            usable = torch.gather(valid_full, 2, top.indices.reshape(batch, u, k)).reshape(batch, u * k)
            search.masked_fill_(~usable, inf)
        removed_cols = torch.zeros(batch, v, dtype=torch.bool, device=device)
        rows = torch.arange(batch, device=device)
        n_rounds = min(r, u, v)
        taken_flat = torch.zeros(batch, n_rounds, dtype=torch.long, device=device)
        taken_ok = torch.zeros(batch, n_rounds, dtype=torch.bool, device=device)
        search_rows = search.view(batch, u, k)
        for t in range(n_rounds):
            blocked = torch.gather(removed_cols, 1, top_cols) if t else None
            candidates = search if blocked is None else search.masked_fill(blocked, inf)
            best_val, best_pos = candidates.min(dim=1)
            found = torch.isfinite(best_val)
            if t and not bool(found.any()):
                break
            taken_ok[:, t] = found
            taken_flat[:, t] = best_pos
            if t == n_rounds - 1:
                break
            search_rows[rows, best_pos // k] = inf  # retire the row
            removed_cols[rows, top_cols[rows, best_pos]] = True  # and the column (harmless when not found)
    chosen = torch.gather(top_vals, 1, taken_flat)
    zero = torch.zeros((), dtype=d.dtype, device=device)
    total = torch.where(taken_ok, chosen, zero).sum(-1)
    out = _safe_divide(total, taken_ok.sum(-1))
    return out.reshape(lead)
