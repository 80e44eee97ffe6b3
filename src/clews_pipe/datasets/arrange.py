"""How one version of a work differs from another, as covers do, up to the notes it plays.

:func:`arrange_version` draws, from the version's own seeded generator: which harmonisation of
a chorale family it plays, the arrangement (melody alone, melody with bass, melody with chords,
melody with bass and chords, or the full four-part harmonisation), the structure (as written,
repeats, a cut, an intro, an outro), the key (-5..+6 semitones), the tempo (×0.8..1.25 of the
work's), the General MIDI program of each part, and the performance (timing and velocity
jitter, articulation). The result is a :class:`Performance`: notes in seconds per part,
ready for a renderer (:mod:`clews_pipe.datasets.render`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clews_pipe.datasets.harmony import chord_voices, harmonise
from clews_pipe.datasets.scores import Piece, Voice

# General MIDI programs per role (0-based).
LEAD_PROGRAMS = (0, 4, 6, 11, 19, 21, 22, 24, 25, 40, 41, 52, 56, 60, 64, 65, 68, 71, 73, 74, 80)
CHORD_PROGRAMS = (0, 2, 4, 16, 19, 24, 46, 48, 49, 52, 61, 88, 89)
BASS_PROGRAMS = (32, 33, 34, 35, 42, 43, 58, 70)
ENSEMBLE_PROGRAMS = (19, 20, 48, 49, 52, 53, 61, 0, 6)  # one timbre for a whole harmonisation
CHORALE_ARRANGEMENTS = ("harmonised", "melody", "melody+bass", "melody+chords")
FOLK_ARRANGEMENTS = ("melody", "melody+bass", "melody+bass+chords", "harmonised")
STRUCTURES = ("as written", "repeats", "cut", "intro", "outro")


@dataclass(frozen=True)
class Part:
    """One instrument: a GM program and its notes in seconds (MIDI pitch, velocity 1..127)."""

    program: int
    onset: np.ndarray
    duration: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray


@dataclass(frozen=True)
class Performance:
    parts: tuple[Part, ...]
    seconds: float
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Role:
    """A voice of the arrangement and the program list its instrument comes from."""

    voice: Voice
    programs: tuple[int, ...]
    loudness: float  # relative velocity


def work_tempo(piece: Piece, kind: str, rng: np.random.Generator) -> float:
    """Quarter notes per minute of the work (shared by its versions)."""
    if kind == "chorale":
        return float(rng.uniform(66, 92))
    return float(rng.uniform(96, 140))


def _roles(piece: Piece, kind: str, arrangement: str) -> list[Role]:
    melody = piece.melody
    if kind == "chorale":
        lower = piece.voices[1:]
        if arrangement == "harmonised":
            return [Role(v, ENSEMBLE_PROGRAMS, 0.85 if i else 1.0) for i, v in enumerate(piece.voices)]
        roles = [Role(melody, LEAD_PROGRAMS, 1.0)]
        if arrangement == "melody+bass":
            roles.append(Role(lower[-1], BASS_PROGRAMS, 0.8))
        elif arrangement == "melody+chords":
            merged = _merge(lower)
            roles.append(Role(merged, CHORD_PROGRAMS, 0.6))
        return roles
    voices = chord_voices(harmonise(melody, piece.bar_quarters, piece.length))
    block, bass = voices.block, voices.bass
    roles = [Role(melody, LEAD_PROGRAMS, 1.0)]
    if "bass" in arrangement or arrangement == "harmonised":
        roles.append(Role(bass, BASS_PROGRAMS, 0.75))
    if "chords" in arrangement:
        roles.append(Role(block, CHORD_PROGRAMS, 0.55))
    elif arrangement == "harmonised":  # the triad's tones as three sustained lines
        roles.append(Role(block, ENSEMBLE_PROGRAMS, 0.5))
    return roles


def _merge(voices) -> Voice:
    onset = np.concatenate([v.onset for v in voices])
    order = np.argsort(onset, kind="stable")
    return Voice(onset[order], np.concatenate([v.duration for v in voices])[order],
                 np.concatenate([v.pitch for v in voices])[order])


def _windows(piece: Piece, structure: str) -> list[tuple[float, float]]:
    """The piece's spans (quarters) the version plays, in order."""
    bar, length = piece.bar_quarters, piece.length
    half = max(bar, round(length / 2 / bar) * bar) if length > 2 * bar else length
    a, b = (0.0, half), (half, length)
    tail = (max(0.0, length - 2 * bar), length)
    if structure == "repeats":
        return [a, a, b, b] if half < length else [a, a]
    if structure == "cut" and half < length:
        return [a, (half + (length - half) / 2 // bar * bar, length)]
    if structure == "intro":
        return [tail, a, b] if half < length else [tail, a]
    if structure == "outro":
        return [a, b, tail] if half < length else [a, tail]
    return [a, b] if half < length else [a]


def _assemble(roles: list[Role], windows, min_quarters: float) -> list[Voice]:
    """Each role's notes over the windows in order; the whole form again until ``min_quarters``."""
    out = [[] for _ in roles]
    cursor = 0.0
    while True:
        for start, stop in windows:
            for k, role in enumerate(roles):
                out[k].append(role.voice.window(start, stop).shifted(cursor))
            cursor += stop - start
        if cursor >= min_quarters or cursor <= 0:
            return [_merge(parts) for parts in out]


def _perform(voice: Voice, role: Role, program: int, spb: float, shift: int, style: dict,
             rng: np.random.Generator, max_seconds: float) -> Part:
    """Notes in seconds with the version's timing / velocity jitter and articulation, cut at ``max_seconds``."""
    n = len(voice.onset)
    onset = np.maximum(0.0, voice.onset * spb + rng.normal(0.0, style["timing_sd"], n))
    duration = np.maximum(0.05, voice.duration * spb * style["articulation"])
    velocity = np.clip(style["velocity"] * role.loudness + rng.normal(0.0, style["velocity_sd"], n), 20, 127)
    keep = onset < max_seconds - 0.05
    duration = np.minimum(duration[keep], max_seconds - onset[keep])
    return Part(program=int(program), onset=onset[keep], duration=duration,
                pitch=np.clip(voice.pitch[keep] + shift, 0, 127), velocity=velocity[keep].astype(np.int64))


def arrange_version(members: tuple[Piece, ...], kind: str, version: int, work_bpm: float,
                    rng: np.random.Generator, duration_min: float, duration_max: float) -> Performance:
    """One version of a work (``members``: the family's scores) with every choice drawn from ``rng``."""
    piece = members[version % len(members)]
    arrangement = str(rng.choice(CHORALE_ARRANGEMENTS if kind == "chorale" else FOLK_ARRANGEMENTS))
    structure = str(rng.choice(STRUCTURES, p=(0.3, 0.25, 0.15, 0.15, 0.15)))
    bpm = work_bpm * float(rng.uniform(0.8, 1.25))
    spb = 60.0 / bpm
    shift = int(rng.integers(-5, 7))
    centre = float(np.median(piece.melody.pitch)) + shift
    shift += -12 if centre > 79 else (12 if centre < 55 else 0)
    roles = _roles(piece, kind, arrangement)
    seconds = float(rng.uniform(duration_min, duration_max))
    voices = _assemble(roles, _windows(piece, structure), min_quarters=seconds / spb)
    style = {"timing_sd": float(rng.uniform(0.0, 0.03)), "articulation": float(rng.uniform(0.7, 1.0)),
             "velocity": float(rng.uniform(60, 105)), "velocity_sd": float(rng.uniform(2, 12))}
    programs = [int(rng.choice(role.programs)) for role in roles]
    if arrangement == "harmonised":  # one ensemble timbre, as a choir or an organ plays a chorale
        programs = [programs[0] if role.programs is ENSEMBLE_PROGRAMS else p for role, p in zip(roles, programs)]
    parts = tuple(_perform(v, r, p, spb, shift, style, rng, seconds) for v, r, p in zip(voices, roles, programs))
    params = {"score": piece.source, "arrangement": arrangement, "structure": structure, "key_shift": shift,
              "bpm": round(bpm, 2), "programs": programs, **{k: round(v, 4) for k, v in style.items()}}
    return Performance(parts=parts, seconds=seconds, params=params)
