"""One query's Qmax distances to a set of candidates (:mod:`clews_pipe.baseline.qmax`), vectorised:
the query's delay vectors are rolled to each candidate's optimal transposition, the squared
distances to every candidate frame come from one matrix product per transposition, and the
cross-recurrence thresholds + Qmax recursion run in numba over a padded block of candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clews_pipe.baseline.chroma import chroma_from_cqt
from clews_pipe.baseline.qmax import QmaxSettings, delay_embed, global_profile, oti, qmax_block

CANDIDATE_BLOCK = 128  # candidates per padded distance block (memory: block x frames x frames)


@dataclass(frozen=True)
class TrackChroma:
    """What a track contributes as a query or a candidate."""

    chroma: np.ndarray  # (n, 12)
    profile: np.ndarray  # (12,) global, max-normalised
    embedded: np.ndarray  # (n', 12 m) delay vectors


def track_chroma(cqt: np.ndarray, settings: QmaxSettings) -> TrackChroma:
    chroma = chroma_from_cqt(cqt, settings.pool)
    return TrackChroma(chroma, global_profile(chroma), delay_embed(chroma, settings.m, settings.tau))


@dataclass(frozen=True)
class CandidateSet:
    """Every candidate's delay vectors padded to one length, their squared norms and lengths."""

    vectors: np.ndarray  # (C, L, 12 m) float32, zero padding
    norms: np.ndarray  # (C, L) float32
    lengths: np.ndarray  # (C,) int64
    profiles: np.ndarray  # (C, 12)


def candidate_set(tracks: list[TrackChroma]) -> CandidateSet:
    lengths = np.array([t.embedded.shape[0] for t in tracks], dtype=np.int64)
    dim = tracks[0].embedded.shape[1]
    vectors = np.zeros((len(tracks), int(lengths.max()), dim), dtype=np.float32)
    for c, t in enumerate(tracks):
        vectors[c, : lengths[c]] = t.embedded
    return CandidateSet(vectors, np.einsum("cld,cld->cl", vectors, vectors), lengths,
                        np.stack([t.profile for t in tracks]))


def query_distances(query: TrackChroma, candidates: CandidateSet, settings: QmaxSettings) -> np.ndarray:
    """(C,) dissimilarities sqrt(|B|) / (Qmax + 1) of ``query`` to every candidate."""
    shifts = np.array([oti(p, query.profile) for p in candidates.profiles])  # roll of the query towards c
    out = np.empty(len(shifts))
    for shift in np.unique(shifts):
        rolled = delay_embed(np.roll(query.chroma, int(shift), axis=1), settings.m, settings.tau)
        q_norm = np.einsum("id,id->i", rolled, rolled)
        members = np.flatnonzero(shifts == shift)
        for start in range(0, len(members), CANDIDATE_BLOCK):
            block = members[start:start + CANDIDATE_BLOCK]
            length = int(candidates.lengths[block].max())
            dots = np.einsum("id,cld->cil", rolled, candidates.vectors[block, :length], optimize=True)
            dist = q_norm[None, :, None] + candidates.norms[block, None, :length] - 2.0 * dots
            q = qmax_block(np.ascontiguousarray(dist, dtype=np.float64), candidates.lengths[block],
                           settings.kappa, settings.gamma_o, settings.gamma_e)
            out[block] = np.sqrt(candidates.lengths[block]) / (q + 1.0)
    return out
