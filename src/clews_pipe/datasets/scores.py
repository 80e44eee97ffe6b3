"""Scores of real public-domain compositions from music21's bundled corpus, as plain note lists.

music21 parses the files (MusicXML chorales, ABC folk tunes); this module only flattens a parsed
score into :class:`Voice` arrays (onset, duration in quarter notes, MIDI pitch), top voice first,
with ties merged and grace notes dropped, so the arranger and the renderers never touch music21
objects. :func:`melody_signature` is the rule that groups chorales into melody families (see
:mod:`clews_pipe.datasets.works`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clews_pipe.errors import ClewsError


@dataclass(frozen=True)
class Voice:
    """One part: notes sorted by onset (quarters from the start of the piece)."""

    onset: np.ndarray  # float64 (n,)
    duration: np.ndarray  # float64 (n,)
    pitch: np.ndarray  # int64 (n,) MIDI

    def shifted(self, quarters: float) -> "Voice":
        return Voice(self.onset + quarters, self.duration, self.pitch)

    def window(self, start: float, stop: float) -> "Voice":
        """The notes starting in [start, stop), cut at ``stop``, moved to start at 0."""
        keep = (self.onset >= start - 1e-9) & (self.onset < stop - 1e-9)
        onset = self.onset[keep] - start
        return Voice(onset, np.minimum(self.duration[keep], stop - start - onset), self.pitch[keep])


@dataclass(frozen=True)
class Piece:
    """A parsed score: its voices (top first), bar length and total length in quarters."""

    source: str  # corpus path, e.g. "bach/bwv13.6.mxl"
    title: str
    voices: tuple[Voice, ...]
    bar_quarters: float
    length: float

    @property
    def melody(self) -> Voice:
        return self.voices[0]


def _voice_of(part) -> Voice | None:
    onsets, durations, pitches = [], [], []
    for element in part.stripTies().flatten().notes:
        length = float(element.quarterLength)
        if length <= 0:  # grace notes
            continue
        notes = element.pitches if element.isChord else (element.pitch,)
        for pitch in notes:
            onsets.append(float(element.offset))
            durations.append(length)
            pitches.append(int(pitch.midi))
    if not onsets:
        return None
    order = np.lexsort((-np.asarray(pitches), np.asarray(onsets)))
    return Voice(np.asarray(onsets)[order], np.asarray(durations)[order], np.asarray(pitches, dtype=np.int64)[order])


def _top_line(voice: Voice) -> Voice:
    """A monophonic line: the highest note of each onset (folk tunes written with double stops)."""
    first = np.ones(len(voice.onset), dtype=bool)
    first[1:] = np.diff(voice.onset) > 1e-9
    return Voice(voice.onset[first], voice.duration[first], voice.pitch[first])


def parse_piece(source: str, title: str | None = None) -> Piece:
    """Parse ``source`` (a path inside music21's corpus); ClewsError when it has no notes."""
    from music21 import corpus

    try:
        score = corpus.parse(source)
    except Exception as exc:  # music21 raises many types for unreadable files
        raise ClewsError(f"{source}: music21 cannot parse it ({type(exc).__name__})") from None
    parts = list(getattr(score, "parts", [])) or [score]
    voices = [v for v in (_voice_of(p) for p in parts) if v is not None]
    if not voices:
        raise ClewsError(f"{source}: no notes")
    voices[0] = _top_line(voices[0])
    bar = 4.0
    signatures = list(score.recurse().getElementsByClass("TimeSignature"))
    if signatures:
        bar = float(signatures[0].barDuration.quarterLength) or 4.0
    length = max(float((v.onset + v.duration).max()) for v in voices)
    name = title or (score.metadata.title if score.metadata is not None and score.metadata.title else source)
    return Piece(source=source, title=str(name), voices=tuple(voices), bar_quarters=bar, length=length)


def melody_signature(piece: Piece, intervals: int = 11) -> tuple[int, ...]:
    """Transposition-invariant start of the top voice: its first ``intervals`` pitch intervals with
    repeated notes merged. Two chorales with the same signature harmonise the same melody."""
    pitch = piece.melody.pitch
    if len(pitch) == 0:
        return ()
    changed = np.concatenate([[True], pitch[1:] != pitch[:-1]])
    line = pitch[changed]
    return tuple(int(x) for x in np.diff(line[: intervals + 1]))
