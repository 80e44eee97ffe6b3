"""Embed audio files with a CLEWS model: one embeddings file per input, the published inference path.

Every file is decoded (PyAV + soxr) to mono at the model's sample rate (at most ``maxlen`` s),
cut by :meth:`CLEWS.prepare` into ``shingle_len`` s windows every ``shingle_hop`` s (repeat-padded;
the model's own CQT per window) and embedded with :meth:`CLEWS.embed`. Shingles of several files
share one forward pass: they queue up and go through the network ``batch`` at a time, so memory
stays bounded whatever the file lengths. Decoding runs in a small thread pool ahead of the model.

A per-file embeddings file (``.npz``) holds

``z``         float32 (S, D)  segment embeddings
``starts``    float64 (S,)    segment start times in seconds
``duration``  float64 ()      decoded duration in seconds
``source``    str ()          the input file
``shingle_len``, ``shingle_hop``  float64 ()  the windowing used

A file that cannot be decoded is recorded as a failure (path + one-line reason); the rest go on.
"""

from __future__ import annotations

import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from clews_pipe.audio.formats import AUDIO_EXTENSIONS
from clews_pipe.errors import ClewsError
from clews_pipe.atomic import ensure_dir
from clews_pipe.embeddings.npz_format import open_npz, write_npz_atomically

#: Suffixes picked up when walking a folder (explicitly named files are always tried).
_WALKED_SUFFIXES = frozenset("." + ext for ext in AUDIO_EXTENSIONS)


@dataclass(frozen=True)
class AudioJob:
    """One input file and where its embeddings go (relative to the output folder)."""

    source: Path
    relative_out: Path


@dataclass
class FileEmbedding:
    source: Path
    z: np.ndarray  # (S, D) float32
    starts: np.ndarray  # (S,) seconds
    duration: float
    shingle_len: float
    shingle_hop: float
    note: str = ""  # decoder's damage note (truncated file), empty when clean


@dataclass
class EmbedReport:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)  # (file, one-line reason)
    notes: list[tuple[Path, str]] = field(default_factory=list)  # embedded, but damaged


# --------------------------------------------------------------------------------------- inputs
def collect_audio_jobs(paths: Iterable[str | Path]) -> list[AudioJob]:
    """Files and folders (walked recursively, audio extensions only) → jobs whose output paths
    mirror each folder's tree (a named file goes to the top level). The output name is always the
    input's name + ``.npz`` (``a.wav`` → ``a.wav.npz``), whatever else is in the folder. Missing
    paths or an empty result → :class:`ClewsError`."""
    found: list[tuple[Path, Path]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _WALKED_SUFFIXES)
            found.extend((f, f.relative_to(path)) for f in files)
        elif path.is_file():
            found.append((path, Path(path.name)))
        else:
            raise ClewsError(f"{path}: no such file or folder")
    if not found:
        raise ClewsError(f"no audio files found in {', '.join(str(p) for p in paths) or '(no paths)'}")
    jobs: list[AudioJob] = []
    taken: dict[Path, Path] = {}
    for source, rel in found:
        out = rel.with_name(rel.name + ".npz")
        if out in taken:
            raise ClewsError(f"{source} and {taken[out]} would both be written to {out}; embed them separately")
        taken[out] = source
        jobs.append(AudioJob(source=source, relative_out=out))
    return jobs


# --------------------------------------------------------------------------------------- output
def save_file_embedding(path: str | Path, emb: FileEmbedding) -> Path:
    """Write one file's embeddings atomically (temporary name, then rename)."""
    return write_npz_atomically(
        path,
        dict(
            z=np.ascontiguousarray(emb.z, dtype=np.float32),
            starts=np.asarray(emb.starts, dtype=np.float64),
            duration=np.float64(emb.duration),
            source=np.asarray(str(emb.source)),
            shingle_len=np.float64(emb.shingle_len),
            shingle_hop=np.float64(emb.shingle_hop),
        ),
    )


def load_file_embedding(path: str | Path) -> FileEmbedding:
    """Read a ``clews-pipe embed`` output; any problem → one-line :class:`ClewsError`."""
    path = Path(path)
    data, keys = open_npz(path)
    missing = [k for k in ("z", "starts") if k not in keys]
    if missing:
        raise ClewsError(f"{path}: not a clews-pipe embed output (missing {', '.join(missing)})")
    z, starts = data["z"], data["starts"]
    if z.ndim != 2 or starts.shape != (z.shape[0],) or z.shape[0] == 0:
        raise ClewsError(f"{path}: z must be (S, D) and starts (S,), got {z.shape} and {starts.shape}")
    if not np.isfinite(z).all():
        raise ClewsError(f"{path}: z holds NaN/inf values")
    scalar = lambda k, default: float(data[k]) if k in keys else default  # noqa: E731
    return FileEmbedding(
        source=Path(str(data["source"])) if "source" in keys else path,
        z=z.astype(np.float32, copy=False),
        starts=starts.astype(np.float64, copy=False),
        duration=scalar("duration", math.nan),
        shingle_len=scalar("shingle_len", math.nan),
        shingle_hop=scalar("shingle_hop", math.nan),
    )


# --------------------------------------------------------------------------------------- compute
@dataclass
class _Pending:
    job: AudioJob
    n_shingles: int
    duration: float
    note: str
    done: int = 0  # shingles embedded so far
    parts: list = field(default_factory=list)


def _decode_ahead(jobs: list[AudioJob], decode: Callable, workers: int, ahead: int) -> Iterator[tuple[AudioJob, object]]:
    """Yield ``(job, decoded or exception)`` in order, decoding up to ``ahead`` files in advance."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        queue: deque = deque()
        it = iter(jobs)
        for job in it:
            queue.append((job, pool.submit(decode, job.source)))
            if len(queue) >= ahead:
                break
        while queue:
            job, future = queue.popleft()
            try:
                result = future.result()
            except ClewsError as exc:
                result = exc
            except Exception as exc:  # an unexpected decoder failure still costs only this file
                result = ClewsError(f"{job.source}: decode failed ({type(exc).__name__}: {' '.join(str(exc).split())})")
            nxt = next(it, None)
            if nxt is not None:
                queue.append((nxt, pool.submit(decode, nxt.source)))
            yield job, result


def iter_file_embeddings(
    model,
    jobs: list[AudioJob],
    *,
    shingle_len: float | None = None,
    shingle_hop: float = 5.0,
    batch: int = 32,
    maxlen: float = 600.0,
    seed: int = 0,
    decode_workers: int = 2,
    device="cpu",
) -> Iterator[tuple[AudioJob, FileEmbedding | str]]:
    """Yield ``(job, FileEmbedding)`` for every file, or ``(job, reason)`` for one that cannot be
    decoded, in input order. ``batch`` bounds the shingles per forward pass; shingles of
    consecutive files are packed together. The CQTPrepare noise draws from torch's generator,
    seeded with ``seed`` for this call only (the caller's generator state is restored)."""
    import torch

    from clews_pipe.audio.decode import decode_audio

    if batch < 1:
        raise ClewsError(f"--batch must be >= 1, got {batch}")
    slen = float(model.shingle_len if shingle_len is None else shingle_len)
    shop = float(shingle_hop)
    if slen <= 0 or shop <= 0:
        raise ClewsError(f"shingle length and hop must be > 0 seconds, got --len {slen} --hop {shop}")
    rate = int(model.samplerate)
    hop_seconds = model.shingle_samples(shop) / rate  # the hop prepare() really uses, in seconds

    def decode(path: Path):
        return decode_audio(path, samplerate=rate, max_seconds=maxlen)

    pending: deque[_Pending] = deque()  # decoded files whose shingles are queued or in flight
    queued: list = []  # CQT shingles waiting for the network, in file order
    n_queued = 0
    ready: list[tuple[AudioJob, FileEmbedding | str]] = []  # finished, in input order

    def run_network(flush: bool) -> None:
        nonlocal queued, n_queued
        while n_queued >= batch or (flush and n_queued):
            stacked = torch.cat(queued, dim=0)
            take, rest = stacked[:batch], stacked[batch:]
            queued, n_queued = ([rest] if rest.shape[0] else []), int(rest.shape[0])
            z = model.embed(take[None])[0].float().cpu().numpy()
            while z.shape[0]:  # hand the rows back to their files, in order
                _release_failures(pending, ready)  # a failed file between two good ones gets no rows
                entry = pending[0]
                k = min(entry.n_shingles - entry.done, z.shape[0])
                entry.parts.append(z[:k])
                entry.done += k
                z = z[k:]
                if entry.done == entry.n_shingles:
                    pending.popleft()
                    ready.append((entry.job, FileEmbedding(
                        source=entry.job.source, z=np.concatenate(entry.parts, axis=0),
                        starts=np.arange(entry.n_shingles) * hop_seconds, duration=entry.duration,
                        shingle_len=slen, shingle_hop=shop, note=entry.note)))

    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        torch.manual_seed(seed)
        for job, decoded in _decode_ahead(jobs, decode, max(1, decode_workers), ahead=max(2, 2 * decode_workers)):
            if isinstance(decoded, ClewsError):
                if pending:  # keep input order: the failure follows the files still in flight
                    pending.append(_Pending(job=job, n_shingles=0, duration=0.0, note=_reason(decoded, job.source)))
                else:
                    ready.append((job, _reason(decoded, job.source)))
            else:
                wave = torch.from_numpy(decoded.waveform).to(device)[None]
                spec = model.prepare(wave, shingle_len=slen, shingle_hop=shop)[0]  # (S, F, T)
                pending.append(_Pending(job=job, n_shingles=int(spec.shape[0]), duration=float(decoded.duration),
                                        note=decoded.note if decoded.truncated else ""))
                queued.append(spec)
                n_queued += int(spec.shape[0])
                run_network(flush=False)
            _release_failures(pending, ready)
            yield from ready
            ready.clear()
        run_network(flush=True)
        _release_failures(pending, ready)
        yield from ready


def _release_failures(pending: deque, ready: list) -> None:
    """Failures (``n_shingles == 0``) at the head of ``pending`` are finished: move them to ``ready``."""
    while pending and pending[0].n_shingles == 0:
        entry = pending.popleft()
        ready.append((entry.job, entry.note))


def embed_audio_files(
    model,
    jobs: list[AudioJob],
    out_dir: str | Path,
    *,
    progress: Callable[[int], None] | None = None,
    **settings,
) -> EmbedReport:
    """Embed every job's file with ``model`` (eval mode) and write ``out_dir / job.relative_out``.
    ``settings`` as for :func:`iter_file_embeddings`; ``progress(report)`` after each finished file."""
    out_dir = ensure_dir(out_dir, "--out folder")
    report = EmbedReport()
    for job, result in iter_file_embeddings(model, jobs, **settings):
        if isinstance(result, str):
            report.failed.append((job.source, result))
        else:
            report.written.append(save_file_embedding(out_dir / job.relative_out, result))
            if result.note:
                report.notes.append((job.source, result.note))
        if progress:
            progress(report)
    return report


def embed_audio_file(model, path: str | Path, **settings) -> FileEmbedding:
    """One file's embeddings (no file written); an undecodable file → :class:`ClewsError`."""
    path = Path(path)
    for _, result in iter_file_embeddings(model, [AudioJob(path, Path(path.name))], decode_workers=1, **settings):
        if isinstance(result, str):
            raise ClewsError(f"{path}: {result}")
        return result
    raise ClewsError(f"{path}: nothing embedded")


def _reason(exc: ClewsError, source: Path) -> str:
    """The decoder's one-line message without the leading file name (the report names it)."""
    text = " ".join(str(exc).split())
    prefix = f"{source}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def default_decode_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 1) // 2))
