"""The extraction job: catalog → decode → CQT → feature store, as one Dask task per store part.

``run_extract(conf)`` is the library entry point behind ``clews-pipe extract``:

1. load the catalog, open (or create) the store and reconcile it with the disk (temporary parts
   of dead runs removed; parts that are gone or fail their manifest check, with ``verify`` also
   their crc32, are moved aside so their tracks are extracted again); drop the tracks the store
   already has (``retry_failed``: failed tracks are extracted again);
2. record the tracks whose audio is missing (once: an unchanged missing record is not rewritten);
3. start/attach the Dask cluster (only when there is work) and group the remaining tracks into
   parts of at most ``part_size`` tracks (fewer for small jobs, so every worker has parts),
   balanced by audio file size;
4. run ``extract_part`` for every part on the cluster; each task decodes + CQTs its tracks and
   writes its part atomically. A part whose worker dies is rescheduled by the scheduler, one
   whose task raises (e.g. a flaky filesystem) is retried ``retries`` times; either way only the
   in-flight part is lost, and a rerun skips every finished part;
5. gather the small per-part summaries as they complete (progress bar), then consolidate the
   index, applying the catalog's clique, version, split, title and artist to every indexed track
   (metadata changes reach the store without decoding again).

A bad track never kills its task: it becomes a record with status "failed" and the reason.
"""

from __future__ import annotations

import functools
import math
import os
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from clews_pipe.atomic import write_json_atomic
from clews_pipe.errors import ClewsError, first_line
from clews_pipe.store.layout import DUPLICATES
from clews_pipe.store.writer import check_new_store_target
from clews_pipe.lock import folder_lock
from clews_pipe.features.cqt_params import CQTParams
from clews_pipe.store.track_table import STATUSES, TRACK_RECORD_FIELDS

RECORD_FIELDS = TRACK_RECORD_FIELDS  # the catalog columns a task needs to build its store records
WORKER_LOGS = "logs"  # <store>/logs/: one log file per Dask worker (task tracebacks go there)


# ----------------------------------------------------------------------------------------------
# worker side


@functools.lru_cache(maxsize=4)
def worker_extractor(params: "CQTParams", impl: str = "trimmed"):
    """One CQT extractor per worker process and settings (kernels built once, reused by every task)."""
    from clews_pipe.features.cqt import CQTExtractor
    from clews_pipe.features.cqt_trimmed import TrimmedCQTExtractor

    _quiet_worker_libraries()
    return TrimmedCQTExtractor(params) if impl == "trimmed" else CQTExtractor(params)


def warm_worker(cqt_params: "CQTParams", impl: str = "trimmed") -> None:
    """Import the decoding/store stack and build this worker's extractor ahead of the first part
    (``client.run(warm_worker, ...)``; benchmarks use it to time the steady state)."""
    import clews_pipe.store  # noqa: F401
    import clews_pipe.audio.decode  # noqa: F401

    worker_extractor(cqt_params, impl)


def _quiet_worker_libraries() -> None:
    try:
        import av.logging

        av.logging.set_level(None)  # libav messages (e.g. "Header missing") stay off the terminal
    except Exception:  # pragma: no cover - PyAV without the logging module
        pass


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def extract_track(record: dict, extractor, samplerate: int, max_seconds: float) -> tuple[dict, Optional[np.ndarray]]:
    """Decode + CQT one track. Returns its store record (status ok/truncated/failed) and features."""
    from clews_pipe.audio.decode import AudioDecodeError, decode_audio

    out = {key: str(record.get(key, "")) for key in RECORD_FIELDS}
    out.update(duration=0.0, status="failed", error="")
    try:
        decoded = decode_audio(record["path"], samplerate=samplerate, max_seconds=max_seconds)
    except AudioDecodeError as exc:
        out["error"] = first_line(exc, "undecodable audio")
        return out, None
    except Exception as exc:  # any decoder crash is this track's failure, not the task's
        out["error"] = f"decode failed: {_one_line(exc)}"
        return out, None
    out["duration"] = float(decoded.duration)
    try:
        features = extractor(decoded.waveform)
    except Exception as exc:
        out["error"] = f"CQT failed on {decoded.duration:.2f} s of audio: {_one_line(exc)}"
        return out, None
    if features.shape[0] == 0:
        out["error"] = f"no CQT frames from {decoded.duration:.2f} s of audio"
        return out, None
    if decoded.truncated:
        out["status"], out["error"] = "truncated", decoded.note
    else:
        out["status"] = "ok"
    return out, features


def extract_part(records: list[dict], settings: dict) -> dict:
    """Dask task: extract ``records`` and write them as store part ``settings['part_name']``.

    Returns a small summary (counts, seconds of audio, failures) for the driver's progress bar.
    """
    import torch

    from clews_pipe.store import create_store

    started = time.perf_counter()
    torch.set_num_threads(int(settings["torch_threads"]))
    extractor = worker_extractor(settings["cqt_params"], settings["cqt_impl"])
    out_records: list[dict] = []
    features: list[Optional[np.ndarray]] = []
    for record in records:
        rec, feats = extract_track(record, extractor, int(settings["samplerate"]), float(settings["max_seconds"]))
        out_records.append(rec)
        features.append(feats)
    writer = create_store(settings["store"], backend=settings["backend"], cqt_params=settings["cqt_params"])
    writer.write_part(settings["part_name"], out_records, features)
    return _part_summary(settings["part_name"], out_records, time.perf_counter() - started)


def _part_summary(part_name: str, records: list[dict], seconds: float) -> dict:
    statuses = [r["status"] for r in records]
    return {
        "part": part_name,
        "tracks": len(records),
        "counts": {s: statuses.count(s) for s in STATUSES},
        "audio_seconds": float(sum(r["duration"] for r in records if r["status"] in ("ok", "truncated"))),
        "failed": [{"track_id": r["track_id"], "path": r["path"], "error": r["error"]}
                   for r in records if r["status"] == "failed"],
        "seconds": seconds,
    }


# ----------------------------------------------------------------------------------------------
# driver side


def balanced_parts(sizes: np.ndarray, part_size: int) -> list[np.ndarray]:
    """Split track positions into ``ceil(n / part_size)`` parts of near-equal count and total size.

    Tracks are dealt largest first in a snake order (0,1,..,k-1,k-1,..,0,...), so every part gets
    one track of each size rank band: counts differ by at most one, sizes stay close.
    Returns the positions of each part, ascending.
    """
    n = int(len(sizes))
    if n == 0:
        return []
    n_parts = math.ceil(n / part_size)
    order = np.argsort(-np.asarray(sizes, dtype=np.float64), kind="stable")
    rank = np.arange(n)
    lap, pos = np.divmod(rank, n_parts)
    part_of_rank = np.where(lap % 2 == 0, pos, n_parts - 1 - pos)
    part_of_track = np.empty(n, dtype=np.int64)
    part_of_track[order] = part_of_rank
    by_part = np.argsort(part_of_track, kind="stable")
    bounds = np.searchsorted(part_of_track[by_part], np.arange(n_parts + 1))
    return [by_part[bounds[k]:bounds[k + 1]] for k in range(n_parts)]


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def file_sizes(paths: list[str], threads: int = 16) -> np.ndarray:
    """Sizes of ``paths`` in bytes (0 when unreadable); stat calls overlap on network filesystems."""
    if not paths:
        return np.zeros(0, dtype=np.int64)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return np.fromiter(pool.map(_file_size, paths, chunksize=256), dtype=np.int64, count=len(paths))


def run_tag() -> str:
    """A part-name prefix unique to this run (time, host, pid): runs never overwrite each other."""
    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:12] or "host"
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{host}-{os.getpid()}"


def _cqt_params(conf: DictConfig) -> CQTParams:
    return CQTParams(samplerate=int(conf.samplerate))


def _records(frame: pd.DataFrame) -> list[dict]:
    return frame.loc[:, list(RECORD_FIELDS)].to_dict(orient="records")


def _recorded_missing(store_path: str) -> dict[str, str]:
    """track_id → error of the tracks whose latest store record (finished parts) is "missing"."""
    from clews_pipe.store.reader import load_index

    frame, _parts = load_index(Path(store_path))
    missing = frame[frame["status"] == "missing"]
    return dict(zip(missing["track_id"].astype(str), missing["error"].astype(str)))


def _check_split_overlap(conf: DictConfig, duplicates: list[dict]) -> None:
    """ClewsError naming the first id listed in a training and an evaluated split (a leak),
    unless ``allow_split_overlap``."""
    from clews_pipe.datasets.catalogs import split_leaks

    leaks = split_leaks(duplicates)
    if not leaks or conf.allow_split_overlap:
        return
    first = leaks[0]
    where = " and ".join(f"split {e['split']} (clique {e['clique']})" for e in first["entries"])
    more = f" ({len(leaks) - 1} more such ids)" if len(leaks) > 1 else ""
    raise ClewsError(
        f"{conf.meta}: track {first['track_id']} is listed in {where}: a training/evaluation leak{more}; "
        "fix the metadata or pass --allow-split-overlap (the first listed entry is kept)"
    )


def _failed_track_ids(store_path: str) -> set[str]:
    from clews_pipe.store.reader import load_index

    frame, _parts = load_index(Path(store_path))
    return set(frame.loc[frame["status"] == "failed", "track_id"].astype(str))


def _missing_records(catalog: pd.DataFrame, done: set[str], store_path: str) -> list[dict]:
    missing = catalog[(catalog["status"] == "missing") & ~catalog["track_id"].isin(done)]
    if missing.empty:
        return []
    known = pd.Series(_recorded_missing(store_path), dtype=object)
    unchanged = missing["track_id"].map(known).eq(missing["error"]).to_numpy()
    missing = missing[~unchanged]
    records = _records(missing)
    for record, error in zip(records, missing["error"].astype(str)):
        record.update(duration=0.0, status="missing", error=error or "audio file not found")
    return records


def plan_parts(pending: pd.DataFrame, part_size: int, balance: bool) -> list[list[dict]]:
    """The pending tracks grouped into store parts (balanced by file size when ``balance``)."""
    if pending.empty:
        return []
    records = _records(pending)
    if balance:
        groups = balanced_parts(file_sizes([r["path"] for r in records]), part_size)
        return [[records[i] for i in group] for group in groups]
    return [records[k:k + part_size] for k in range(0, len(records), part_size)]


def run_extract(conf: DictConfig, on_start: Optional[Callable[[int, int], None]] = None,
                on_part: Optional[Callable[[dict], None]] = None) -> dict:
    """Run the whole extraction job described by ``conf`` (see ExtractConfig); returns its summary.

    ``on_start(n_parts, n_tracks)`` is called before the first task, ``on_part(part_summary)``
    each time a part completes (the CLI's progress bar). Raises ClewsError for a wrong path,
    unreadable metadata or an unwritable store; failed tracks are recorded, not raised.
    """
    from clews_pipe.datasets.catalogs import load_catalog

    if not conf.out:
        raise ClewsError("no output store given (--out STORE)")
    if not conf.audio:
        raise ClewsError("no audio root given (--audio PATH)")
    started = time.perf_counter()
    started_wall = time.time()
    store_path = str(Path(conf.out).expanduser().resolve())
    duplicates: list[dict] = []
    catalog = load_catalog(conf.dataset, conf.meta, conf.audio, splits=tuple(conf.splits), duplicates=duplicates)
    _check_split_overlap(conf, duplicates)
    check_new_store_target(Path(store_path))
    with folder_lock(store_path, "clews-pipe extract"):
        return _run_locked(conf, store_path, catalog, duplicates, started, started_wall, on_start, on_part)


def _run_locked(conf: DictConfig, store_path: str, catalog: pd.DataFrame, duplicates: list[dict], started: float,
                started_wall: float, on_start, on_part) -> dict:
    """run_extract's work while it holds the store's lock."""
    from clews_pipe.store import create_store

    cqt_params = _cqt_params(conf)
    writer = create_store(store_path, backend=conf.backend, cqt_params=cqt_params,
                          attrs={"dataset": conf.dataset, "samplerate": int(conf.samplerate),
                                 "max_seconds": float(conf.max_seconds)})
    reconciled = writer.reconcile(crc=bool(conf.verify), older_than=started_wall)
    write_json_atomic(Path(store_path) / DUPLICATES, {"duplicates": duplicates}, indent=1)
    done = writer.done_track_ids()
    retried: set[str] = set()
    if conf.retry_failed:
        retried = _failed_track_ids(store_path) & done
        done -= retried
    tag = run_tag()

    missing_records = _missing_records(catalog, done, store_path)
    if missing_records:
        writer.write_part(f"{tag}-missing", missing_records, [None] * len(missing_records))

    pending = catalog[(catalog["status"] == "pending") & ~catalog["track_id"].isin(done)]
    summary = {
        "store": store_path,
        "backend": conf.backend,
        "catalog_tracks": int(len(catalog)),
        "already_done": int(catalog["track_id"].isin(done).sum()),
        "missing_recorded": len(missing_records),
        "part_size": 0,
        "parts": 0,
        "parts_written": 0,
        "tracks_submitted": 0,
        "tracks_left_for_rerun": 0,
        "this_run": {s: 0 for s in STATUSES},
        "audio_seconds": 0.0,
        "task_seconds": 0.0,
        "failed_tracks": [],
        "lost_parts": [],
        "cluster_seconds": 0.0,
        "processing_seconds": 0.0,
        "damaged_parts": reconciled["damaged_parts"],
        "tracks_reextracted_from_damaged_parts": reconciled["tracks_dropped"],
        "temporaries_removed": len(reconciled["temporaries_removed"]),
        "failed_retried": len(retried & set(catalog["track_id"])),
        "metadata_updated": 0,
        "duplicates": len(duplicates),
    }
    summary["this_run"]["missing"] = len(missing_records)
    job_started = time.perf_counter()
    if not pending.empty:  # a rerun with nothing to do starts no cluster
        _run_parts(conf, store_path, pending, tag, cqt_params, summary, on_start, on_part)
    summary["job_seconds"] = time.perf_counter() - job_started

    index = writer.consolidate(catalog)
    summary["metadata_updated"] = writer.metadata_updated
    summary["wall_seconds"] = time.perf_counter() - started
    summary["audio_hours"] = summary["audio_seconds"] / 3600.0
    # throughput of the processing itself (cluster start-up excluded; job_seconds includes it)
    processing = summary.get("processing_seconds", 0.0)
    summary["realtime_factor"] = summary["audio_seconds"] / processing if processing > 0 else 0.0
    counts = index["status"].value_counts()
    summary["store_totals"] = {s: int(counts.get(s, 0)) for s in STATUSES}
    stored = index[index["status"].isin(["ok", "truncated"])]
    summary["store_audio_hours"] = float(pd.to_numeric(stored["duration"]).sum()) / 3600.0
    return summary


def expected_workers(conf: DictConfig, client) -> int:
    """How many workers the job will have: a started LocalCluster's, SLURM's jobs × processes,
    or what a running scheduler reports now (at least 1)."""
    if not conf.scheduler and conf.cluster == "slurm":
        from clews_pipe.extract.cluster import slurm_processes

        return int(conf.slurm.jobs) * slurm_processes(conf)
    return max(1, int(conf.wait_workers or 0), len(client.scheduler_info().get("workers", {})))


def effective_part_size(n_tracks: int, part_size: int, n_workers: int, parts_per_worker: int = 2) -> int:
    """``part_size``, made smaller for small jobs so that every worker gets parts to work on."""
    return max(1, min(int(part_size), math.ceil(n_tracks / (max(1, n_workers) * parts_per_worker))))


def _run_parts(conf: DictConfig, store_path: str, pending: pd.DataFrame, tag: str, cqt_params: "CQTParams", summary: dict,
               on_start: Optional[Callable[[int, int], None]], on_part: Optional[Callable[[dict], None]]) -> None:
    from clews_pipe.extract.cluster import dask_client

    cluster_started = time.perf_counter()
    log_dir = str(Path(store_path) / WORKER_LOGS)
    summary["worker_logs"] = log_dir
    with dask_client(conf, log_dir=log_dir) as client:
        processing_started = time.perf_counter()
        summary["cluster_seconds"] = processing_started - cluster_started
        part_size = effective_part_size(len(pending), int(conf.part_size), expected_workers(conf, client))
        parts = plan_parts(pending, part_size, bool(conf.balance))
        if conf.max_parts:
            parts = parts[: int(conf.max_parts)]
        n_tracks = sum(len(p) for p in parts)
        summary.update(part_size=part_size, parts=len(parts), tracks_submitted=n_tracks,
                       tracks_left_for_rerun=len(pending) - n_tracks)
        if on_start is not None:
            on_start(len(parts), n_tracks)
        _process_parts(client, conf, store_path, parts, tag, cqt_params, summary, on_part)
        summary["processing_seconds"] = time.perf_counter() - processing_started


def _completed(pending, client, check):
    """The futures of ``pending`` (an ``as_completed``) as they finish; between them ``check(client)``
    may raise (the cluster lost every worker job), which ends the wait with one error line."""
    if check is None:
        yield from pending
        return
    while not pending.is_empty():
        batch = pending.next_batch(block=False)
        if not batch:
            check(client)
            time.sleep(0.2)
            continue
        yield from batch


def _process_parts(client, conf: DictConfig, store_path: str, parts: list[list[dict]], tag: str, cqt_params: "CQTParams",
                   summary: dict, on_part: Optional[Callable[[dict], None]]) -> None:
    from distributed import as_completed

    names = [f"{tag}-p{k:05d}" for k in range(len(parts))]
    base = {
        "store": store_path,
        "backend": conf.backend,
        "cqt_params": cqt_params,
        "samplerate": int(conf.samplerate),
        "max_seconds": float(conf.max_seconds),
        "torch_threads": int(conf.torch_threads),
        "cqt_impl": str(conf.cqt_impl),
    }
    settings = [dict(base, part_name=name) for name in names]
    futures = client.map(extract_part, parts, settings, key=names, pure=False, retries=int(conf.retries))
    check = getattr(client, "clews_check", None)
    for future in _completed(as_completed(futures), client, check):
        if future.status != "finished":
            summary["lost_parts"].append({"part": future.key, "error": _one_line(future.exception())})
            continue
        part = future.result()
        summary["parts_written"] += 1
        for status, count in part["counts"].items():
            summary["this_run"][status] += count
        summary["audio_seconds"] += part["audio_seconds"]
        summary["task_seconds"] += part["seconds"]
        summary["failed_tracks"].extend(part["failed"])
        if on_part is not None:
            on_part(part)
