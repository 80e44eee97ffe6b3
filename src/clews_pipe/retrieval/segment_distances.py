"""Normalised squared Euclidean distances between segment embeddings, one matmul per block.

``||q - c||^2 / D`` with no L2 normalisation of the vectors (the CLEWS distance). Written by hand
rather than with ``torch.cdist`` because one augmented matmul gives the squared distance divided by
D directly and folds padding masks into the squared norms as ``+inf`` at no extra cost.
"""

from __future__ import annotations

import torch

from clews_pipe.errors import ClewsError


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


def cross_segment_distances(
    zq: torch.Tensor, zc: torch.Tensor, mask_q: torch.Tensor | None = None, mask_c: torch.Tensor | None = None,
) -> torch.Tensor:
    """All query tracks against all candidate tracks in one matmul.

    ``zq (Q, u, D)``, ``zc (C, v, D)`` → ``(Q, C, u, v)`` (a permuted view of the matmul output);
    same values as ``segment_distances(zq[:, None], zc[None])`` without materialising the broadcast
    inputs. Optional padding masks ``(Q, u)`` / ``(C, v)`` make every distance involving a padded
    segment ``+inf`` at no extra cost (folded into the squared norms); the ``min`` and ``bpwr``
    reductions read ``+inf`` as excluded.
    """
    if zq.ndim != 3 or zc.ndim != 3 or zq.shape[-1] != zc.shape[-1]:
        raise ClewsError(
            f"cross_segment_distances: expected (Q,u,D) and (C,v,D), got {tuple(zq.shape)} and {tuple(zc.shape)}"
        )
    n_q, u, dim = zq.shape
    n_c, v, _ = zc.shape
    flat_q = zq.reshape(n_q * u, dim)
    flat_c = zc.reshape(n_c * v, dim)
    sq_q = flat_q.pow(2).sum(-1, keepdim=True)
    sq_c = flat_c.pow(2).sum(-1, keepdim=True)
    if mask_q is not None:
        sq_q = sq_q.masked_fill(mask_q.reshape(-1, 1), float("inf"))
    if mask_c is not None:
        sq_c = sq_c.masked_fill(mask_c.reshape(-1, 1), float("inf"))
    # one matmul of augmented vectors: [-2q, |q|^2, 1] . [c, 1, |c|^2] / D = |q - c|^2 / D
    ones_q = torch.ones_like(sq_q)
    ones_c = torch.ones_like(sq_c)
    aug_q = torch.cat([flat_q * (-2.0 / dim), sq_q / dim, ones_q / dim], dim=1)
    aug_c = torch.cat([flat_c, ones_c, sq_c], dim=1)
    dist = aug_q @ aug_c.t()
    dist = dist.clamp_min(0.0) if dist.requires_grad else dist.clamp_min_(0.0)
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
