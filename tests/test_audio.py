"""decode_audio on real files written by soundfile (wav/flac/ogg/mp3) and by damaging them."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from clews_pipe.errors import ClewsError
from clews_pipe.audio.decode import AudioDecodeError, DecodedAudio, decode_audio

FORMATS = [("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_24"), ("ogg", "OGG", "VORBIS"), ("mp3", "MP3", "MPEG_LAYER_III")]


def _write(path, data, sr, fmt, subtype):
    sf.write(path, data, sr, format=fmt, subtype=subtype)
    return path


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    k = int(np.argmax(spectrum))
    # parabolic interpolation of the peak bin
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sr / len(x)


@pytest.mark.parametrize("ext, fmt, subtype", FORMATS)
def test_resampling_44k1_keeps_sine_frequency(tmp_path, ext, fmt, subtype):
    sr, f0, seconds = 44100, 1234.5, 3.0
    t = np.arange(int(sr * seconds)) / sr
    path = _write(tmp_path / f"sine.{ext}", 0.5 * np.sin(2 * np.pi * f0 * t), sr, fmt, subtype)
    out = decode_audio(path)
    assert isinstance(out, DecodedAudio)
    assert out.samplerate == 16000 and out.waveform.dtype == np.float32 and out.waveform.ndim == 1
    assert abs(out.duration - seconds) < 0.1 and not out.truncated and out.note == ""
    assert abs(_peak_hz(out.waveform[4000:-4000], 16000) - f0) < 0.5
    rms = float(np.sqrt(np.mean(out.waveform[4000:-4000] ** 2)))
    assert abs(rms - 0.5 / np.sqrt(2)) < 0.03


@pytest.mark.parametrize("ext, fmt, subtype", FORMATS)
def test_stereo_is_mean_of_channels(tmp_path, ext, fmt, subtype):
    sr = 44100
    t = np.arange(sr * 2) / sr
    left, right = 0.6 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 1000 * t)
    path = _write(tmp_path / f"st.{ext}", np.stack([left, right], axis=1), sr, fmt, subtype)
    out = decode_audio(path).waveform[2000:-2000]
    spectrum = np.abs(np.fft.rfft(out)) * 2 / len(out)
    freqs = np.fft.rfftfreq(len(out), 1 / 16000)
    amp = lambda f: spectrum[np.abs(freqs - f) < 3].max()  # noqa: E731
    # the mean of channels carries each sine at half its channel amplitude
    assert abs(amp(440) - 0.3) < 0.03 and abs(amp(1000) - 0.15) < 0.03


def test_wav_matches_independent_resampling(tmp_path):
    sr = 44100
    rng = np.random.default_rng(0)
    stereo = 0.2 * rng.standard_normal((sr * 2, 2))
    stereo = np.clip(stereo, -0.99, 0.99)
    path = _write(tmp_path / "noise.wav", stereo, sr, "WAV", "FLOAT")
    ours = decode_audio(path).waveform
    reference = resample_poly(stereo.mean(axis=1), 160, 441)  # independent polyphase resampler
    assert abs(len(ours) - len(reference)) <= 1
    n = min(len(ours), len(reference))
    inner = slice(500, n - 500)
    # two different low-pass filters: compare the in-band (< 7 kHz) content
    err = np.abs(np.fft.rfft(ours[inner]) - np.fft.rfft(reference[inner]))
    band = np.fft.rfftfreq(inner.stop - inner.start, 1 / 16000) < 7000
    assert np.median(err[band]) / np.median(np.abs(np.fft.rfft(reference[inner]))[band]) < 0.02


def test_16k_wav_is_passed_through(tmp_path):
    rng = np.random.default_rng(1)
    data = (0.3 * rng.standard_normal(16000 * 2)).astype(np.float32)
    path = _write(tmp_path / "x.wav", data, 16000, "WAV", "PCM_16")
    expected, _ = sf.read(path, dtype="float32")
    out = decode_audio(path)
    np.testing.assert_allclose(out.waveform, expected, atol=1e-6)
    assert out.duration == 2.0


@pytest.mark.parametrize("ext, fmt, subtype", [FORMATS[0], FORMATS[3]])
def test_max_seconds_cut(tmp_path, ext, fmt, subtype):
    sr = 22050
    t = np.arange(sr * 10) / sr
    path = _write(tmp_path / f"long.{ext}", 0.4 * np.sin(2 * np.pi * 300 * t), sr, fmt, subtype)
    full = decode_audio(path)
    cut = decode_audio(path, max_seconds=3.5)
    assert cut.waveform.shape == (56000,) and cut.duration == 3.5
    assert cut.capped and not cut.truncated and cut.note == ""
    assert not full.capped and abs(full.source_duration - 10.0) < 0.1
    # same samples as the full decode, away from the resampler's edge at the cut
    np.testing.assert_allclose(cut.waveform[:55000], full.waveform[:55000], atol=1e-4)


def test_other_samplerate(tmp_path):
    sr = 16000
    path = _write(tmp_path / "x.flac", 0.3 * np.sin(2 * np.pi * 500 * np.arange(sr) / sr), sr, "FLAC", "PCM_16")
    out = decode_audio(path, samplerate=8000)
    assert out.samplerate == 8000 and out.waveform.shape == (8000,)
    assert abs(_peak_hz(out.waveform[500:-500], 8000) - 500) < 1


def _mp3(tmp_path, seconds=20.0, name="song.mp3"):
    sr = 16000
    t = np.arange(int(sr * seconds)) / sr
    return _write(tmp_path / name, 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(t)), sr, "MP3", "MPEG_LAYER_III")


def test_truncated_mp3_keeps_what_decodes_quietly(tmp_path, capfd):
    whole = _mp3(tmp_path).read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(whole[: len(whole) // 2 + 37])  # cut mid-frame
    out = decode_audio(cut)
    assert out.truncated and "states" in out.note and "20.0" in out.note
    assert 8.0 < out.duration < 12.0
    assert np.abs(out.waveform).max() > 0.1
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


def test_cut_file_within_max_seconds_is_not_flagged(tmp_path):
    whole = _mp3(tmp_path).read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(whole[: len(whole) // 2])
    out = decode_audio(cut, max_seconds=5.0)  # the damage lies beyond what is asked for
    assert out.capped and not out.truncated and out.duration == 5.0


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("empty.mp3", b"", "empty"),
        ("garbage.mp3", np.random.default_rng(3).bytes(40000), "not a readable audio file"),
        ("text.flac", b"this is not audio at all\n" * 200, ""),  # FFmpeg may probe it, but nothing decodes
    ],
)
def test_bad_files_raise_one_line(tmp_path, capfd, name, content, needle):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioDecodeError) as info:
        decode_audio(path)
    message = str(info.value)
    assert needle in message and str(path) in message and "\n" not in message
    assert isinstance(info.value, ClewsError)
    assert capfd.readouterr().err == ""


def test_missing_file_raises(tmp_path):
    with pytest.raises(AudioDecodeError, match="cannot read file"):
        decode_audio(tmp_path / "nope.mp3")


def test_header_only_wav_has_no_audio(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros((0,), dtype=np.float32), 16000)
    with pytest.raises(AudioDecodeError, match="zero.wav"):
        decode_audio(path)


def _write_m4a(path, stereo: np.ndarray, sr: int, faststart: bool):
    """AAC in MP4 (the Discogs-VI downloader's format), written with PyAV."""
    import av

    with av.open(str(path), "w", format="mp4", options={"movflags": "faststart"} if faststart else {}) as container:
        stream = container.add_stream("aac", rate=sr, layout="stereo")
        stream.codec_context.bit_rate = 128000
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo.T, dtype=np.float32), format="fltp", layout="stereo")
        frame.sample_rate = sr
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            container.mux(packet)
    return path


def test_m4a_aac_and_its_damaged_forms(tmp_path, capfd):
    sr = 44100
    t = np.arange(sr * 12) / sr
    stereo = 0.3 * np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], axis=1)
    fast = _write_m4a(tmp_path / "fast.m4a", stereo, sr, faststart=True)
    out = decode_audio(fast)
    assert abs(out.duration - 12.0) < 0.1 and not out.truncated
    assert abs(_peak_hz(out.waveform[4000:-4000], 16000) - 440) < 0.5
    # index (moov) at the front, data cut: keeps the first half, flagged
    cut = tmp_path / "cut_fast.m4a"
    cut.write_bytes(fast.read_bytes()[: fast.stat().st_size // 2])
    damaged = decode_audio(cut)
    assert damaged.truncated and 4.0 < damaged.duration < 8.0 and "12.0 s the file states" in damaged.note
    # index at the end and the end cut off: nothing can be decoded
    slow = _write_m4a(tmp_path / "slow.m4a", stereo, sr, faststart=False)
    cut_slow = tmp_path / "cut_slow.m4a"
    cut_slow.write_bytes(slow.read_bytes()[: slow.stat().st_size // 2])
    with pytest.raises(AudioDecodeError, match="cut_slow.m4a"):
        decode_audio(cut_slow)
    assert capfd.readouterr().err == ""


def test_damaged_middle_is_flagged_not_raised(tmp_path, capfd):
    whole = bytearray(_mp3(tmp_path, seconds=30.0).read_bytes())
    third = len(whole) // 3
    whole[third : third + 6000] = np.random.default_rng(0).bytes(6000)
    damaged = tmp_path / "damaged.mp3"
    damaged.write_bytes(bytes(whole))
    out = decode_audio(damaged)
    assert out.truncated and out.note
    assert out.duration > 15.0  # what follows the damage is still decoded
    assert capfd.readouterr().err == ""
