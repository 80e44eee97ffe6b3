"""The CLEWS network (docs/clews-method.md, "Network"): CQT → frontend → IBN residual backbone → GeM → BN + linear projection.

Module names and shapes follow the official checkpoints, so a published ``checkpoint_best.ckpt``
loads with ``strict=True``. Training and evaluation feed stored CQT frames to :meth:`CLEWS.embed`;
:meth:`CLEWS.prepare` / :meth:`CLEWS.forward` start from 16 kHz waveforms as the published code does.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from clews_pipe.features.cqt import build_cqt
from clews_pipe.features.cqt_params import CQTParams
from clews_pipe.model.layers import GeM, CQTPrepare, ResBlock


def _as_conf(model_conf: Any) -> DictConfig:
    if isinstance(model_conf, DictConfig):
        return model_conf
    if isinstance(model_conf, Mapping):
        return OmegaConf.create(dict(model_conf))
    raise TypeError(f"model_conf must be a mapping (the config's model: section), got {type(model_conf).__name__}")


def repeat_pad(x: torch.Tensor, length: int) -> torch.Tensor:
    """``x[..., :length]`` after tiling ``x`` along its last dim until it is long enough."""
    n = x.shape[-1]
    if n == length:
        return x
    if n == 0:
        raise ValueError("cannot repeat-pad an empty signal")
    index = torch.arange(length, device=x.device) % n
    return x.index_select(-1, index)


def shingle(wave: torch.Tensor, length: int, hop: int) -> torch.Tensor:
    """(B, T) → (B, S, length): windows every ``hop`` samples; the signal is repeat-padded so
    that the last window is full (and a signal shorter than one window becomes one window)."""
    total = wave.shape[-1]
    n_hops = max(math.ceil((total - length) / hop), 0)
    return repeat_pad(wave, n_hops * hop + length).unfold(-1, length, hop)


class CLEWS(nn.Module):
    """CLEWS version-matching model.

    ``model_conf`` is the ``model:`` config section (OmegaConf or dict, official layout).
    """

    def __init__(self, model_conf: Any, samplerate: int = 16000):
        super().__init__()
        conf = _as_conf(model_conf)
        self.samplerate = int(samplerate)
        self.shingle_len = float(conf.shingling.len)
        self.shingle_hop = float(conf.shingling.hop)
        self.min_shingle_len = self.shingle_len  # shorter shingles are repeated up to this (eval queries)
        self.zdim = int(conf.zdim)
        self._cqt_params = CQTParams.from_model_conf(conf.cqt, self.samplerate)
        self.cqt = build_cqt(self._cqt_params)

        ch_front, ch = (int(c) for c in conf.frontend.channels)
        key_bins = int(conf.cqt.nbinsoct) if bool(conf.frontend.get("keynorm", False)) else 0
        self.frontend = nn.Sequential(
            CQTPrepare(pow=float(conf.frontend.cqtpow), key_bins=key_bins,
                       key_by=str(conf.frontend.get("keynorm_by", "profile")),
                       first_bin=int(conf.frontend.get("from_octave", 0)) * int(conf.cqt.nbinsoct)),
            nn.Conv2d(1, ch_front, (12, 3), stride=(1, 2), bias=False),
            nn.BatchNorm2d(ch_front),
            nn.ReLU(inplace=True),
            nn.Conv2d(ch_front, ch, (12, 3), stride=2, bias=False),
        )
        blocks: list[nn.Module] = []
        for n_blocks, ch_out, stride in zip(conf.backbone.blocks, conf.backbone.channels, conf.backbone.down):
            blocks.append(ResBlock(ch, int(ch_out), stride=int(stride)))
            blocks.extend(ResBlock(int(ch_out), int(ch_out)) for _ in range(int(n_blocks) - 1))
            ch = int(ch_out)
        self.backbone = nn.Sequential(*blocks)
        self.pool = GeM()
        self.proj = nn.Sequential(nn.BatchNorm1d(ch), nn.Linear(ch, self.zdim, bias=False))

    # ------------------------------------------------------------------------------ geometry
    @property
    def cqt_params(self) -> CQTParams:
        return self._cqt_params

    def shingle_samples(self, seconds: float) -> int:
        return int(self.samplerate * seconds)

    def shingle_frames(self, seconds: float) -> int:
        """CQT frames (after pooling) the model's own CQT gives for ``seconds`` of audio — the
        number of stored frames that make one shingle (200 for 20 s)."""
        return self._cqt_params.seconds_to_frames(seconds)

    # ------------------------------------------------------------------------------ compute
    @torch.no_grad()
    def prepare(
        self,
        wave: torch.Tensor,
        shingle_len: float | None = None,
        shingle_hop: float | None = None,
        chunk: int = 64,
    ) -> torch.Tensor:
        """Waveforms (B, T) → CQT shingles (B, S, F, T'): ``shingle_len`` s windows every
        ``shingle_hop`` s (model defaults), repeat-padded; windows shorter than the training
        shingle are repeated up to at least its length. The CQT runs ``chunk`` shingles at a time."""
        if wave.ndim != 2:
            raise ValueError(f"expected waveforms (B, T), got shape {tuple(wave.shape)}")
        slen = self.shingle_len if shingle_len is None else float(shingle_len)
        shop = self.shingle_hop if shingle_hop is None else float(shingle_hop)
        if slen <= 0 or shop <= 0:
            raise ValueError(f"shingle length and hop must be > 0, got {slen}, {shop}")
        length, hop = self.shingle_samples(slen), self.shingle_samples(shop)
        h = shingle(wave, length, hop)  # (B, S, length)
        min_length = self.shingle_samples(self.min_shingle_len)
        if length < min_length:
            h = repeat_pad(h, math.ceil(min_length / length) * length)
        batch, n_shingles = h.shape[:2]
        flat = h.reshape(batch * n_shingles, h.shape[-1])
        spec = torch.cat([self.cqt(part) for part in torch.split(flat, chunk)], dim=0)
        return spec.reshape(batch, n_shingles, *spec.shape[1:])

    def embed(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """CQT shingles (B, S, F, T) → segment embeddings (B, S, zdim).

        ``noise``: optional U(0,1) draws shaped like ``x`` for the input noise of
        :class:`~clews_pipe.model.layers.CQTPrepare` (default: torch's global generator)."""
        if x.ndim != 4:
            raise ValueError(f"expected CQT shingles (B, S, F, T), got shape {tuple(x.shape)}")
        if noise is not None and noise.shape != x.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} differs from the input's {tuple(x.shape)}")
        batch, n_shingles = x.shape[:2]
        h = x.reshape(batch * n_shingles, 1, *x.shape[2:]).to(self.proj[1].weight.dtype)
        if noise is None:
            h = self.frontend(h)
        else:
            h = self.frontend[0](h, noise=noise.reshape(h.shape))
            for layer in list(self.frontend)[1:]:
                h = layer(h)
        h = self.backbone(h)
        z = self.proj(self.pool(h))
        return z.reshape(batch, n_shingles, -1)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms (B, T) → segment embeddings (B, S, zdim) with the model's shingling."""
        return self.embed(self.prepare(wave))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
