"""The CLEWS training loss (docs/clews-method.md, "Loss"), in its numerically friendly form.

Segment distances are the normalised squared Euclidean distances of
:func:`clews_pipe.retrieval.segment_distances.segment_distances`; each track pair's (S, S) matrix is
reduced with :func:`~clews_pipe.retrieval.reductions.reduce_distances` (positives ``bpwr-5``,
negatives ``min``) — the same implementation evaluation uses.

    align   = mean over positive pairs of d_pos
    uniform = log1p(β · mean over negative pairs of exp(b − γ·d_neg)),  β = 1 / (ε·e^b)
    loss    = align + uniform

The friendly ``uniform`` equals log(ε + mean_neg exp(−γ·d_neg)) − log ε: the textbook term shifted by
the constant −log ε (same gradients), exactly what the published code reports.

Positive pair: same clique, different track. Negative pair: different clique. A track paired with
itself (or with another copy of itself in the batch) is neither. Both orders (i, j) and (j, i) of a
pair are counted, as in the published masked means; a mean over an empty set is 0.
"""

from __future__ import annotations

import math

import torch

from clews_pipe.retrieval.reductions import reduce_distances
from clews_pipe.retrieval.redux import Redux
from clews_pipe.retrieval.segment_distances import cross_segment_distances


def pair_masks(clique: torch.Tensor, track: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,) clique and track ids → ``(positive, negative)`` bool (B, B) pair masks (True = member)."""
    same_clique = clique.view(-1, 1) == clique.view(1, -1)
    same_track = track.view(-1, 1) == track.view(1, -1)
    return same_clique & ~same_track, ~same_clique


def clews_loss(
    z: torch.Tensor,
    clique: torch.Tensor,
    track: torch.Tensor,
    *,
    pos_redux: Redux | str = "bpwr-5",
    neg_redux: Redux | str = "min",
    gamma: float = 5.0,
    epsilon: float = 1e-6,
    b: float = 10.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Segment embeddings ``z (B, S, D)`` of B tracks → ``(loss, align, uniform)`` scalars."""
    if z.ndim != 3:
        raise ValueError(f"expected segment embeddings (B, S, D), got shape {tuple(z.shape)}")
    if clique.shape != (z.shape[0],) or track.shape != (z.shape[0],):
        raise ValueError(
            f"clique {tuple(clique.shape)} and track {tuple(track.shape)} must be ({z.shape[0]},) like z's batch"
        )
    z = z.float()
    positive, negative = pair_masks(clique.to(z.device), track.to(z.device))
    dist = cross_segment_distances(z, z)  # (B, B, S, S)

    pos_i, pos_j = positive.nonzero(as_tuple=True)
    if pos_i.numel():
        align = reduce_distances(dist[pos_i, pos_j], pos_redux).mean()
    else:
        align = z.sum() * 0.0

    neg_i, neg_j = negative.nonzero(as_tuple=True)
    if neg_i.numel():
        d_neg = reduce_distances(dist[neg_i, neg_j], neg_redux)
        beta = 1.0 / (epsilon * math.exp(b))
        uniform = torch.log1p(beta * torch.exp(b - gamma * d_neg).mean())
    else:
        uniform = z.sum() * 0.0
    return align + uniform, align, uniform


def loss_from_config(z: torch.Tensor, clique: torch.Tensor, track: torch.Tensor, loss_conf) -> tuple:
    """:func:`clews_loss` with the settings of a ``model.loss`` config section."""
    return clews_loss(
        z,
        clique,
        track,
        pos_redux=str(loss_conf.redux.pos),
        neg_redux=str(loss_conf.redux.neg),
        gamma=float(loss_conf.gamma),
        epsilon=float(loss_conf.epsilon),
    )
