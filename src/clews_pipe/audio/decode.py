"""Decode one audio file to a mono float32 waveform at the feature sample rate.

PyAV demuxes and decodes (any container/codec FFmpeg knows: mp3, mp4/m4a, flac, ogg, opus,
wav, ...), channels are averaged, and soxr (HQ) resamples to ``samplerate``. Only the first
``max_seconds`` are decoded: the demux loop stops as soon as enough samples are in hand.

A damaged file keeps whatever decodes: decode errors in the middle of the stream, or a decoded
length much shorter than the length the container states (an mp3 cut in the middle), set
``truncated`` and explain it in ``note``; so do NaN/inf samples (set to 0, counted in ``note``).
A file that yields no audio at all (missing, empty, not audio, no audio stream, zero samples,
only NaN/inf samples) raises :class:`AudioDecodeError` with one line that
names the file. FFmpeg's own log output stays off (PyAV's default log level ``None``), so
nothing is printed to stderr by the decoder.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clews_pipe.errors import ClewsError

#: Decode errors tolerated inside one stream before the rest of the file is given up on.
MAX_DECODE_ERRORS = 20
#: A decoded length shorter than the stated one by more than this many seconds (plus
#: ``SHORTFALL_FRACTION`` of the stated length) marks the file as truncated.
SHORTFALL_SECONDS = 1.0
SHORTFALL_FRACTION = 0.03

# Full-scale divisors of FFmpeg's integer sample formats (planar "p" variants share them).
_INT_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


class AudioDecodeError(ClewsError):
    """One file yields no usable audio; the message is one line naming the file and why."""


@dataclass
class DecodedAudio:
    """A decoded track: ``waveform`` float32 mono at ``samplerate`` Hz, ``duration`` seconds.

    ``truncated`` / ``note`` report damage (audio missing from the end or middle of the file).
    ``capped`` says decoding stopped at ``max_seconds`` (the file is at least that long; what
    lies beyond was never decoded) — a deliberate cut, not damage, so ``truncated`` stays False.
    ``source_duration`` is the length the container states (NaN when unknown).
    ``nonfinite`` counts NaN/inf samples (mono, at the file's rate) that were set to 0: a file
    with any is ``truncated`` with the count in ``note``; one with nothing else fails.
    """

    waveform: np.ndarray
    samplerate: int
    duration: float
    truncated: bool
    note: str
    capped: bool = False
    source_duration: float = float("nan")
    nonfinite: int = 0


_DTYPES = {"u8": np.uint8, "s16": np.int16, "s32": np.int32, "s64": np.int64, "flt": np.float32, "dbl": np.float64}


class _MonoMixer:
    """Collects decoded frames as raw sample buffers (no per-frame numpy work beyond a view)
    and turns each run of frames with one sample format and channel count into mono float32
    in one vectorised step: scale integer formats to [-1, 1], average the channels."""

    def __init__(self):
        self.key = None
        self.run: list = []
        self.mono: list[np.ndarray] = []
        self.samples = 0

    def add(self, frame) -> int:
        fmt = frame.format
        channels = frame.layout.nb_channels
        key = (fmt.name, channels)
        if key != self.key:
            self.flush()
            self.key = key
        dtype = _DTYPES[fmt.name.rstrip("p") if fmt.is_planar else fmt.name]
        n = frame.samples
        if fmt.is_planar:
            self.run.append([np.frombuffer(plane, dtype=dtype, count=n) for plane in frame.planes[:channels]])
        else:
            self.run.append(np.frombuffer(frame.planes[0], dtype=dtype, count=n * channels))
        self.samples += n
        return n

    def flush(self) -> None:
        if not self.run:
            return
        name, channels = self.key
        planar = name.endswith("p") and name.rstrip("p") in _DTYPES
        base = name.rstrip("p") if planar else name
        if planar:
            data = np.stack([np.concatenate([chunk[c] for chunk in self.run]) for c in range(channels)])
        else:
            data = np.concatenate(self.run).reshape(-1, channels).T
        if base in _INT_SCALE:
            offset = 128.0 if base == "u8" else 0.0
            scale = np.float32(1.0 / (_INT_SCALE[base] * channels))
            mono = (data.sum(axis=0, dtype=np.float64) - offset * channels).astype(np.float32) * scale
        elif channels == 1:
            mono = data[0].astype(np.float32)
        else:
            mono = data.mean(axis=0, dtype=np.float32)
        self.mono.append(mono)
        self.run = []

    def waveform(self) -> np.ndarray:
        self.flush()
        return np.concatenate(self.mono) if len(self.mono) != 1 else self.mono[0]


def _stated_duration(container, stream) -> float:
    """Length the container claims, in seconds (NaN when it does not say)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000.0  # AV_TIME_BASE
    return float("nan")


def _short_message(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


@dataclass
class _DecodeProgress:
    """What the packet loop has seen so far."""

    mixer: "_MonoMixer"
    n_in: int = 0
    in_rate: int = 0
    needed: float = math.inf
    errors: int = 0
    first_error: str = ""
    error_at: float = 0.0

    def error(self, exc) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = _short_message(exc)
            self.error_at = self.n_in / self.in_rate if self.in_rate else 0.0


def decode_audio(path, samplerate: int = 16000, max_seconds: float = 600.0) -> DecodedAudio:
    """Decode ``path`` to mono float32 at ``samplerate`` Hz, at most the first ``max_seconds``."""
    import av

    path = Path(path)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise AudioDecodeError(f"{path}: cannot read file ({_short_message(exc)})") from None
    if size == 0:
        raise AudioDecodeError(f"{path}: empty file (0 bytes)")
    if max_seconds <= 0:
        raise ClewsError(f"max_seconds must be > 0, got {max_seconds}")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise AudioDecodeError(f"{path}: not a readable audio file ({_short_message(exc)})") from None
    with container:
        if not container.streams.audio:
            raise AudioDecodeError(f"{path}: no audio stream in {container.format.name} container")
        stream = container.streams.audio[0]
        source_duration = _stated_duration(container, stream)
        progress = _demux_and_mix(path, container, stream, max_seconds)
    if progress.n_in == 0 or not progress.in_rate:
        why = f"decode failed: {progress.first_error}" if progress.first_error else "no audio samples decoded"
        raise AudioDecodeError(f"{path}: {why}")
    return _finish(path, progress, samplerate, max_seconds, source_duration)


def _demux_and_mix(path: Path, container, stream, max_seconds: float) -> _DecodeProgress:
    """Decode packets of ``stream`` into a mono mix until ``max_seconds`` of input are in; a damaged
    packet is skipped and counted (up to :data:`MAX_DECODE_ERRORS`), a broken container ends it."""
    import av

    progress = _DecodeProgress(_MonoMixer(), in_rate=stream.codec_context.sample_rate or 0)
    if progress.in_rate:
        progress.needed = math.ceil(max_seconds * progress.in_rate)
    packets = container.demux(stream)
    while progress.n_in < progress.needed:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.error.FFmpegError as exc:  # the container itself is broken from here on
            progress.error(exc)
            break
        try:
            frames = packet.decode()
        except av.error.FFmpegError as exc:  # a damaged packet: skip it, keep going
            progress.error(exc)
            if progress.errors > MAX_DECODE_ERRORS:
                break
            continue
        for frame in frames:
            if not progress.in_rate or frame.sample_rate != progress.in_rate:
                if progress.n_in and frame.sample_rate != progress.in_rate:
                    raise AudioDecodeError(
                        f"{path}: sample rate changes mid-stream ({progress.in_rate} -> {frame.sample_rate} Hz)"
                    )
                progress.in_rate = frame.sample_rate
                progress.needed = math.ceil(max_seconds * progress.in_rate)
            progress.n_in += progress.mixer.add(frame)
    return progress


def _finish(path: Path, progress: _DecodeProgress, samplerate: int, max_seconds: float,
            source_duration: float) -> DecodedAudio:
    """The decoded mix capped, cleaned of NaN/inf, resampled to ``samplerate``, with its notes."""
    import soxr

    in_rate = progress.in_rate
    waveform = progress.mixer.waveform()
    capped = progress.n_in >= progress.needed
    if capped:
        waveform = waveform[: int(progress.needed)]
    nonfinite, n_samples = 0, int(waveform.shape[0])
    if not np.isfinite(waveform.sum(dtype=np.float64)):  # float codecs/files can hold inf/nan
        bad = ~np.isfinite(waveform)
        nonfinite = int(bad.sum())
        if nonfinite == waveform.shape[0]:
            raise AudioDecodeError(f"{path}: all {nonfinite} decoded samples are NaN or infinite")
        waveform[bad] = 0.0
    decoded_seconds = waveform.shape[0] / in_rate
    if in_rate != samplerate:
        waveform = soxr.resample(waveform, in_rate, samplerate, quality="HQ")
    waveform = np.ascontiguousarray(waveform[: int(round(max_seconds * samplerate))], dtype=np.float32)
    notes = []
    if nonfinite:
        notes.append(f"{nonfinite} of {n_samples} samples were NaN or infinite (set to 0)")
    if progress.errors:
        notes.append(f"{progress.errors} decode error(s) from {progress.error_at:.1f} s ({progress.first_error})")
    if not capped and math.isfinite(source_duration):
        shortfall = source_duration - decoded_seconds
        if shortfall > SHORTFALL_SECONDS + SHORTFALL_FRACTION * source_duration:
            notes.append(f"decoded {decoded_seconds:.1f} s of the {source_duration:.1f} s the file states")
    return DecodedAudio(
        waveform=waveform,
        samplerate=int(samplerate),
        duration=waveform.shape[0] / samplerate,
        truncated=bool(notes),
        note="; ".join(notes),
        capped=capped,
        source_duration=source_duration,
        nonfinite=nonfinite,
    )
