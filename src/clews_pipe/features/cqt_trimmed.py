"""The store's CQT computed with nnAudio's own kernels, trimmed to their support: ~4-6× faster.

nnAudio's ``CQT1992v2`` zero-pads every bin's kernel to the longest one (16384 taps for
C1 at 16 kHz) and runs one strided ``conv1d`` over all of them. A kernel of an octave above
is half as long, so most of those multiply-adds are by zeros. Here the bins are grouped by
octave, each group's kernels are cut to the union of their non-zero supports, and the padded
signal is offset by the cut: the same products are summed (only the zero terms are skipped),
so the result equals ``build_cqt(params)`` up to float32 summation order. The magnitude,
librosa-style ``sqrt(length)`` scaling and ×``pool`` average pooling follow nnAudio exactly.

Used by the extraction job; the model keeps ``build_cqt`` (its kernels are checkpoint buffers).
"""

from __future__ import annotations

import numpy as np
import torch

from clews_pipe.features.cqt import build_cqt
from clews_pipe.features.cqt_params import CQTParams


class TrimmedCQTExtractor:
    """Drop-in for :class:`clews_pipe.features.cqt.CQTExtractor`: waveform → (frames, n_bins) float16."""

    def __init__(self, params: CQTParams = CQTParams(), device: str | torch.device = "cpu"):
        self.params = params
        self.device = torch.device(device)
        reference = build_cqt(params)[0]
        real = reference.cqt_kernels_real[:, 0].double().numpy()
        imag = reference.cqt_kernels_imag[:, 0].double().numpy()
        self.kernel_width = int(reference.kernel_width)
        self.scale = torch.sqrt(reference.lenghts.float()).to(self.device)  # nnAudio's spelling
        support = (real != 0) | (imag != 0)
        first = support.argmax(axis=1)
        last = support.shape[1] - support[:, ::-1].argmax(axis=1)  # one past the last non-zero tap
        octave = np.arange(params.n_bins) // params.nbinsoct
        self.groups: list[tuple[slice, int, torch.Tensor]] = []
        for o in np.unique(octave):
            bins = np.flatnonzero(octave == o)
            start, stop = int(first[bins].min()), int(last[bins].max())
            # real kernels then negated imaginary ones (nnAudio: imag = -conv(x, K_imag))
            weight = np.concatenate([real[bins, start:stop], -imag[bins, start:stop]], axis=0)
            weight_t = torch.from_numpy(weight.astype(np.float32))[:, None, :].contiguous().to(self.device)
            self.groups.append((slice(int(bins[0]), int(bins[-1]) + 1), start, weight_t))

    @torch.inference_mode()
    def magnitude(self, waveform: np.ndarray) -> torch.Tensor:
        """Unpooled CQT magnitude (n_bins, frames) float32, as nnAudio's ``Magnitude`` output."""
        x = torch.as_tensor(np.ascontiguousarray(waveform, dtype=np.float32), device=self.device)
        if x.ndim != 1:
            raise ValueError(f"expected a mono waveform (samples,), got shape {tuple(x.shape)}")
        pad = self.kernel_width // 2
        padded = torch.nn.functional.pad(x[None, None], (pad, pad), mode="reflect")
        hop = self.params.hop_length
        n_frames = (padded.shape[-1] - self.kernel_width) // hop + 1
        out = torch.empty(self.params.n_bins, n_frames, device=self.device)
        for bins, start, weight in self.groups:
            n = bins.stop - bins.start
            y = torch.nn.functional.conv1d(padded[:, :, start:], weight, stride=hop)[0, :, :n_frames]
            re, im = y[:n], y[n:]
            out[bins] = torch.sqrt(re * re + im * im) * self.scale[bins, None]
        return out

    @torch.inference_mode()
    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        mag = self.magnitude(waveform)
        pool = self.params.pool
        n = mag.shape[1] // pool
        pooled = mag[:, : n * pool].reshape(mag.shape[0], n, pool).mean(dim=2)
        return pooled.T.contiguous().to(torch.float16).cpu().numpy()
