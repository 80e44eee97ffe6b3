"""The CQT of the store contract and of the CLEWS model (docs/clews-method.md, "CQT").

nnAudio ``CQT1992v2(sr=16000, hop_length=320, n_bins=84, bins_per_octave=12, filter_scale=1)``,
magnitude, then ``AvgPool1d(5, 5)`` in time: 84 bins at 10 frames/s.
"""

from __future__ import annotations

import numpy as np
import torch

from clews_pipe.features.cqt_params import CQTParams


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
