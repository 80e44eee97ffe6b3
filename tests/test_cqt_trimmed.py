"""The trimmed-kernel CQT equals nnAudio's CQT1992v2 (+ AvgPool1d) on the same waveform."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clews_pipe.features.cqt import CQTExtractor, build_cqt
from clews_pipe.features.cqt_params import CQTParams
from clews_pipe.features.cqt_trimmed import TrimmedCQTExtractor


@pytest.fixture(scope="module")
def extractors():
    return TrimmedCQTExtractor(), CQTExtractor()


def _signal(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(7)
    t = np.arange(int(seconds * 16000)) / 16000
    tones = sum(np.sin(2 * np.pi * f * t) for f in (55.0, 261.63, 1760.0, 6000.0))
    return (0.2 * tones + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


def test_unpooled_magnitude_matches_nnaudio_float32(extractors):
    trimmed, _ = extractors
    x = _signal(7.3)
    nn_cqt = build_cqt(CQTParams())[0]
    with torch.inference_mode():
        expected = nn_cqt(torch.from_numpy(x)[None])[0].double().numpy()  # (84, frames)
    got = trimmed.magnitude(x).double().numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * expected.max())


def test_pooled_features_match_cqt_extractor_within_float16(extractors):
    trimmed, reference = extractors
    for seconds in (0.6, 3.05, 11.0):
        x = _signal(seconds)
        got, expected = trimmed(x), reference(x)
        assert got.dtype == np.float16 and got.shape == expected.shape
        np.testing.assert_allclose(got.astype(np.float64), expected.astype(np.float64), rtol=2e-3,
                                   atol=1e-3 * float(expected.max()))


def test_rejects_non_mono(extractors):
    with pytest.raises(ValueError, match="mono"):
        extractors[0](np.zeros((2, 16000), dtype=np.float32))
