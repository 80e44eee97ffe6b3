"""Synthetic Discogs-VI-layout corpus of musical "versions" for tests and the demo.

Each clique is a song: a key, a scale, a tempo, three sections (A/B/C) with their own chord
progression (one chord per bar) and melody (scale-degree random walk drawn towards chord
tones), and a form (a sequence of sections). Each version of the song re-performs it with its
own key shift (±6 semitones), tempo (0.7-1.4x), slight detuning, timbre (harmonic spectrum of
the lead, pad and bass, attack/decay envelopes), structure (sections dropped or repeated),
drum level and noise level. Melody and harmony are shared inside a clique and independent
across cliques, so versions are genuinely similar in the CQT domain up to a pitch shift.

Synthesis is wavetable-based and vectorised per voice (one table lookup per sample per voice),
so rendering costs far less than encoding. Every random choice comes from a generator seeded
by ``(seed, clique, version)``, so the corpus is the same for the same seed whatever the
number of worker processes.

Layout written under ``out`` (the Discogs-VI-YT layout that :mod:`clews_pipe.datasets.catalogs`
reads)::

    audio/<id[:2]>/<id>.<ext>      mostly mp3, some flac / ogg / wav
    audio/<id[:2]>/<id>.meta       JSON {"artist", "title"}
    DiscogsVI-YT-20240701-light.json.{train,val,test}
"""

from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from clews_pipe.errors import ClewsError
from clews_pipe.datasets.catalogs import DVI_SPLIT_PREFIXES

SPLIT_FILE_PREFIX = DVI_SPLIT_PREFIXES[0]  # the sony/clews spelling
YOUTUBE_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
#: Container per track, cycled over the global track order: mp3 most (as transcoded
#: Discogs-VI audio: 9 of 16), with flac, wav and ogg so every decoder path is exercised
#: (flac and wav also cost next to nothing to write; mp3 and ogg encoding dominate the time).
DEFAULT_FORMAT_CYCLE = ("mp3", "flac", "mp3", "wav", "mp3", "flac", "mp3", "ogg") + ("mp3", "flac", "mp3", "wav", "mp3", "flac", "mp3", "mp3")
#: mp3 goes through PyAV's libmp3lame at its fastest algorithm setting (about 1.7x faster than
#: libsndfile's LAME defaults), 32 kbit/s mono with a Xing header; the rest through soundfile.
MP3_BITRATE = 32000
_SOUNDFILE_FORMATS = {
    "mp3": None,
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "wav": ("WAV", "PCM_16"),
}
#: Seven-note scales a song is written in (major, natural minor, dorian, mixolydian,
#: harmonic minor, phrygian): more harmonic variety between cliques.
_SCALES = np.array(
    [
        [0, 2, 4, 5, 7, 9, 11],
        [0, 2, 3, 5, 7, 8, 10],
        [0, 2, 3, 5, 7, 9, 10],
        [0, 2, 4, 5, 7, 9, 10],
        [0, 2, 3, 5, 7, 8, 11],
        [0, 1, 3, 5, 7, 8, 10],
    ]
)
_TABLE_BITS = 12
_TABLE_SIZE = 1 << _TABLE_BITS
_WRAP = 1 << 32
_BEATS_PER_BAR = 4
_BARS_PER_SECTION = 4
_SYLLABLES = ("ka", "lo", "mi", "ra", "ne", "to", "su", "vi", "da", "ro", "fe", "lu", "ma", "zo", "ti", "be")
_TITLE_SUFFIXES = ("", "", "", " (Live)", " (Remix)", " - Acoustic", " (Cover)", " - Remastered")


@dataclass
class _Song:
    """What every version of one clique shares."""

    tonic: int  # MIDI note of the lead's tonic
    scale: np.ndarray  # 7 semitone offsets
    bpm: float
    chords: list[np.ndarray]  # per section: scale degree of each bar's chord root
    melodies: list[tuple[np.ndarray, np.ndarray]]  # per section: (durations in beats, degree or -99 = rest)
    form: list[int]  # sequence of section indices
    title: str
    artist: str


def _name(rng: np.random.Generator, words: int) -> str:
    parts = []
    for _ in range(words):
        k = int(rng.integers(2, 4))
        parts.append("".join(rng.choice(_SYLLABLES, k)).capitalize())
    return " ".join(parts)


def _make_song(seed: int, clique_index: int) -> _Song:
    rng = np.random.default_rng([seed, 1, clique_index])
    scale = _SCALES[rng.choice(len(_SCALES), p=[0.35, 0.25, 0.1, 0.1, 0.1, 0.1])]
    chords, melodies = [], []
    for _ in range(3):
        roots = rng.choice([0, 3, 4, 5, 1, 2], size=_BARS_PER_SECTION, p=[0.3, 0.2, 0.2, 0.15, 0.1, 0.05])
        roots[0] = rng.choice([0, 5, 3])
        chords.append(roots)
        # melody: durations (beats) that fill the section exactly, degrees as a walk.
        total = _BEATS_PER_BAR * _BARS_PER_SECTION
        durs = []
        while sum(durs) < total:
            durs.append(float(rng.choice([0.5, 1.0, 1.0, 1.5, 2.0])))
        durs[-1] -= sum(durs) - total
        durs = np.array([d for d in durs if d > 0])
        steps = rng.choice([-2, -1, 0, 1, 2, 3, -3], size=len(durs), p=[0.2, 0.25, 0.05, 0.25, 0.15, 0.05, 0.05])
        degrees = np.clip(np.cumsum(steps) + int(rng.integers(0, 5)), -3, 11)
        # pull notes starting a bar onto the chord root / third / fifth
        onsets = np.concatenate([[0.0], np.cumsum(durs)[:-1]])
        bar = (onsets // _BEATS_PER_BAR).astype(int)
        on_bar = (onsets % _BEATS_PER_BAR) == 0
        degrees = np.where(on_bar, roots[bar] + rng.choice([0, 2, 4], size=len(durs)) + 7 * (degrees >= 7), degrees)
        rests = rng.random(len(durs)) < 0.08
        degrees = np.where(rests, -99, degrees)
        melodies.append((durs, degrees))
    form = [0, 1] + list(rng.choice(3, size=int(rng.integers(3, 6)), p=[0.4, 0.4, 0.2]))
    return _Song(
        tonic=int(rng.integers(55, 67)),
        scale=scale,
        bpm=float(rng.uniform(85, 135)),
        chords=chords,
        melodies=melodies,
        form=form,
        title=_name(rng, int(rng.integers(1, 4))),
        artist=_name(rng, int(rng.integers(1, 3))),
    )


def _degree_to_semitone(scale: np.ndarray, degree: np.ndarray) -> np.ndarray:
    degree = np.asarray(degree)
    return 12 * np.floor_divide(degree, 7) + scale[np.mod(degree, 7)]


def _wavetable(rng: np.random.Generator, n_harmonics: int, tilt: float) -> np.ndarray:
    k = np.arange(1, n_harmonics + 1)
    amps = k ** (-tilt) * rng.uniform(0.5, 1.0, n_harmonics)
    amps[1::2] *= rng.uniform(0.2, 1.0)  # even-harmonic colour
    phases = rng.uniform(0, 2 * np.pi, n_harmonics)
    x = np.arange(_TABLE_SIZE) / _TABLE_SIZE
    table = (amps[:, None] * np.sin(2 * np.pi * k[:, None] * x[None, :] + phases[:, None])).sum(0)
    return (table / np.abs(table).max()).astype(np.float32)


class _Notes:
    """Per-sample bookkeeping for a sequence of contiguous notes, computed once and shared by
    the voices that play the same rhythm: each sample's note index (int32), its position
    inside that note, and a release ramp over the last few ms of every note."""

    def __init__(self, lengths: np.ndarray, n_samples: int, sr: int):
        lengths = np.asarray(lengths, dtype=np.int64)
        total = int(lengths.sum())
        if total < n_samples:  # hold the last note to the end
            lengths = lengths.copy()
            lengths[-1] += n_samples - total
        self.lengths = lengths
        self.n_samples = n_samples
        self.sr = sr
        ends = np.cumsum(lengths)
        starts = ends - lengths
        marks = np.zeros(n_samples, dtype=np.int32)  # note index per sample = running count of onsets
        np.add.at(marks, starts[1:][starts[1:] < n_samples], 1)
        self.index = np.cumsum(marks, dtype=np.int32)
        now = np.arange(n_samples, dtype=np.int32)
        self.pos = now - starts.astype(np.int32)[self.index]
        self.pos_u32 = self.pos.view(np.uint32)
        # release ramp over each note's last few ms (no clicks): scattered, not computed per sample
        ramp = max(1, int(0.008 * sr))
        tail = ends[:, None] - ramp + np.arange(ramp)[None, :]
        level = np.broadcast_to((np.arange(ramp, 0, -1) / ramp).astype(np.float32), tail.shape)
        keep = (tail >= starts[:, None]) & (tail < n_samples)
        self.fade = np.ones(n_samples, dtype=np.float32)
        self.fade[tail[keep]] = level[keep]

    def per_sample(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values)[self.index]

    def envelope(self, attack: float, decay: float, gain: np.ndarray | None = None) -> np.ndarray:
        """Attack ramp then exponential decay from each onset, faded out at each note's end."""
        t = np.arange(int(self.lengths.max()), dtype=np.float32) / np.float32(self.sr)
        shape = np.minimum(t / np.float32(attack), np.float32(1.0)) * np.exp(-t / np.float32(decay))
        env = shape[self.pos] * self.fade
        if gain is not None:
            env *= self.per_sample(gain.astype(np.float32))
        return env

    def oscillator(self, midi: np.ndarray, table: np.ndarray) -> np.ndarray:
        """Wavetable oscillator playing one MIDI pitch per note, phase continuous across notes.

        The phase is a 32-bit fixed-point fraction of a cycle computed per sample in closed
        form, ``phase_at_onset[note] + step[note] * position`` in wrapping uint32 arithmetic;
        its top bits index the table."""
        freq = 440.0 * 2.0 ** ((np.nan_to_num(midi) - 69.0) / 12.0)
        step = np.round(freq / self.sr * 2.0**32).astype(np.int64) % _WRAP
        onset_phase = np.concatenate([[0], np.cumsum(step * self.lengths % _WRAP)[:-1] % _WRAP])
        phase = onset_phase.astype(np.uint32)[self.index]
        phase += step.astype(np.uint32)[self.index] * self.pos_u32
        phase >>= np.uint32(32 - _TABLE_BITS)
        return table[phase]


def _white_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-variance white noise, uniform rather than Gaussian (5x cheaper to draw)."""
    noise = rng.random(n, dtype=np.float32)
    noise -= np.float32(0.5)
    noise *= np.float32(2.0 * np.sqrt(3.0))
    return noise


def _render_version(song: _Song, seed: int, clique_index: int, version_index: int, duration: float, sr: int):
    """Waveform (float32) and the parameters that made it."""
    import soxr

    rng = np.random.default_rng([seed, 2, clique_index, version_index])
    shift = int(rng.integers(-6, 7))
    tempo = float(rng.uniform(0.7, 1.4))
    detune = float(rng.uniform(-0.25, 0.25))  # semitones
    # structure: drop or repeat sections of the song's form (keep at least two)
    form = []
    for section in song.form:
        u = rng.random()
        if u < 0.15:
            continue
        form.extend([section, section] if u > 0.85 else [section])
    if len(form) < 2:
        form = list(song.form[:2])
    beat = 60.0 / (song.bpm * tempo)
    section_seconds = _BEATS_PER_BAR * _BARS_PER_SECTION * beat
    cycles = math.ceil(duration / (len(form) * section_seconds)) + 1
    sections = np.tile(np.array(form), cycles)
    n_samples = int(round(duration * sr))
    base = song.tonic + shift + detune

    # lead melody: contiguous notes (rests silent)
    durs = np.concatenate([song.melodies[s][0] for s in sections])
    degs = np.concatenate([song.melodies[s][1] for s in sections])
    lead_midi = np.where(degs == -99, np.nan, base + _degree_to_semitone(song.scale, np.where(degs == -99, 0, degs)))
    lead_len = _beats_to_lengths(durs, beat, sr)
    # harmony: one chord per bar, root/third/fifth as three pad voices, plus a bass line
    roots = np.concatenate([song.chords[s] for s in sections])
    pad_tilt = float(rng.uniform(1.2, 2.5))
    lead_table = _wavetable(rng, int(rng.integers(4, 9)), float(rng.uniform(0.6, 2.0)))
    pad_table = _wavetable(rng, 4, pad_tilt)
    bass_table = _wavetable(rng, 3, float(rng.uniform(1.5, 3.0)))
    lead_attack, lead_decay = float(rng.uniform(0.005, 0.05)), float(rng.uniform(0.3, 1.5))
    pad_attack = float(rng.uniform(0.05, 0.3))
    lead_notes = _Notes(lead_len, n_samples, sr)
    sounding = np.isfinite(lead_midi)
    mix = lead_notes.oscillator(lead_midi, lead_table)
    mix *= lead_notes.envelope(lead_attack, lead_decay, gain=sounding)
    # pads (<= 4 harmonics of notes below ~700 Hz) and bass sit far below sr/4: render them at
    # half rate and upsample, which halves their cost
    low_sr = sr // 2
    n_low = -(-n_samples // 2)
    bars = _Notes(_beats_to_lengths(np.full(len(roots), float(_BEATS_PER_BAR)), beat, low_sr), n_low, low_sr)
    accomp = bars.oscillator(base - 12 + _degree_to_semitone(song.scale, roots), pad_table)
    for interval in (2, 4):
        accomp += bars.oscillator(base - 12 + _degree_to_semitone(song.scale, roots + interval), pad_table)
    accomp *= bars.envelope(pad_attack, 3.0) * np.float32(rng.uniform(0.15, 0.35))
    bass = bars.oscillator(base - 24 + _degree_to_semitone(song.scale, roots), bass_table)
    bass *= bars.envelope(0.01, 0.8)
    accomp += np.float32(rng.uniform(0.2, 0.5)) * bass
    mix += soxr.resample(accomp, low_sr, 2 * low_sr, quality="MQ")[:n_samples]
    # drums: decaying noise burst on every beat
    drum_level = float(rng.uniform(0.0, 0.3))
    if drum_level > 0.02:
        beats = _Notes(_beats_to_lengths(np.ones(int(duration / beat) + 2), beat, sr), n_samples, sr)
        hits = beats.envelope(0.001, 0.05)
        hits *= _white_noise(rng, n_samples)
        mix += np.float32(drum_level) * hits
    # noise at a random SNR, then a random peak level
    snr_db = float(rng.uniform(15.0, 35.0))
    signal_rms = float(np.sqrt(np.dot(mix, mix) / n_samples)) + 1e-9
    mix += np.float32(signal_rms * 10 ** (-snr_db / 20)) * _white_noise(rng, n_samples)
    mix *= np.float32(rng.uniform(0.5, 0.9) / (max(mix.max(), -mix.min()) + 1e-9))
    params = {"shift": shift, "tempo": round(tempo, 4), "form": [int(s) for s in form], "snr_db": round(snr_db, 2)}
    return mix, params


def _beats_to_lengths(beats: np.ndarray, beat_seconds: float, sr: int) -> np.ndarray:
    """Sample lengths of consecutive events, rounded on the cumulative grid (no drift)."""
    ends = np.round(np.cumsum(beats) * beat_seconds * sr).astype(np.int64)
    return np.diff(np.concatenate([[0], ends]))


def _write_mp3(path: Path, wave: np.ndarray, sr: int) -> None:
    import av

    with av.open(str(path), "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=sr, layout="mono")
        stream.codec_context.bit_rate = MP3_BITRATE
        stream.codec_context.options = {"compression_level": "9"}
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[None, :], dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def _write_track(job: dict) -> dict:
    """Render one version and write its audio + .meta; runs in a worker process."""
    import soundfile as sf

    song = _make_song(job["seed"], job["clique_index"])
    wave, params = _render_version(song, job["seed"], job["clique_index"], job["version_index"], job["duration"], job["sr"])
    folder = Path(job["audio_root"]) / job["youtube_id"][:2]
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{job['youtube_id']}.{job['ext']}"
    tmp = folder / f".{job['youtube_id']}.{job['ext']}.tmp"
    if job["ext"] == "mp3":
        _write_mp3(tmp, wave, job["sr"])
    else:
        fmt, subtype = _SOUNDFILE_FORMATS[job["ext"]]
        sf.write(tmp, wave, job["sr"], format=fmt, subtype=subtype)
    os.replace(tmp, target)
    meta = {"artist": job["artist"], "title": job["title"]}
    (folder / f"{job['youtube_id']}.meta").write_text(json.dumps(meta))
    return {"youtube_id": job["youtube_id"], "seconds": wave.shape[0] / job["sr"], **params}


def _youtube_ids(rng: np.random.Generator, n: int) -> list[str]:
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        batch = rng.choice(YOUTUBE_ALPHABET, size=(n - len(ids), 11))
        for row in batch:
            s = "".join(row)
            if s not in seen:
                seen.add(s)
                ids.append(s)
    return ids


def _split_counts(n: int, fractions) -> list[int]:
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or (fr < 0).any() or fr.sum() <= 0:
        raise ClewsError(f"split_fractions must be three non-negative numbers, got {tuple(fractions)}")
    fr = fr / fr.sum()
    counts = np.floor(fr * n).astype(int)
    for i in np.argsort(-(fr * n - counts))[: n - counts.sum()]:
        counts[i] += 1
    # every split with a positive fraction gets at least one clique when there are enough
    for i in range(3):
        if fr[i] > 0 and counts[i] == 0 and counts.max() > 1:
            counts[int(np.argmax(counts))] -= 1
            counts[i] += 1
    return counts.tolist()


@dataclass(frozen=True)
class SplitEntry:
    """One version as the Discogs-VI split JSONs list it."""

    split: str
    clique: str
    version: str
    title: str
    youtube_id: str


@dataclass(frozen=True)
class CorpusIds:
    """The Discogs-VI-style ids of a generated corpus, tracks in clique order."""

    n_versions: np.ndarray  # (cliques,) versions per clique
    clique_ids: list[str]
    version_ids: list[str]
    youtube_ids: list[str]


def draw_corpus_ids(rng: np.random.Generator, cliques: int, versions_min: int, versions_max: int) -> CorpusIds:
    """Versions per clique and unique clique, version and youtube ids, drawn from ``rng`` in that order."""
    n_versions = rng.integers(versions_min, versions_max + 1, size=cliques)
    n_tracks = int(n_versions.sum())
    clique_ids = [f"C-{x:07d}" for x in rng.choice(10_000_000, size=cliques, replace=False)]
    version_ids = [f"V-{x:07d}" for x in rng.choice(10_000_000, size=n_tracks, replace=False)]
    return CorpusIds(n_versions, clique_ids, version_ids, _youtube_ids(rng, n_tracks))


def prepare_corpus_folder(out) -> Path:
    """Create ``out/audio`` (one error line when ``out`` is a file or cannot be created); return it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ClewsError(f"{out}: exists and is not a directory")
    audio_root = out / "audio"
    try:
        audio_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClewsError(f"{out}: cannot create corpus folder ({exc.strerror})") from None
    return audio_root


def assign_splits(rng: np.random.Generator, cliques: int, split_fractions) -> np.ndarray:
    """The split (train / val / test) of each clique, ``split_fractions`` of them each, in random order."""
    order = rng.permutation(cliques)
    counts = _split_counts(cliques, split_fractions)
    split_of = np.empty(cliques, dtype=object)
    split_of[order[: counts[0]]] = "train"
    split_of[order[counts[0] : counts[0] + counts[1]]] = "val"
    split_of[order[counts[0] + counts[1] :]] = "test"
    return split_of


def render_all(render: Callable, jobs: list, workers: int, progress: bool, desc: str = "render versions",
               unit: str = "track", chunksize: int = 4) -> list[dict]:
    """``render(job)`` for every job, in ``workers`` processes when > 1, results in job order."""
    from clews_pipe.progress import progress_bar

    pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        results = pool.map(render, jobs, chunksize=chunksize) if pool else map(render, jobs)
        rendered = []
        with progress_bar(total=len(jobs), desc=desc, unit=unit, disable=not progress, leave=False) as bar:
            for result in results:
                rendered.append(result)
                bar.update(1)
    finally:
        if pool is not None:
            pool.shutdown()
    return rendered


def write_split_files(out: Path, entries: list[SplitEntry]) -> dict[str, dict]:
    """The three ``DiscogsVI-YT-20240701-light.json.<split>`` files; returns cliques and tracks per split."""
    splits: dict[str, dict[str, list]] = {"train": {}, "val": {}, "test": {}}
    for e in entries:
        splits[e.split].setdefault(e.clique, []).append(
            {"version_id": e.version, "track_title": e.title, "youtube_id": e.youtube_id})
    for split, content in splits.items():
        (out / f"{SPLIT_FILE_PREFIX}.{split}").write_text(json.dumps(content, indent=1))
    return {s: {"cliques": len(c), "tracks": sum(len(v) for v in c.values())} for s, c in splits.items()}


def _check_arguments(cliques: int, seed: int, versions_min: int, versions_max: int, duration_min: float,
                     duration_max: float, formats) -> None:
    if cliques < 1:
        raise ClewsError(f"cliques must be >= 1, got {cliques}")
    if not 1 <= versions_min <= versions_max:
        raise ClewsError(f"need 1 <= versions_min <= versions_max, got {versions_min}, {versions_max}")
    if not 0 < duration_min <= duration_max:
        raise ClewsError(f"need 0 < duration_min <= duration_max, got {duration_min}, {duration_max}")
    if seed < 0:
        raise ClewsError(f"seed must be >= 0, got {seed}")
    bad = [f for f in formats if f not in _SOUNDFILE_FORMATS]
    if bad or not formats:
        raise ClewsError(f"formats must be among {sorted(_SOUNDFILE_FORMATS)}, got {list(formats)}")


def generate_corpus(
    out,
    cliques: int,
    seed: int = 0,
    versions_min: int = 2,
    versions_max: int = 6,
    duration_min: float = 40.0,
    duration_max: float = 100.0,
    samplerate: int = 16000,
    split_fractions=(0.7, 0.15, 0.15),
    formats=DEFAULT_FORMAT_CYCLE,
    workers: int = 1,
    progress: bool = False,
) -> dict:
    """Write a synthetic Discogs-VI-layout corpus under ``out``; return a summary dict.

    ``formats`` is cycled over the tracks (global order) to choose each file's container.
    ``workers`` > 1 renders in that many processes; the output does not depend on it.
    ``progress`` shows a progress bar of the tracks rendered.
    """
    _check_arguments(cliques, seed, versions_min, versions_max, duration_min, duration_max, formats)
    out = Path(out)
    audio_root = prepare_corpus_folder(out)
    started = time.perf_counter()
    rng = np.random.default_rng([seed, 0])
    ids = draw_corpus_ids(rng, cliques, versions_min, versions_max)
    n_versions, n_tracks = ids.n_versions, len(ids.version_ids)
    clique_ids, version_ids, youtube_ids = ids.clique_ids, ids.version_ids, ids.youtube_ids
    durations = rng.uniform(duration_min, duration_max, size=n_tracks)
    suffixes = rng.choice(_TITLE_SUFFIXES, size=n_tracks)
    split_of = assign_splits(rng, cliques, split_fractions)
    jobs, entries = [], []
    t = 0
    for ci in range(cliques):
        song = _make_song(seed, ci)
        for vi in range(int(n_versions[ci])):
            title = song.title + str(suffixes[t])
            jobs.append({
                "seed": seed, "clique_index": ci, "version_index": vi, "duration": float(durations[t]),
                "sr": int(samplerate), "audio_root": str(audio_root), "youtube_id": youtube_ids[t],
                "ext": formats[t % len(formats)], "title": title,
                "artist": song.artist if vi == 0 else _name(np.random.default_rng([seed, 3, ci, vi]), 2),
            })
            entries.append(SplitEntry(split_of[ci], clique_ids[ci], version_ids[t], title, youtube_ids[t]))
            t += 1
    rendered = render_all(_write_track, jobs, workers, progress)
    splits = write_split_files(out, entries)
    formats_used: dict[str, int] = {}
    for job in jobs:
        formats_used[job["ext"]] = formats_used.get(job["ext"], 0) + 1
    return {
        "root": str(out), "audio": str(audio_root), "meta": str(out), "seed": int(seed),
        "samplerate": int(samplerate), "cliques": int(cliques), "tracks": n_tracks,
        "audio_seconds": round(float(sum(r["seconds"] for r in rendered)), 3),
        "formats": formats_used, "splits": splits, "elapsed_s": round(time.perf_counter() - started, 3),
    }
