"""Key-invariant chroma cross-recurrence and Qmax (Serrà, Serra & Andrzejak 2009, "Cross
recurrence quantification for cover song identification", New J. Phys. 11, 093017).

For a query chroma sequence A and a candidate B:

1. **Key**: the optimal transposition index (OTI) rolls B's pitch classes by the shift that
   maximises the dot product of the two global (time-averaged, max-normalised) profiles.
2. **Delay embedding**: each frame is the concatenation of ``m`` frames ``tau`` apart.
3. **Cross-recurrence**: R[i, j] = 1 when B's frame j is among the ``kappa`` fraction of nearest
   neighbours (Euclidean) of A's frame i among B's frames, *and* i among the ``kappa`` nearest of j
   among A's frames.
4. **Qmax**: the length of the longest curved similarity path, with the recursion
   Q[i,j] = max(Q[i-1,j-1], Q[i-2,j-1], Q[i-1,j-2]) + 1 where R[i,j] = 1, else
   max(0, Q[i-1,j-1] - g(R[i-1,j-1]), Q[i-2,j-1] - g(R[i-2,j-1]), Q[i-1,j-2] - g(R[i-1,j-2])),
   g = gamma_o (a path's onset of disruption) where R was 1, gamma_e (its extension) where it was 0.
5. **Dissimilarity** d = sqrt(|B|) / Qmax (paper); here sqrt(|B|) / (Qmax + 1), so that pairs with
   no recurrence path (Qmax = 0) get a finite distance (they rank last, in candidate order).

The paper's settings are the defaults: m = 10, tau = 1, kappa = 0.1, gamma_o = 5, gamma_e = 0.5.
The thresholds and the recursion run in numba (one query against a padded block of candidates);
the distances are one matrix product per query. librosa has the pieces for one pair
(``librosa.segment.cross_similarity`` with k nearest neighbours, ``librosa.sequence.rqa`` with gap
onset/extension penalties); they are written here instead because the baseline scores a query
against a whole block of candidates per call, and librosa (with its audio stack) would be a
dependency for these ~60 lines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np


@dataclass(frozen=True)
class QmaxSettings:
    m: int = 10
    tau: int = 1
    kappa: float = 0.1
    gamma_o: float = 5.0
    gamma_e: float = 0.5
    pool: int = 5  # CQT frames per chroma frame (10 frames/s -> 2 frames/s)

    def as_dict(self) -> dict:
        return {"m": self.m, "tau": self.tau, "kappa": self.kappa, "gamma_o": self.gamma_o,
                "gamma_e": self.gamma_e, "chroma_frames_per_s": 10.0 / self.pool}


def global_profile(chroma: np.ndarray) -> np.ndarray:
    g = chroma.mean(axis=0)
    return g / g.max() if g.max() > 0 else g


def oti(profile_a: np.ndarray, profile_b: np.ndarray) -> int:
    """The roll of B's pitch classes that best matches A (ties: the smallest shift)."""
    scores = [float(np.dot(profile_a, np.roll(profile_b, k))) for k in range(len(profile_b))]
    return int(np.argmax(scores))


def delay_embed(chroma: np.ndarray, m: int, tau: int) -> np.ndarray:
    """(n - (m-1) tau, 12 m) delay vectors; a sequence shorter than the window is repeated until it fits."""
    span = (m - 1) * tau + 1
    if chroma.shape[0] < span:
        chroma = np.tile(chroma, (-(-span // chroma.shape[0]), 1))
    n = chroma.shape[0] - span + 1
    return np.concatenate([chroma[k * tau:k * tau + n] for k in range(m)], axis=1).astype(np.float32)


@numba.njit(cache=True)
def _recurrence(dist, n_b, kappa):
    """Mutual fixed-fraction nearest-neighbour cross-recurrence of an (n_a, n_b) distance block."""
    n_a = dist.shape[0]
    k_row = max(1, int(round(kappa * n_b)))
    k_col = max(1, int(round(kappa * n_a)))
    row_thr = np.empty(n_a)
    for i in range(n_a):
        row_thr[i] = np.sort(dist[i, :n_b])[k_row - 1]
    col_thr = np.empty(n_b)
    for j in range(n_b):
        col_thr[j] = np.sort(dist[:, j])[k_col - 1]
    rec = np.zeros((n_a, n_b), dtype=np.uint8)
    for i in range(n_a):
        for j in range(n_b):
            if dist[i, j] <= row_thr[i] and dist[i, j] <= col_thr[j]:
                rec[i, j] = 1
    return rec


@numba.njit(cache=True)
def qmax_of(rec, gamma_o, gamma_e):
    """Qmax of a cross-recurrence plot (uint8 0/1), the recursion of the module docstring."""
    n_a, n_b = rec.shape
    q = np.zeros((n_a + 2, n_b + 2))  # two rows/columns of zeros before the plot
    best = 0.0
    for i in range(2, n_a + 2):
        for j in range(2, n_b + 2):
            a, b, c = q[i - 1, j - 1], q[i - 2, j - 1], q[i - 1, j - 2]
            if rec[i - 2, j - 2]:
                v = max(a, max(b, c)) + 1.0
            else:
                ga = gamma_o if i >= 3 and j >= 3 and rec[i - 3, j - 3] else gamma_e
                gb = gamma_o if i >= 4 and j >= 3 and rec[i - 4, j - 3] else gamma_e
                gc = gamma_o if i >= 3 and j >= 4 and rec[i - 3, j - 4] else gamma_e
                v = max(0.0, max(a - ga, max(b - gb, c - gc)))
            q[i, j] = v
            if v > best:
                best = v
    return best


@numba.njit(cache=True)
def qmax_block(dist, lengths, kappa, gamma_o, gamma_e):
    """Qmax of one query (rows of ``dist``) against each candidate c (``dist[c, :, :lengths[c]]``)."""
    out = np.zeros(dist.shape[0])
    for c in range(dist.shape[0]):
        rec = _recurrence(dist[c], lengths[c], kappa)
        out[c] = qmax_of(rec[:, :lengths[c]], gamma_o, gamma_e)
    return out
