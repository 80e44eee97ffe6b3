"""``demo-corpus --kind compositions``: versions of real public-domain compositions, rendered.

Each clique is one work of music21's corpus (:mod:`clews_pipe.datasets.works`: Bach chorale
melody families, folk tunes); each version re-arranges and re-performs it
(:mod:`clews_pipe.datasets.arrange`), is rendered through a General MIDI soundfont by FluidSynth
or the numpy fallback (:mod:`clews_pipe.datasets.render`) and "recorded"
(:mod:`clews_pipe.datasets.recording`: room, EQ, noise, level, codec mp3 / ogg / flac).

Same layout as the synthetic kind (:mod:`clews_pipe.datasets.demo_corpus`, whose id, split and
file writers it reuses): ``audio/<id[:2]>/<id>.<ext>`` + ``<id>.meta`` (artist, title, composer,
collection, work, score and every choice of the version) and the Discogs-VI light split files.
Every random choice comes from a generator seeded by ``(seed, clique, version)``, so the corpus
is the same for a seed whatever the number of worker processes. A version that cannot be
rendered is left out and counted (``failed``); it never stops the others.

``train_only`` (:class:`TrainOnlySpec`, ``--train-only-cliques``) adds cliques of other works to
the train split alone, from their own seeded streams, leaving the main cliques and the val and
test split files exactly as they are without them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clews_pipe.datasets.arrange import arrange_version, work_tempo
from clews_pipe.datasets.recording import draw_recording, record
from clews_pipe.datasets.render import Renderer, choose_renderer, render, render_numpy
from clews_pipe.datasets.scores import parse_piece
from clews_pipe.datasets.works import Work, WorkChoice, choose_train_only_works, choose_works
from clews_pipe.errors import ClewsError, first_line
from clews_pipe.datasets.demo_corpus import (
    SPLIT_FILE_PREFIX, _SOUNDFILE_FORMATS, _write_mp3, assign_splits, draw_corpus_ids, render_all,
)


@dataclass(frozen=True)
class CliqueJob:
    """What one worker renders: every version of one clique."""

    seed: int
    clique_index: int
    choice: WorkChoice
    youtube_ids: tuple[str, ...]
    duration_min: float
    duration_max: float
    sr: int
    audio_root: str
    renderer: Renderer


@dataclass(frozen=True)
class ParsedWork:
    work: Work
    members: tuple  # parsed Piece of each member of the family


@dataclass(frozen=True)
class TrainOnlySpec:
    """Extra cliques for the train split only (``demo-corpus --train-only-cliques``): works left
    over by the main cliques (:func:`~clews_pipe.datasets.works.choose_train_only_works`), fewer
    and shorter versions (one to one and a half 20-s training shingles), ids and versions drawn
    from their own seeded streams, so that adding them leaves every main clique, its audio and
    the val and test splits exactly as they were."""

    cliques: int
    versions_min: int = 2
    versions_max: int = 4
    duration_min: float = 20.0
    duration_max: float = 30.0


@dataclass(frozen=True)
class CliquePlan:
    """Ids and split of one clique, fixed by the seed before anything is rendered."""

    clique_id: str
    version_ids: list
    youtube_ids: list
    split: str


def _pieces(job: CliqueJob) -> ParsedWork:
    """The clique's own work and its parsed members, else its first spare that parses."""
    for work in (job.choice.work,) + job.choice.spares:
        members = []
        for source, title in zip(work.sources, work.source_titles):
            try:
                members.append(parse_piece(source, title=title or None))
            except ClewsError:
                continue
        if members:
            return ParsedWork(work, tuple(members))
    raise ClewsError(f"clique {job.clique_index}: no score of {job.choice.work.sources[0]} or its spares parses")


def _write_audio(path: Path, wave: np.ndarray, sr: int, ext: str) -> None:
    import soundfile as sf

    tmp = path.with_name(f".{path.name}.tmp")
    if ext == "mp3":
        _write_mp3(tmp, wave, sr)
    else:
        fmt, subtype = _SOUNDFILE_FORMATS[ext]
        sf.write(tmp, wave, sr, format=fmt, subtype=subtype)
    os.replace(tmp, path)


def _render_one(job: CliqueJob, work: Work, members, version: int, work_bpm: float) -> dict:
    rng = np.random.default_rng([job.seed, 12, job.clique_index, version])
    performance = arrange_version(members, work.kind, version, work_bpm, rng, job.duration_min, job.duration_max)
    settings = draw_recording(rng)
    renderer = job.renderer.kind
    try:
        wave = render(performance, job.sr, job.renderer, settings.synth_reverb)
    except ClewsError:
        wave, renderer = render_numpy(performance, job.sr), "numpy (fluidsynth failed)"
    wave = record(wave, job.sr, settings, rng)
    ytid = job.youtube_ids[version]
    folder = Path(job.audio_root) / ytid[:2]
    folder.mkdir(parents=True, exist_ok=True)
    _write_audio(folder / f"{ytid}.{settings.codec}", wave, job.sr, settings.codec)
    piece = members[version % len(members)]
    title = piece.title if work.kind == "chorale" else (piece.title or work.title)
    meta = {"artist": work.composer, "title": title, "composer": work.composer, "collection": work.collection,
            "work": work.title or piece.title, "renderer": renderer, "version": performance.params,
            "recording": settings.as_dict()}
    (folder / f"{ytid}.meta").write_text(json.dumps(meta, ensure_ascii=False))
    return {"youtube_id": ytid, "title": title, "seconds": len(wave) / job.sr, "ext": settings.codec,
            "renderer": renderer}


def render_clique(job: CliqueJob) -> dict:
    """Every version of one clique; a version that fails is reported, not raised."""
    try:
        parsed = _pieces(job)
    except ClewsError as exc:
        return {"clique_index": job.clique_index, "work": None, "tracks": [], "failed": [str(exc)]}
    work, members = parsed.work, parsed.members
    work_bpm = work_tempo(members[0], work.kind, np.random.default_rng([job.seed, 11, job.clique_index]))
    tracks, failed = [], []
    for version in range(len(job.youtube_ids)):
        try:
            tracks.append(_render_one(job, work, members, version, work_bpm))
        except Exception as exc:  # one bad version never stops the corpus
            failed.append(f"{job.youtube_ids[version]}: {first_line(exc)}")
    name = work.title or members[0].title
    return {"clique_index": job.clique_index, "work": name, "kind": work.kind, "tracks": tracks, "failed": failed}


def _check(cliques: int, seed: int, versions_min: int, versions_max: int, duration_min: float, duration_max: float) -> None:
    if cliques < 1:
        raise ClewsError(f"cliques must be >= 1, got {cliques}")
    if not 2 <= versions_min <= versions_max:
        raise ClewsError(f"need 2 <= versions_min <= versions_max, got {versions_min}, {versions_max}")
    if not 5 <= duration_min <= duration_max:
        raise ClewsError(f"need 5 <= duration_min <= duration_max, got {duration_min}, {duration_max}")
    if seed < 0:
        raise ClewsError(f"seed must be >= 0, got {seed}")


def _plan(cliques: int, seed: int, versions_min: int, versions_max: int, split_fractions) -> list[CliquePlan]:
    """Each clique's ids and split for the seed."""
    rng = np.random.default_rng([seed, 0])
    ids = draw_corpus_ids(rng, cliques, versions_min, versions_max)
    split = assign_splits(rng, cliques, split_fractions)
    return _clique_plans(ids, [str(s) for s in split])


def _clique_plans(ids, splits: list[str]) -> list[CliquePlan]:
    bounds = np.concatenate([[0], np.cumsum(ids.n_versions)])
    return [CliquePlan(ids.clique_ids[c], ids.version_ids[bounds[c]:bounds[c + 1]],
                       ids.youtube_ids[bounds[c]:bounds[c + 1]], splits[c]) for c in range(len(splits))]


def _train_only_plan(spec: TrainOnlySpec, seed: int, main: list[CliquePlan]) -> list[CliquePlan]:
    """Ids of the train-only cliques, from their own stream (the main cliques' ids stay as they
    are), drawn again until no clique, version or youtube id repeats one of the main cliques'."""
    taken = {i for plan in main for i in [plan.clique_id, *plan.version_ids, *plan.youtube_ids]}
    for attempt in range(100):
        ids = draw_corpus_ids(np.random.default_rng([seed, 1, attempt]), spec.cliques, spec.versions_min,
                              spec.versions_max)
        if taken.isdisjoint([*ids.clique_ids, *ids.version_ids, *ids.youtube_ids]):
            return _clique_plans(ids, ["train"] * spec.cliques)
    raise ClewsError("could not draw train-only ids distinct from the main cliques' ids")


def _jobs(plan: list[CliquePlan], choices: list[WorkChoice], seed: int, durations: tuple[float, float],
          sr: int, audio_root: Path, renderer: Renderer, first_index: int = 0) -> list[CliqueJob]:
    return [CliqueJob(seed, first_index + c, choice, tuple(plan[c].youtube_ids), durations[0], durations[1], sr,
                      str(audio_root), renderer) for c, choice in enumerate(choices)]


def generate_compositions_corpus(
    out, cliques: int, seed: int = 0, versions_min: int = 2, versions_max: int = 6,
    duration_min: float = 30.0, duration_max: float = 60.0, samplerate: int = 16000,
    split_fractions=(0.6, 0.1, 0.3), workers: int = 1, renderer: str = "auto", progress: bool = False,
    log=print, train_only: TrainOnlySpec | None = None,
) -> dict:
    """Write a compositions corpus under ``out``; return a summary dict (see the module doc).
    ``train_only``: extra cliques for the train split alone (:class:`TrainOnlySpec`)."""
    _check(cliques, seed, versions_min, versions_max, duration_min, duration_max)
    choice = choose_renderer(renderer)
    if choice.notice:
        log(choice.notice)
    chosen_renderer = choice.renderer
    out = Path(out)
    audio_root = out / "audio"
    try:
        audio_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClewsError(f"{out}: cannot create corpus folder ({exc.strerror})") from None
    started = time.perf_counter()
    plan = _plan(cliques, seed, versions_min, versions_max, split_fractions)
    works = choose_works(cliques, seed)
    jobs = _jobs(plan, works, seed, (duration_min, duration_max), int(samplerate), audio_root, chosen_renderer)
    if train_only is not None and train_only.cliques > 0:
        extra = _train_only_plan(train_only, seed, plan)
        jobs += _jobs(extra, choose_train_only_works(train_only.cliques, seed, works), seed,
                      (train_only.duration_min, train_only.duration_max), int(samplerate), audio_root,
                      chosen_renderer, first_index=cliques)
        plan += extra
    tally = _write_splits(out, plan, _run(jobs, workers, progress))
    elapsed = time.perf_counter() - started
    return {
        "root": str(out), "audio": str(audio_root), "meta": str(out), "kind": "compositions", "seed": int(seed),
        "samplerate": int(samplerate), "renderer": chosen_renderer.kind, "cliques": cliques,
        "train_only_cliques": len(plan) - cliques, "tracks": sum(tally.formats.values()), "failed": tally.failed,
        "audio_seconds": round(tally.seconds, 3), "formats": tally.formats, "splits": tally.splits,
        "elapsed_s": round(elapsed, 3), "realtime_factor": round(tally.seconds / max(elapsed, 1e-9), 1),
    }


@dataclass
class CorpusTally:
    failed: list
    formats: dict
    seconds: float
    splits: dict  # split -> {"cliques": n, "tracks": n}


def _write_splits(out: Path, plan: list[CliquePlan], results: list[dict]) -> CorpusTally:
    """The Discogs-VI light split files of what was rendered; what failed is listed, not lost."""
    splits: dict[str, dict[str, list]] = {"train": {}, "val": {}, "test": {}}
    tally = CorpusTally(failed=[], formats={}, seconds=0.0, splits={})
    for result in sorted(results, key=lambda r: r["clique_index"]):
        clique = plan[result["clique_index"]]
        tally.failed += result["failed"]
        entries = []
        for track in result["tracks"]:
            version_id = clique.version_ids[clique.youtube_ids.index(track["youtube_id"])]
            entries.append({"version_id": version_id, "track_title": track["title"], "youtube_id": track["youtube_id"]})
            tally.formats[track["ext"]] = tally.formats.get(track["ext"], 0) + 1
            tally.seconds += track["seconds"]
        if entries:
            splits[clique.split][clique.clique_id] = entries
    for split, content in splits.items():
        (out / f"{SPLIT_FILE_PREFIX}.{split}").write_text(json.dumps(content, indent=1, ensure_ascii=False))
    tally.splits = {s: {"cliques": len(c), "tracks": sum(len(v) for v in c.values())} for s, c in splits.items()}
    return tally


def _run(jobs: list[CliqueJob], workers: int, progress: bool) -> list[dict]:
    return render_all(render_clique, jobs, workers, progress, desc="render compositions", unit="clique", chunksize=1)
