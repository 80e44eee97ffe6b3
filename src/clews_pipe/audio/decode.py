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


def decode_audio(path, samplerate: int = 16000, max_seconds: float = 600.0) -> DecodedAudio:
    """Decode ``path`` to mono float32 at ``samplerate`` Hz, at most the first ``max_seconds``."""
    import av
    import soxr

    path = Path(path)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise AudioDecodeError(f"{path}: cannot read file ({_short_message(exc)})") from None
    if size == 0:
        raise AudioDecodeError(f"{path}: empty file (0 bytes)")
    if max_seconds <= 0:
        raise ClewsError(f"max_seconds must be > 0, got {max_seconds}")

    mixer = _MonoMixer()
    n_in = 0
    in_rate = 0
    errors = 0
    first_error = ""
    error_at = 0.0
    stopped_early = False
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise AudioDecodeError(f"{path}: not a readable audio file ({_short_message(exc)})") from None
    with container:
        if not container.streams.audio:
            raise AudioDecodeError(f"{path}: no audio stream in {container.format.name} container")
        stream = container.streams.audio[0]
        source_duration = _stated_duration(container, stream)
        in_rate = stream.codec_context.sample_rate or 0
        needed = math.inf if not in_rate else math.ceil(max_seconds * in_rate)
        packets = container.demux(stream)
        while n_in < needed:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError as exc:  # the container itself is broken from here on
                errors += 1
                first_error = first_error or _short_message(exc)
                error_at = n_in / in_rate if in_rate else 0.0
                break
            try:
                frames = packet.decode()
            except av.error.FFmpegError as exc:  # a damaged packet: skip it, keep going
                errors += 1
                if not first_error:
                    first_error = _short_message(exc)
                    error_at = n_in / in_rate if in_rate else 0.0
                if errors > MAX_DECODE_ERRORS:
                    break
                continue
            for frame in frames:
                if not in_rate or frame.sample_rate != in_rate:
                    if n_in and frame.sample_rate != in_rate:
                        raise AudioDecodeError(
                            f"{path}: sample rate changes mid-stream ({in_rate} -> {frame.sample_rate} Hz)"
                        )
                    in_rate = frame.sample_rate
                    needed = math.ceil(max_seconds * in_rate)
                n_in += mixer.add(frame)
        stopped_early = n_in >= needed

    if n_in == 0 or not in_rate:
        why = f"decode failed: {first_error}" if first_error else "no audio samples decoded"
        raise AudioDecodeError(f"{path}: {why}")

    waveform = mixer.waveform()
    capped = bool(stopped_early)
    if capped:
        waveform = waveform[: int(needed)]
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
    max_out = int(round(max_seconds * samplerate))
    if waveform.shape[0] > max_out:
        waveform = waveform[:max_out]
    waveform = np.ascontiguousarray(waveform, dtype=np.float32)

    notes = []
    if nonfinite:
        notes.append(f"{nonfinite} of {n_samples} samples were NaN or infinite (set to 0)")
    if errors:
        notes.append(f"{errors} decode error(s) from {error_at:.1f} s ({first_error})")
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
