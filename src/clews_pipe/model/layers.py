"""Building blocks of the CLEWS network (docs/clews-method.md, "Network"); attribute names follow the official checkpoints."""

from __future__ import annotations

import math

import torch
from torch import nn


#: from which octave of the CQT (0 = its lowest) the "scale" key estimate reads each frame's
#: strongest bin: above the bass and most chord tones of an arrangement (3 = from C4 when the CQT
#: starts at C1 as the published one does)
SCALE_FROM_OCTAVE = 3
#: the major scale as a pitch-class set, rooted at class 0
MAJOR_SCALE = (1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1)
#: "scale-triad": weight of the tonic triad's votes beside the scale's (chosen among 0.25 / 0.5 / 1
#: on the demo corpus's validation chorales, README "make demo")
TRIAD_WEIGHT = 0.5


def key_normalise(h: torch.Tensor, bins_per_octave: int, by: str = "profile") -> torch.Tensor:
    """Shift each segment along frequency so that its estimated key lands on pitch class 0.

    ``h (N, C, F, T)``, F a whole number of octaves. The key ``k`` of a segment is
    :func:`profile_pitch_class` (``by="profile"``) or :func:`scale_pitch_class` (``by="scale"``);
    it is moved to 0 by the shorter way round (at most half an octave), vacated bins are 0. A
    transposed copy of a segment (away from the edges) thus gives the same output: key invariance
    by construction rather than learnt from pitch-roll augmentation (docs/clews-method.md, "Key
    normalisation").
    """
    n, c, f, t = h.shape
    if f % bins_per_octave:
        raise ValueError(f"key normalisation needs whole octaves: {f} bins, {bins_per_octave} per octave")
    if by == "profile":
        key = profile_pitch_class(h, bins_per_octave)
    elif by == "scale":
        key = scale_pitch_class(h, bins_per_octave)
    elif by == "scale-triad":
        key = scale_triad_pitch_class(h, bins_per_octave)
    else:
        raise ValueError(f"unknown key estimate {by!r}: expected profile, scale or scale-triad")
    shift = torch.where(key > bins_per_octave // 2, key - bins_per_octave, key)
    source = torch.arange(f, device=h.device).view(1, f) + shift.view(n, 1)  # output bin b reads b + shift
    inside = (source >= 0) & (source < f)
    gathered = torch.gather(h, 2, source.clamp(0, f - 1).view(n, 1, f, 1).expand(n, c, f, t))
    return gathered * inside.view(n, 1, f, 1).to(h.dtype)


def profile_pitch_class(h: torch.Tensor, bins_per_octave: int) -> torch.Tensor:
    """(N,) the dominant pitch class: argmax of ``h`` summed over channels, octaves and time."""
    n, c, f, t = h.shape
    return h.reshape(n, c, f // bins_per_octave, bins_per_octave, t).sum(dim=(1, 2, 4)).argmax(dim=1)


def scale_pitch_class(h: torch.Tensor, bins_per_octave: int) -> torch.Tensor:
    """(N,) the root of the major scale that best covers the melody.

    Each frame votes for the pitch class of its strongest bin from octave
    :data:`SCALE_FROM_OCTAVE` up (or the top octave of a shorter CQT), weighted by that bin's
    level; the key is the rotation of :data:`MAJOR_SCALE` (12 bins per octave) with the most votes.
    A scale, unlike the loudest pitch class, barely moves when an arrangement adds a bass or
    chords or an instrument has a strong fifth harmonic (measured in the README, "make demo").
    """
    return _scale_fit(_upper_peak_votes(h, bins_per_octave)).argmax(dim=1)


def scale_triad_pitch_class(h: torch.Tensor, bins_per_octave: int) -> torch.Tensor:
    """(N,) :func:`scale_pitch_class` with ties broken by the tonic: each root's scale votes plus
    :data:`TRIAD_WEIGHT` times the votes on its tonic triad (the major triad on the root, or the
    minor triad on its relative minor, whichever has more). A melody that leaves out a scale
    degree fits two neighbouring scales equally; the one whose tonic chord it dwells on wins."""
    votes = _upper_peak_votes(h, bins_per_octave)
    root = torch.arange(bins_per_octave, device=h.device)
    step = lambda semitones: votes[:, (root + semitones) % bins_per_octave]  # noqa: E731
    major = step(0) + step(4) + step(7)  # the root's major triad
    minor = step(9) + step(0) + step(4)  # its relative minor's triad
    return (_scale_fit(votes) + TRIAD_WEIGHT * torch.maximum(major, minor)).argmax(dim=1)


def _upper_peak_votes(h: torch.Tensor, bins_per_octave: int) -> torch.Tensor:
    """(N, 12) per pitch class, the summed level of the frames whose strongest bin from octave
    :data:`SCALE_FROM_OCTAVE` up (or the top octave of a shorter CQT) is of that class."""
    n, c, f, t = h.shape
    if bins_per_octave != len(MAJOR_SCALE):
        raise ValueError(f"the scale key estimate needs 12 bins per octave, got {bins_per_octave}")
    low = min(SCALE_FROM_OCTAVE, f // bins_per_octave - 1) * bins_per_octave
    level, peak = h[:, :, low:, :].max(dim=2)  # (N, C, T)
    votes = torch.zeros(n, bins_per_octave, dtype=h.dtype, device=h.device)
    votes.scatter_add_(1, ((peak + low) % bins_per_octave).reshape(n, -1), level.reshape(n, -1))
    return votes


def _scale_fit(votes: torch.Tensor) -> torch.Tensor:
    """(N, 12 roots): the votes that fall in each root's :data:`MAJOR_SCALE`."""
    major = torch.tensor(MAJOR_SCALE, dtype=votes.dtype, device=votes.device)
    scales = torch.stack([torch.roll(major, k) for k in range(len(MAJOR_SCALE))])  # (12 roots, 12 classes)
    return votes @ scales.t()


class CQTPrepare(nn.Module):
    """CQT magnitude → network input: clamp ≥ 0, power ``pow``, per-segment min-max normalisation
    over (freq, time), + ``noise``·U(0,1), normalise again, then learnable scalar ``gain``/``bias``.

    With ``key_bins`` (bins per octave) the normalised segment is then shifted by
    :func:`key_normalise` (key estimate ``key_by``) before the gain and bias; 0 leaves it where it
    is (the published network). ``first_bin`` > 0 then drops the bins below it (the network reads
    the upper octaves only; the normalisation and the key estimate still see them all).

    Input/output (N, 1, F, T). The U(0,1) noise comes from torch's global generator (seeded by
    training) unless ``noise`` (same shape) is given: evaluation passes draws seeded per track, so
    embeddings do not depend on batching, ranks or reruns.
    """

    def __init__(self, pow: float = 0.5, noise: float = 1e-6, eps: float = 1e-6, key_bins: int = 0,
                 key_by: str = "profile", first_bin: int = 0):
        super().__init__()
        self.first_bin = int(first_bin)
        self.key_bins = int(key_bins)
        self.key_by = str(key_by)
        self.pow = float(pow)
        self.noise = float(noise)
        self.eps = float(eps)
        self.gain = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    def _minmax(self, h: torch.Tensor) -> torch.Tensor:
        low = h.amin(dim=(2, 3), keepdim=True)
        h = h - low
        return h / (h.amax(dim=(2, 3), keepdim=True) + self.eps)

    def forward(self, h: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        h = self._minmax(h.clamp(min=0).pow(self.pow))
        if self.noise > 0:
            draw = torch.rand_like(h) if noise is None else noise.to(device=h.device, dtype=h.dtype).reshape(h.shape)
            h = self._minmax(h + self.noise * draw)
        if self.key_bins:
            h = key_normalise(h, self.key_bins, self.key_by)
        return self.gain * h[:, :, self.first_bin:, :] + self.bias


class IBN(nn.Module):
    """Instance-batch normalisation: first half of the channels BatchNorm2d (``bn``), second half
    InstanceNorm2d with affine parameters (``inst``)."""

    def __init__(self, channels: int):
        super().__init__()
        if channels % 2:
            raise ValueError(f"IBN needs an even channel count, got {channels}")
        half = channels // 2
        self.bn = nn.BatchNorm2d(half)
        self.inst = nn.InstanceNorm2d(half, affine=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        first, second = torch.chunk(h, 2, dim=1)
        return torch.cat([self.bn(first), self.inst(second)], dim=1)


class Conv3x3(nn.Module):
    """3×3 convolution, padding 1, no bias; the Conv2d lives at ``.conv`` as in the official tree."""

    def __init__(self, nin: int, nout: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(nin, nout, 3, stride=stride, padding=1, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.conv(h)


def mid_channels(nin: int, nout: int) -> int:
    """Bottleneck width of a residual block: max(nin, nout)/2, rounded up to an even number."""
    mid = max(1, max(nin, nout) // 2)
    return mid + mid % 2


class ResBlock(nn.Module):
    """Pre-activation IBN residual block with a ReZero gain (init 0): ``gain·convs(h) + skip(h)``."""

    def __init__(self, nin: int, nout: int, stride: int = 1):
        super().__init__()
        mid = mid_channels(nin, nout)
        self.convs = nn.Sequential(
            IBN(nin),
            nn.ReLU(inplace=True),
            Conv3x3(nin, mid, stride=stride),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            Conv3x3(mid, nout),
        )
        if nin != nout or stride != 1:
            self.skip: nn.Module = nn.Sequential(nn.BatchNorm2d(nin), nn.ReLU(inplace=True), Conv3x3(nin, nout, stride=stride))
        else:
            self.skip = nn.Identity()
        self.gain = nn.Parameter(torch.zeros(1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.gain * self.convs(h) + self.skip(h)


class GeM(nn.Module):
    """Generalised-mean pooling over all positions: (N, C, ...) → (N, C).

    One learnable ``p`` shaped (1, 1, 1); exponent = 1 + softplus(p), starting at ``init``.
    """

    def __init__(self, init: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.eps = float(eps)
        # softplus(p) = init - 1  ⇔  p = log(exp(init - 1) - 1)
        self.p = nn.Parameter(torch.full((1, 1, 1), math.log(math.expm1(init - 1.0))))

    @property
    def exponent(self) -> torch.Tensor:
        return 1.0 + nn.functional.softplus(self.p)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h.flatten(start_dim=2)
        e = self.exponent
        return h.clamp(min=self.eps).pow(e).mean(dim=-1).pow(1.0 / e.squeeze(-1))
