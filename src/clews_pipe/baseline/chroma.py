"""Chroma (pitch-class profile) sequences from a store's pooled CQT.

The store holds (frames, 84) CQT magnitudes at 10 frames/s, 12 bins per octave from C1, so bin
``b`` is pitch class ``b % 12`` (C = 0). A chroma frame is the sum over the seven octaves of each
pitch class's magnitude, averaged over ``pool`` frames (5: 2 frames/s, about one beat, as the
beat-synchronous HPCP of Serrà et al. 2009) and divided by its maximum (HPCP's normalisation).
Written here, not taken from librosa, because the input is already a CQT: folding it is a reshape.
"""

from __future__ import annotations

import numpy as np

BINS_PER_OCTAVE = 12


def chroma_from_cqt(cqt: np.ndarray, pool: int = 5) -> np.ndarray:
    """(frames // pool, 12) float32 chroma of a (frames, 84) CQT magnitude (at least one frame)."""
    x = np.asarray(cqt, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] % BINS_PER_OCTAVE:
        raise ValueError(f"expected (frames, 12*k) CQT magnitudes, got shape {x.shape}")
    folded = x.reshape(x.shape[0], -1, BINS_PER_OCTAVE).sum(axis=1)
    n = max(1, folded.shape[0] // pool)
    if folded.shape[0] < pool:
        pooled = folded.mean(axis=0, keepdims=True)
    else:
        pooled = folded[: n * pool].reshape(n, pool, BINS_PER_OCTAVE).mean(axis=1)
    peak = pooled.max(axis=1, keepdims=True)
    return np.divide(pooled, peak, out=np.zeros_like(pooled), where=peak > 0)
