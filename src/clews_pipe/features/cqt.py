"""The CQT of the store contract and of the CLEWS model (FACTS.md).

nnAudio ``CQT1992v2(sr=16000, hop_length=320, n_bins=84, bins_per_octave=12, filter_scale=1)``,
magnitude, then ``AvgPool1d(5, 5)`` in time: 84 bins at 10 frames/s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SAMPLERATE = 16000


@dataclass(frozen=True)
class CQTParams:
    """CQT settings; field names follow the CLEWS ``model.cqt`` config section."""

    samplerate: int = SAMPLERATE
    hoplen: float = 0.02  # seconds between CQT frames before pooling
    noctaves: int = 7
    nbinsoct: int = 12
    fscale: float = 1.0
    pool: int = 5

    @property
    def hop_length(self) -> int:
        return int(round(self.hoplen * self.samplerate))

    @property
    def n_bins(self) -> int:
        return self.noctaves * self.nbinsoct

    @property
    def frame_rate(self) -> float:
        """Stored frames per second (after pooling): 10 for the defaults."""
        return self.samplerate / (self.hop_length * self.pool)

    def to_dict(self) -> dict:
        return {
            "samplerate": self.samplerate,
            "hoplen": self.hoplen,
            "noctaves": self.noctaves,
            "nbinsoct": self.nbinsoct,
            "fscale": self.fscale,
            "pool": self.pool,
        }


def build_cqt(params: CQTParams = CQTParams()) -> torch.nn.Sequential:
    """``Sequential(CQT1992v2, AvgPool1d)``: input (B, samples) float32 → (B, n_bins, frames)."""
    from nnAudio import features  # imported lazily: it builds kernels and is slow to import

    return torch.nn.Sequential(
        features.CQT1992v2(
            sr=params.samplerate,
            hop_length=params.hop_length,
            n_bins=params.n_bins,
            bins_per_octave=params.nbinsoct,
            filter_scale=params.fscale,
            trainable=False,
            verbose=False,
        ),
        torch.nn.AvgPool1d(params.pool, stride=params.pool),
    )


class CQTExtractor:
    """Whole-track CQT features as stored: ``(frames, n_bins) float16``, frames-major.

    Builds the nnAudio kernels once and reuses them for every track of a worker.
    """

    def __init__(self, params: CQTParams = CQTParams(), device: str | torch.device = "cpu"):
        self.params = params
        self.device = torch.device(device)
        self.module = build_cqt(params).to(self.device).eval()

    @torch.inference_mode()
    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.ascontiguousarray(waveform, dtype=np.float32), device=self.device)
        if x.ndim != 1:
            raise ValueError(f"expected a mono waveform (samples,), got shape {tuple(x.shape)}")
        y = self.module(x[None])[0]  # (n_bins, frames)
        return y.T.contiguous().to(torch.float16).cpu().numpy()
