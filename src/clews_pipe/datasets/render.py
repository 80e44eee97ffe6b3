"""Render a :class:`~clews_pipe.datasets.arrange.Performance` to a mono waveform.

Two renderers:

- ``fluidsynth``: the notes are written as a Standard MIDI File (mido) and rendered offline by
  the ``fluidsynth`` program with a General MIDI soundfont (Debian's ``fluid-soundfont-gm``,
  FluidR3_GM.sf2; ``CLEWS_PIPE_SOUNDFONT`` names another). The program renders ~30 s of audio
  in ~0.2 s, loading samples lazily, so one process per version costs little.
- ``numpy``: the fallback where FluidSynth or a soundfont cannot be had. Hand-written additive
  synthesis (a few harmonics with an attack/decay envelope per note, timbre chosen by the GM
  program's family) so the corpus can still be made anywhere; it sounds like a toy organ.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clews_pipe.datasets.arrange import Performance
from clews_pipe.errors import ClewsError

SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2",
              "/usr/share/soundfonts/FluidR3_GM.sf2", "/usr/share/soundfonts/default.sf2")
RENDERERS = ("auto", "fluidsynth", "numpy")
_TICKS_PER_BEAT = 960
_SECONDS_PER_TICK = 0.5 / _TICKS_PER_BEAT  # MIDI default tempo: 120 bpm


@dataclass(frozen=True)
class Renderer:
    kind: str  # "fluidsynth" | "numpy"
    program: str | None = None
    soundfont: str | None = None


def find_soundfont() -> str | None:
    env = os.environ.get("CLEWS_PIPE_SOUNDFONT")
    for path in ([env] if env else []) + list(SOUNDFONTS):
        if path and Path(path).is_file():
            return str(Path(path).resolve())
    return None


@dataclass(frozen=True)
class RendererChoice:
    renderer: Renderer
    notice: str | None  # one line saying why ``auto`` fell back to numpy


def choose_renderer(kind: str = "auto") -> RendererChoice:
    """The renderer to use and, when ``auto`` falls back to numpy, the one-line notice why."""
    if kind not in RENDERERS:
        raise ClewsError(f"--renderer must be one of {', '.join(RENDERERS)}, not {kind!r}")
    if kind == "numpy":
        return RendererChoice(Renderer("numpy"), None)
    program, soundfont = shutil.which("fluidsynth"), find_soundfont()
    if program and soundfont:
        return RendererChoice(Renderer("fluidsynth", program, soundfont), None)
    missing = "the fluidsynth program" if not program else "a General MIDI soundfont (fluid-soundfont-gm)"
    if kind == "fluidsynth":
        raise ClewsError(f"--renderer fluidsynth: {missing} not found (as root: apt-get install fluidsynth fluid-soundfont-gm)")
    return RendererChoice(Renderer("numpy"), f"notice: {missing} not found: rendering with the numpy synthesiser instead (as root: apt-get install fluidsynth fluid-soundfont-gm)")


def write_midi(performance: Performance, path: str | Path) -> None:
    """One track per part on its own channel (drum channel 10 skipped), program change first."""
    import mido

    midi = mido.MidiFile(ticks_per_beat=_TICKS_PER_BEAT)
    for index, part in enumerate(performance.parts):
        channel = index if index < 9 else index + 1
        on = np.round(part.onset / _SECONDS_PER_TICK).astype(np.int64)
        off = np.maximum(on + 1, np.round((part.onset + part.duration) / _SECONDS_PER_TICK).astype(np.int64))
        # note-offs before note-ons at the same tick, so a repeated pitch re-strikes
        ticks = np.concatenate([off, on])
        kinds = np.concatenate([np.zeros(len(off), int), np.ones(len(on), int)])
        pitch = np.concatenate([part.pitch, part.pitch])
        velocity = np.concatenate([np.zeros(len(off), int), part.velocity])
        order = np.lexsort((kinds, ticks))
        track = mido.MidiTrack([mido.Message("program_change", program=int(part.program), channel=channel, time=0)])
        previous = 0
        for i in order:
            kind = "note_on" if kinds[i] else "note_off"
            track.append(mido.Message(kind, note=int(pitch[i]), velocity=int(velocity[i]), channel=channel,
                                      time=int(ticks[i] - previous)))
            previous = int(ticks[i])
        midi.tracks.append(track)
    midi.save(str(path))


def render_fluidsynth(performance: Performance, sr: int, renderer: Renderer, reverb: bool, gain: float = 0.5) -> np.ndarray:
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="clews-render-") as tmp:
        mid, wav = Path(tmp) / "v.mid", Path(tmp) / "v.wav"
        write_midi(performance, mid)
        command = [renderer.program, "-ni", "-q", "-R", "1" if reverb else "0", "-C", "0", "-g", f"{gain:.3f}",
                   "-r", str(sr), "-F", str(wav), renderer.soundfont, str(mid)]
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=300)
        if done.returncode != 0 or not wav.is_file():
            raise ClewsError(f"fluidsynth failed (exit {done.returncode}): {done.stderr.decode(errors='replace').strip()[:200]}")
        audio, file_sr = sf.read(str(wav), dtype="float32", always_2d=True)
    if file_sr != sr:
        raise ClewsError(f"fluidsynth wrote {file_sr} Hz instead of {sr} Hz")
    wave = audio.mean(axis=1)
    n = int(round(performance.seconds * sr))
    return np.pad(wave, (0, max(0, n - len(wave))))[:n]


def _timbre(program: int) -> tuple[np.ndarray, float, float]:
    """(harmonic amplitudes, attack s, decay s) for a GM program's family."""
    family = program // 8
    if family in (0, 1, 3):  # piano, chromatic percussion, guitar: plucked/struck
        return np.array([1.0, 0.5, 0.3, 0.15, 0.08]), 0.005, 0.6
    if family == 4:  # bass
        return np.array([1.0, 0.4, 0.1]), 0.01, 0.8
    if family in (5, 6, 11):  # strings, ensemble, pads
        return np.array([1.0, 0.6, 0.4, 0.3, 0.2, 0.1]), 0.08, 4.0
    if family == 2:  # organ
        return np.array([1.0, 0.8, 0.5, 0.0, 0.3, 0.0, 0.2]), 0.01, 20.0
    return np.array([1.0, 0.3, 0.5, 0.1, 0.2]), 0.03, 3.0  # winds, brass, synth leads


def render_numpy(performance: Performance, sr: int) -> np.ndarray:
    n = int(round(performance.seconds * sr))
    out = np.zeros(n + sr, dtype=np.float32)
    for part in performance.parts:
        amps, attack, decay = _timbre(part.program)
        k = np.arange(1, len(amps) + 1)
        for onset, duration, pitch, velocity in zip(part.onset, part.duration, part.pitch, part.velocity):
            start, length = int(onset * sr), max(1, int(duration * sr))
            t = np.arange(length, dtype=np.float32) / sr
            freq = 440.0 * 2.0 ** ((pitch - 69) / 12.0)
            usable = amps * (k * freq < sr / 2)
            tone = (usable[:, None] * np.sin(2 * np.pi * freq * k[:, None] * t[None, :])).sum(0)
            env = np.minimum(t / attack, 1.0) * np.exp(-t / decay) * np.minimum(1.0, (length - np.arange(length)) / (0.01 * sr))
            out[start:start + length] += (velocity / 127.0) * 0.2 * (tone * env).astype(np.float32)
    return out[:n]


def render(performance: Performance, sr: int, renderer: Renderer, reverb: bool) -> np.ndarray:
    if renderer.kind == "fluidsynth":
        return render_fluidsynth(performance, sr, renderer, reverb)
    return render_numpy(performance, sr)
