"""Chords for a melody that comes without them (folk tunes): a key estimate and one triad per
half bar, so a tune can be arranged "with bass and chords" or "harmonised".

Hand-written (music21's key analysis and roman numerals would do the first part) because a
Krumhansl-style profile match over a pitch-class histogram is a few lines of numpy and runs in
microseconds, where music21's analysis costs tens of milliseconds per tune.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clews_pipe.datasets.scores import Voice

# Krumhansl-Kessler key profiles (major, minor), tonic first.
_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
# Diatonic triads (root offset from the tonic, chord tones as offsets from the root).
_MAJOR_TRIADS = ((0, (0, 4, 7)), (5, (0, 4, 7)), (7, (0, 4, 7)), (9, (0, 3, 7)), (2, (0, 3, 7)))
_MINOR_TRIADS = ((0, (0, 3, 7)), (5, (0, 3, 7)), (7, (0, 4, 7)), (8, (0, 4, 7)), (3, (0, 4, 7)))


@dataclass(frozen=True)
class Key:
    tonic: int  # pitch class
    minor: bool


@dataclass(frozen=True)
class ChordTrack:
    """One chord per window: onsets and lengths in quarters, root pitch class, triad tones."""

    onset: np.ndarray
    duration: np.ndarray
    root: np.ndarray  # pitch class (n,)
    tones: np.ndarray  # (n, 3) pitch classes


def estimate_key(melody: Voice) -> Key:
    hist = np.bincount(melody.pitch % 12, weights=melody.duration, minlength=12)
    scores = [(float(np.corrcoef(hist, np.roll(profile, t))[0, 1]), t, minor)
              for minor, profile in ((False, _MAJOR), (True, _MINOR)) for t in range(12)]
    _, tonic, minor = max(scores)
    return Key(tonic=int(tonic), minor=bool(minor))


def harmonise(melody: Voice, bar_quarters: float, length: float) -> ChordTrack:
    """The diatonic triad covering most of each half bar's melody (tonic at the start and end)."""
    key = estimate_key(melody)
    triads = _MINOR_TRIADS if key.minor else _MAJOR_TRIADS
    window = bar_quarters / 2 if bar_quarters >= 3 else bar_quarters
    starts = np.arange(0.0, length, window)
    roots, tones = [], []
    for i, start in enumerate(starts):
        inside = (melody.onset >= start) & (melody.onset < start + window)
        pcs, weight = melody.pitch[inside] % 12, melody.duration[inside]
        best, best_score = 0, -1.0
        for j, (offset, shape) in enumerate(triads):
            chord = {(key.tonic + offset + s) % 12 for s in shape}
            score = float(weight[np.isin(pcs, list(chord))].sum()) + (0.5 if j == 0 else 0.0)
            if score > best_score:
                best, best_score = j, score
        if i == 0 or i == len(starts) - 1:
            best = 0
        offset, shape = triads[best]
        roots.append((key.tonic + offset) % 12)
        tones.append([(key.tonic + offset + s) % 12 for s in shape])
    durations = np.minimum(window, length - starts)
    return ChordTrack(starts, durations, np.asarray(roots, dtype=np.int64), np.asarray(tones, dtype=np.int64))


@dataclass(frozen=True)
class ChordVoices:
    block: Voice  # the triads in close position from ``low`` up
    bass: Voice  # the roots an octave below ``low``


def chord_voices(chords: ChordTrack, low: int = 52) -> ChordVoices:
    """The chord track as two playable voices."""
    pitches = low + (chords.tones - low) % 12  # (n, 3): each tone in [low, low + 12)
    onset = np.repeat(chords.onset, 3)
    duration = np.repeat(chords.duration, 3)
    block = Voice(onset, duration, pitches.reshape(-1))
    bass_pitch = (low - 12) + (chords.root - (low - 12)) % 12
    return ChordVoices(block, Voice(chords.onset.copy(), chords.duration.copy(), bass_pitch))
