"""Batched constant-Q-domain augmentations for CLEWS training (docs/clews-method.md, "Training batches, schedule and augmentations").

Each transform takes a whole batch, ``(N, bins, frames)`` or ``(N, S, bins, frames)``, on any
device, and draws every random number from a ``torch.Generator`` passed in, so the same seed
gives the same augmented batch. The per-item random numbers are tiny tensors drawn on the
generator's device and then moved to the data's device; the heavy work runs on the data's device.

Granularity follows the published ``lib/augmentations.py`` (``Augment.cqgram``): a 4-D batch
(tracks, shingles, bins, frames) is flattened to (tracks·shingles, bins, frames) and every
*shingle* gets its own random decision and parameters. The three transforms are applied in a
random order drawn once per call, as the published code does.

- SpecAugment: with probability ``p`` per item, one contiguous band of up to ``max_freq`` of the
  bins (at least one) and one contiguous band of up to ``max_time`` of the frames are set to 0
  (union of the two bands, the published ``full: true`` mode).
- Time stretch: with probability ``p`` per item, resample along time by a factor
  ``U(min, max)`` (bilinear with antialiasing, as torchvision ``Resize``), then repeat-pad and
  randomly crop back to the original frame count. Factors are quantised to a fixed grid of
  ``n_factor_bins`` values so the number of ``F.interpolate`` calls does not grow with the batch.
- Pitch roll: with probability ``p`` per item, shift along the bin axis by ``k ~ U{-max..max}``
  bins (positive = up), filling the vacated bins with 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


#: time-stretch factors are quantised to this many values (one F.interpolate call per value)
TIMESTRETCH_BINS = 16


@dataclass(frozen=True)
class AugmentParams:
    """Probabilities and ranges, flat; built from the config's ``augment`` section, whose schema
    (:mod:`clews_pipe.features.augment_config`) holds the only defaults."""

    specaugment_p: float
    specaugment_max_freq: float
    specaugment_max_time: float
    timestretch_p: float
    timestretch_min: float
    timestretch_max: float
    pitchroll_p: float
    pitchroll_max: int
    timestretch_bins: int = TIMESTRETCH_BINS

    @classmethod
    def from_config(cls, augment_conf=None) -> "AugmentParams":
        """From an ``augment`` section (OmegaConf node, mapping or :class:`AugmentConfig`); keys it
        does not set take the schema's defaults. An unknown key raises OmegaConf's error."""
        from omegaconf import OmegaConf

        from clews_pipe.features.augment_config import AugmentConfig

        merged = OmegaConf.merge(OmegaConf.structured(AugmentConfig), augment_conf or {})
        spec, stretch, roll = merged.specaugment, merged.timestretch, merged.pitchroll
        return cls(
            specaugment_p=float(spec.p),
            specaugment_max_freq=float(spec.max_freq),
            specaugment_max_time=float(spec.max_time),
            timestretch_p=float(stretch.p),
            timestretch_min=float(stretch.min),
            timestretch_max=float(stretch.max),
            pitchroll_p=float(roll.p),
            pitchroll_max=int(roll.max),
        )


def _uniform(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device).to(device)


def _integers(low: int, high: int, n: int, generator: torch.Generator, device) -> torch.Tensor:
    """``n`` integers uniformly in [low, high] (inclusive)."""
    return torch.randint(low, high + 1, (n,), generator=generator, device=generator.device).to(
        device
    )


def _flatten(x: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
    if x.ndim not in (3, 4):
        raise ValueError(f"expected (N, bins, frames) or (N, S, bins, frames), got {tuple(x.shape)}")
    return x.reshape(-1, x.shape[-2], x.shape[-1]), x.shape


def spec_augment(
    x: torch.Tensor,
    p: float,
    generator: torch.Generator,
    max_freq: float = 0.15,
    max_time: float = 0.15,
    inplace: bool = False,
) -> torch.Tensor:
    """Zero one frequency band and one time band per selected item.

    The band masks are built by broadcasting ``(N, bins)`` / ``(N, frames)`` comparisons and
    written with two boolean-index assignments that touch only the zeroed rows and columns.
    """
    y, shape = _flatten(x if inplace else x.clone())
    n, n_bins, n_frames = y.shape
    dev = y.device
    flen = (_uniform(n, generator, dev) * max_freq * n_bins).long().clamp(min=1)
    f0 = (_uniform(n, generator, dev) * (n_bins - flen)).long()
    tlen = (_uniform(n, generator, dev) * max_time * n_frames).long().clamp(min=1)
    t0 = (_uniform(n, generator, dev) * (n_frames - tlen)).long()
    selected = (_uniform(n, generator, dev) < p).view(-1, 1)
    fids = torch.arange(n_bins, device=dev).view(1, -1)
    tids = torch.arange(n_frames, device=dev).view(1, -1)
    in_fband = (fids >= f0.view(-1, 1)) & (fids < (f0 + flen).view(-1, 1)) & selected
    in_tband = (tids >= t0.view(-1, 1)) & (tids < (t0 + tlen).view(-1, 1)) & selected
    y[in_fband] = 0  # (N, bins) mask → whole rows
    y.transpose(1, 2)[in_tband] = 0  # (N, frames) mask → whole columns
    return y.reshape(shape)


def pitch_roll(
    x: torch.Tensor,
    p: float,
    generator: torch.Generator,
    max_shift: int = 12,
    inplace: bool = False,
) -> torch.Tensor:
    """Shift each selected item by its own ``k`` bins (zero fill): one gather for the batch."""
    y, shape = _flatten(x if inplace else x.clone())
    n, n_bins, _ = y.shape
    dev = y.device
    shift = _integers(-max_shift, max_shift, n, generator, dev)
    selected = (_uniform(n, generator, dev) < p) & (shift != 0)
    items = torch.nonzero(selected).flatten()
    if len(items) == 0:
        return y.reshape(shape)
    # output bin c takes input bin c - k; bins whose source falls outside the range become 0
    src = torch.arange(n_bins, device=dev).view(1, -1) - shift[items].view(-1, 1)
    outside = (src < 0) | (src >= n_bins)
    rolled = y[items.view(-1, 1), src.clamp(0, n_bins - 1)]  # gather: (n_sel, bins, frames)
    rolled[outside] = 0
    y[items] = rolled
    return y.reshape(shape)


def time_stretch(
    x: torch.Tensor,
    p: float,
    generator: torch.Generator,
    min_factor: float = 0.6,
    max_factor: float = 1.8,
    n_factor_bins: int = 16,
    inplace: bool = False,
) -> torch.Tensor:
    """Resample selected items along time by a per-item factor, then repeat-pad / crop back.

    Factors ``U(min_factor, max_factor)`` are rounded to the nearest of ``n_factor_bins``
    equally spaced values, so at most ``n_factor_bins`` interpolation calls run per batch.
    """
    y, shape = _flatten(x if inplace else x.clone())
    n, n_bins, n_frames = y.shape
    dev = y.device
    grid = torch.linspace(min_factor, max_factor, max(n_factor_bins, 1), dtype=torch.float64)
    raw = min_factor + (max_factor - min_factor) * _uniform(n, generator, dev).double()
    which = (raw.view(-1, 1) - grid.to(dev).view(1, -1)).abs().argmin(dim=1)
    crop_u = _uniform(n, generator, dev)
    selected = _uniform(n, generator, dev) < p
    for b in torch.unique(which[selected]).tolist():
        items = torch.nonzero(selected & (which == b)).flatten()
        length = max(int(n_frames * float(grid[b])), 1)
        if length == n_frames:
            continue
        stretched = F.interpolate(
            y[items].unsqueeze(1).float(),
            size=(n_bins, length),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        ).squeeze(1)
        # repeat-pad to a whole number of copies ≥ n_frames, then crop n_frames at a random
        # per-item offset: one indexed copy of contiguous frame runs from an unfolded view
        copies = -(-n_frames // length)
        if copies > 1:
            stretched = stretched.repeat(1, 1, copies)
        slack = copies * length - n_frames
        offset = (crop_u[items] * (slack + 1)).long().clamp(max=slack)
        windows = stretched.unfold(2, n_frames, 1)  # (n_b, bins, slack + 1, n_frames), a view
        cropped = windows[torch.arange(len(items), device=dev), :, offset]
        y[items] = cropped.to(y.dtype)
    return y.reshape(shape)


class Augmenter:
    """Applies the three CQ augmentations of the config to whole batches, in a random order."""

    def __init__(self, params):
        """``params``: an :class:`AugmentParams` or the config's ``augment`` section."""
        self.params = params if isinstance(params, AugmentParams) else AugmentParams.from_config(params)

    @classmethod
    def from_config(cls, augment_conf) -> "Augmenter":
        return cls(AugmentParams.from_config(augment_conf))

    @property
    def active(self) -> bool:
        prm = self.params
        return max(prm.specaugment_p, prm.timestretch_p, prm.pitchroll_p) > 0

    def __call__(
        self, x: torch.Tensor, generator: torch.Generator, inplace: bool = False
    ) -> torch.Tensor:
        """Augmented batch; ``inplace=True`` overwrites ``x`` (saves one copy of the batch)."""
        prm = self.params
        if not self.active:
            return x
        if not inplace:
            x = x.clone()  # one copy; the transforms below then work in place
        steps = []
        if prm.specaugment_p > 0:
            steps.append(
                lambda y: spec_augment(
                    y, prm.specaugment_p, generator, prm.specaugment_max_freq,
                    prm.specaugment_max_time, inplace=True,
                )
            )
        if prm.timestretch_p > 0:
            steps.append(
                lambda y: time_stretch(
                    y, prm.timestretch_p, generator, prm.timestretch_min, prm.timestretch_max,
                    prm.timestretch_bins, inplace=True,
                )
            )
        if prm.pitchroll_p > 0:
            steps.append(
                lambda y: pitch_roll(y, prm.pitchroll_p, generator, prm.pitchroll_max, inplace=True)
            )
        order = torch.randperm(len(steps), generator=generator, device=generator.device).tolist()
        for i in order:
            x = steps[i](x)
        return x


CQAugment = Augmenter  # the name the training loop uses: ``CQAugment(conf.augment)(x, generator)``
