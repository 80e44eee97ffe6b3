"""CQ-domain augmentations: checked against hand-worked expectations, item by item."""

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from clews_pipe.features.augment import (
    AugmentParams,
    Augmenter,
    pitch_roll,
    spec_augment,
    time_stretch,
)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_pitch_roll_moves_one_hot_bin_by_k_with_zero_fill():
    n, bins, frames = 64, 84, 7
    x = torch.zeros(n, bins, frames)
    src = 40
    x[:, src, :] = 1.0
    x[:, 0, :] = 5.0  # lowest bin: rolled off the bottom (and never wrapped) for k < 0
    y = pitch_roll(x, p=1.0, generator=gen(1), max_shift=12)
    assert y.shape == x.shape
    shifts = []
    for i in range(n):  # independent check, item by item
        rows = torch.nonzero(y[i, :, 0] == 1.0).flatten().tolist()
        assert len(rows) == 1
        k = rows[0] - src
        shifts.append(k)
        assert -12 <= k <= 12
        expected = torch.zeros(bins, frames)
        expected[src + k] = 1.0
        if k >= 0:
            expected[k] = 5.0
            expected[:k] = 0.0  # zero fill below
        assert torch.equal(y[i], expected), f"item {i} k={k}"
    assert len(set(shifts)) > 10  # per-item offsets, not one shift for the batch


def test_pitch_roll_probability_zero_and_4d_shapes():
    x = torch.rand(3, 8, 84, 20)
    assert torch.equal(pitch_roll(x, p=0.0, generator=gen()), x)
    y = pitch_roll(x, p=1.0, generator=gen(2))
    assert y.shape == x.shape
    # each shingle is shifted independently (published granularity): rows are shifted copies
    flat_x, flat_y = x.reshape(-1, 84, 20), y.reshape(-1, 84, 20)
    for i in range(flat_x.shape[0]):
        found = [
            k for k in range(-12, 13)
            if torch.equal(flat_y[i, max(k, 0): 84 + min(k, 0)], flat_x[i, max(-k, 0): 84 - max(k, 0)])
        ]
        assert found, i


def test_spec_augment_zeroes_at_most_15_percent_bands():
    n, bins, frames = 200, 84, 200
    x = torch.rand(n, bins, frames) + 0.5  # strictly positive: zeros come only from the mask
    y = spec_augment(x, p=0.5, generator=gen(3), max_freq=0.15, max_time=0.15)
    n_aug = 0
    for i in range(n):
        zero = (y[i] == 0).numpy()
        if not zero.any():
            assert torch.equal(y[i], x[i])
            continue
        n_aug += 1
        zero_rows = np.flatnonzero(zero.all(axis=1))
        zero_cols = np.flatnonzero(zero.all(axis=0))
        assert 1 <= len(zero_rows) <= int(0.15 * bins)
        assert 1 <= len(zero_cols) <= int(0.15 * frames)
        assert np.all(np.diff(zero_rows) == 1) and np.all(np.diff(zero_cols) == 1)  # contiguous
        # exactly the union of the two bands is zero; the rest is untouched
        band = np.zeros_like(zero)
        band[zero_rows, :] = True
        band[:, zero_cols] = True
        assert np.array_equal(zero, band)
        assert torch.equal(y[i][~torch.from_numpy(band)], x[i][~torch.from_numpy(band)])
    assert 70 <= n_aug <= 130  # p = 0.5 per item


def test_time_stretch_shrinks_ramp_by_factor_and_tiles():
    frames = 200
    ramp = torch.arange(frames, dtype=torch.float32)
    x = ramp.view(1, 1, -1).expand(4, 84, -1).contiguous()
    y = time_stretch(x, p=1.0, generator=gen(4), min_factor=0.5, max_factor=0.5)
    assert y.shape == x.shape
    # factor 0.5: 100 frames, each the mean of two input frames (antialiased), tiled twice
    expected_half = 2 * torch.arange(100, dtype=torch.float32) + 0.5
    for i in range(4):
        row = y[i, 10]
        assert torch.allclose(row[1:99], expected_half[1:99], atol=1e-3)
        assert torch.allclose(row[100:], row[:100])


def test_time_stretch_expands_ramp_by_factor_with_random_crop():
    frames = 200
    ramp = torch.arange(frames, dtype=torch.float32)
    x = ramp.view(1, 1, -1).expand(16, 84, -1).contiguous()
    y = time_stretch(x, p=1.0, generator=gen(5), min_factor=2.0, max_factor=2.0)
    offsets = set()
    for i in range(16):
        row = y[i, 0]
        slope = row[1:] - row[:-1]
        interior = slope[(row[1:] > 1) & (row[:-1] < frames - 2)]
        assert torch.allclose(interior, torch.full_like(interior, 0.5), atol=1e-4)
        offsets.add(round(float(row[0]), 3))
    assert len(offsets) > 4  # random crop offset per item


def test_time_stretch_factor_bins_bound_interpolate_calls(monkeypatch):
    import clews_pipe.features.augment as aug

    calls = []
    real = aug.F.interpolate

    def counting(*a, **k):
        calls.append(a[0].shape[0])
        return real(*a, **k)

    monkeypatch.setattr(aug.F, "interpolate", counting)
    x = torch.rand(400, 84, 53)
    y = time_stretch(x, p=1.0, generator=gen(6), n_factor_bins=16)
    assert y.shape == x.shape
    assert 1 <= len(calls) <= 16 and sum(calls) <= 400


def test_time_stretch_matches_direct_interpolate_per_item():
    """The binned, batched resize + crop equals torch's bilinear antialiased resize of each item."""
    import torch.nn.functional as F

    x = torch.rand(24, 84, 200)
    for factor in (0.6, 1.0 + 1 / 3, 1.8):
        y = time_stretch(x, p=1.0, generator=gen(8), min_factor=factor, max_factor=factor)
        length = int(200 * factor)
        for i in range(0, 24, 5):
            direct = F.interpolate(x[i][None, None], size=(84, length), mode="bilinear",
                                   align_corners=False, antialias=True)[0, 0]
            # find this item's crop offset from its first column, then compare every frame
            tiled = torch.cat([direct] * 3, dim=1)
            offs = [o for o in range(length) if torch.allclose(tiled[:, o], y[i][:, 0], atol=1e-5)]
            assert offs, (factor, i)
            assert torch.allclose(y[i], tiled[:, offs[0]: offs[0] + 200], atol=1e-5)


def test_augmenter_from_config_seeded_and_shape():
    conf = OmegaConf.create(
        {
            "specaugment": {"p": 0.4, "max_freq": 0.15, "max_time": 0.15},
            "timestretch": {"p": 0.3, "min": 0.6, "max": 1.8},
            "pitchroll": {"p": 0.5, "max": 12},
        }
    )
    augmenter = Augmenter.from_config(conf)
    assert augmenter.params == AugmentParams(0.4, 0.15, 0.15, 0.3, 0.6, 1.8, 0.5, 12)
    x = torch.rand(4, 8, 84, 200)
    a, b = augmenter(x, gen(7)), augmenter(x, gen(7))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, augmenter(x, gen(8)))
    off = Augmenter.from_config(OmegaConf.create({name: {"p": 0.0} for name in ("specaugment", "timestretch", "pitchroll")}))
    assert not off.active and torch.equal(off(x, gen()), x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_augmenter_keeps_dtype(dtype):
    x = torch.rand(6, 84, 100).to(dtype)
    y = Augmenter(AugmentParams.from_config({name: {"p": 1.0} for name in ("specaugment", "timestretch", "pitchroll")}))(x, gen(9))
    assert y.dtype == dtype and y.shape == x.shape


def test_augment_defaults_are_declared_once_in_the_config_schema():
    """An empty section gives the config schema's defaults (the published DVI probabilities, 0.1)."""
    from clews_pipe.model.run_config import load_train_config

    params = AugmentParams.from_config({})
    assert (params.specaugment_p, params.timestretch_p, params.pitchroll_p) == (0.1, 0.1, 0.1)
    assert AugmentParams.from_config(load_train_config().augment) == params
    partial = AugmentParams.from_config({"pitchroll": {"max": 6}})
    assert partial.pitchroll_max == 6 and partial.pitchroll_p == 0.1
