"""The "recording" a version goes through after it is played: room, EQ, noise, level, codec.

:func:`draw_recording` draws the settings from the version's generator, :func:`record` applies
them to a mono waveform (scipy filters and FFT convolution). The codec is applied when the file
is written (mp3 / ogg / flac). Hand-written rather than a plugin host (pedalboard, sox) because
each effect is one scipy call here and the corpus must build from PyPI packages alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

CODECS = ("mp3", "ogg", "flac")
CODEC_WEIGHTS = (0.6, 0.2, 0.2)


@dataclass(frozen=True)
class Recording:
    synth_reverb: bool  # the synthesiser's own reverb (FluidSynth)
    room_rt60: float  # s; 0 = dry (convolution with decaying noise)
    room_wet: float
    highpass_hz: float
    lowpass_hz: float
    tilt_db: float  # treble shelf gain
    snr_db: float
    noise_colour: str  # "white" | "pink" | "hum"
    peak: float
    saturate: bool
    codec: str

    def as_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def draw_recording(rng: np.random.Generator) -> Recording:
    dry = rng.random() < 0.3
    return Recording(
        synth_reverb=bool(rng.random() < 0.5),
        room_rt60=0.0 if dry else float(rng.uniform(0.3, 2.0)),
        room_wet=0.0 if dry else float(rng.uniform(0.1, 0.45)),
        highpass_hz=float(rng.uniform(30, 250)),
        lowpass_hz=float(rng.uniform(2500, 7800)),
        tilt_db=float(rng.uniform(-6, 6)),
        snr_db=float(rng.uniform(12, 40)),
        noise_colour=str(rng.choice(("white", "pink", "hum"))),
        peak=float(rng.uniform(0.3, 0.95)),
        saturate=bool(rng.random() < 0.2),
        codec=str(rng.choice(CODECS, p=CODEC_WEIGHTS)),
    )


def _room(wave: np.ndarray, sr: int, rt60: float, wet: float, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import fftconvolve

    t = np.arange(int(rt60 * sr)) / sr
    ir = rng.standard_normal(len(t)) * np.exp(-6.91 * t / rt60)  # -60 dB at rt60
    ir[: int(0.01 * sr)] *= np.linspace(0, 1, int(0.01 * sr))
    tail = fftconvolve(wave, ir)[: len(wave)]
    tail *= np.sqrt(np.dot(wave, wave) / (np.dot(tail, tail) + 1e-12))
    return (1 - wet) * wave + wet * tail


def _noise(n: int, sr: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    if colour == "hum":
        t = np.arange(n) / sr
        base = float(rng.choice((50.0, 60.0)))
        return sum(np.sin(2 * np.pi * base * h * t + rng.uniform(0, 6.3)) / h for h in (1, 2, 3)) + 0.3 * rng.standard_normal(n)
    white = rng.standard_normal(n)
    if colour == "white":
        return white
    from scipy.fft import irfft, next_fast_len, rfft

    size = next_fast_len(n, real=True)  # a prime-length FFT would cost 10x more
    spectrum = rfft(white, size)
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1.0))
    return irfft(spectrum, size)[:n]


def record(wave: np.ndarray, sr: int, settings: Recording, rng: np.random.Generator) -> np.ndarray:
    """The waveform after room, EQ, noise, optional saturation and the peak level (float32)."""
    from scipy.signal import butter, sosfilt

    x = np.asarray(wave, dtype=np.float64)
    if settings.room_rt60 > 0:
        x = _room(x, sr, settings.room_rt60, settings.room_wet, rng)
    nyquist = sr / 2
    x = sosfilt(butter(2, settings.highpass_hz / nyquist, "highpass", output="sos"), x)
    x = sosfilt(butter(4, min(settings.lowpass_hz, 0.95 * nyquist) / nyquist, "lowpass", output="sos"), x)
    treble = sosfilt(butter(1, 2000 / nyquist, "highpass", output="sos"), x)
    x = x + (10 ** (settings.tilt_db / 20) - 1) * treble
    rms = np.sqrt(np.mean(x ** 2)) + 1e-9
    noise = _noise(len(x), sr, settings.noise_colour, rng)
    x = x + noise * (rms * 10 ** (-settings.snr_db / 20) / (np.sqrt(np.mean(noise ** 2)) + 1e-12))
    if settings.saturate:
        x = np.tanh(2.0 * x / (np.abs(x).max() + 1e-9))
    return (x * (settings.peak / (np.abs(x).max() + 1e-9))).astype(np.float32)
