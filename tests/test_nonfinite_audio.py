"""Issue 10: audio with NaN/inf samples is flagged, never stored silently as if clean: some
non-finite samples → status ``truncated`` with their count in the error column; only
non-finite samples → ``failed``."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from clews_pipe.audio.decode import AudioDecodeError, decode_audio
from clews_pipe.features.cqt_params import CQTParams
from clews_pipe.extract.job import extract_track, worker_extractor

SR = 16000


def _float_wav(path, samples):
    sf.write(path, samples.astype(np.float32), SR, subtype="FLOAT")
    return path


def _tone(seconds=2.0):
    t = np.arange(int(seconds * SR)) / SR
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_some_nan_samples_are_counted_and_flag_the_track(tmp_path):
    x = _tone()
    x[1000:1100] = np.nan
    x[5000:5010] = np.inf
    decoded = decode_audio(_float_wav(tmp_path / "some.wav", x), samplerate=SR)
    assert decoded.nonfinite == 110 and decoded.truncated
    assert "110 of 32000 samples were NaN or infinite" in decoded.note
    assert np.isfinite(decoded.waveform).all()
    np.testing.assert_array_equal(decoded.waveform[1000:1100], 0)
    np.testing.assert_array_equal(decoded.waveform[:1000], x[:1000])


def test_all_nan_file_fails(tmp_path):
    path = _float_wav(tmp_path / "nan.wav", np.full(SR, np.nan, dtype=np.float32))
    with pytest.raises(AudioDecodeError, match="all 16000 decoded samples are NaN or infinite"):
        decode_audio(path, samplerate=SR)


def test_store_records_say_truncated_and_failed(tmp_path):
    x = _tone()
    x[::2] = np.nan
    some = _float_wav(tmp_path / "half.wav", x)
    allnan = _float_wav(tmp_path / "all.wav", np.full(SR, -np.inf, dtype=np.float32))
    clean = _float_wav(tmp_path / "clean.wav", _tone())
    extractor = worker_extractor(CQTParams())
    record = {"track_id": "t", "clique": "c", "version": "v", "split": "train", "title": "", "artist": ""}
    rec, feats = extract_track({**record, "path": str(some)}, extractor, SR, 600.0)
    assert rec["status"] == "truncated" and "16000 of 32000 samples were NaN" in rec["error"]
    assert feats is not None and np.isfinite(feats.astype(np.float32)).all()
    rec, feats = extract_track({**record, "path": str(allnan)}, extractor, SR, 600.0)
    assert rec["status"] == "failed" and feats is None and "NaN or infinite" in rec["error"]
    rec, _ = extract_track({**record, "path": str(clean)}, extractor, SR, 600.0)
    assert rec["status"] == "ok" and rec["error"] == ""
