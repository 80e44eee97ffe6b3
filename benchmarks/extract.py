"""Extraction throughput: seconds of audio per wall-second, one process vs the Dask job.

    python benchmarks/extract.py --json [--corpus DIR] [--tracks N] [--workers 2]

(a) one process decodes + CQTs every track sequentially (torch 1 thread);
(b) the extract job (LocalCluster, ``--workers`` single-threaded processes) on the same files,
    timed both on an already started, warmed-up cluster (``job``) and end to end including the
    cluster start (``cold``); bytes stored per hour of audio. Prints one JSON object.
(a) and (b) alternate ``--repeats`` times so that both see the same background load.
Without ``--corpus`` a synthetic Discogs-VI corpus of ``--tracks`` tracks is generated first.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def sequential(paths: list[str], samplerate: int, max_seconds: float, impl: str) -> dict:
    import torch

    from clews_pipe.audio.decode import AudioDecodeError, decode_audio
    from clews_pipe.extract.job import worker_extractor

    torch.set_num_threads(1)
    extractor = worker_extractor(_cqt_params(), impl)
    audio_seconds = decode_s = cqt_s = 0.0
    started = time.perf_counter()
    for path in paths:
        t0 = time.perf_counter()
        try:
            decoded = decode_audio(path, samplerate=samplerate, max_seconds=max_seconds)
        except AudioDecodeError:
            continue
        t1 = time.perf_counter()
        extractor(decoded.waveform)
        t2 = time.perf_counter()
        decode_s += t1 - t0
        cqt_s += t2 - t1
        audio_seconds += decoded.duration
    wall = time.perf_counter() - started
    return {"audio_seconds": round(audio_seconds, 2), "wall_seconds": round(wall, 3),
            "realtime_factor": round(audio_seconds / wall, 1),
            "decode_realtime_factor": round(audio_seconds / decode_s, 1),
            "cqt_realtime_factor": round(audio_seconds / cqt_s, 1)}


def _sequential_in_child(paths, impl, barrier, queue) -> None:
    sequential(paths[:1], 16000, 600.0, impl)  # imports + kernels outside the timed window
    barrier.wait()
    started = time.time()
    result = sequential(paths, 16000, 600.0, impl)
    queue.put((started, time.time(), result["audio_seconds"]))


def independent_processes(paths: list[str], n: int, impl: str) -> float:
    """Ceiling for (b): ``n`` plain processes, each running (a) on its share of the files, started
    together; seconds of audio per wall-second. Shows what the shared CPUs allow right now."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_sequential_in_child, args=(paths[k::n], impl, barrier, queue)) for k in range(n)]
    for proc in procs:
        proc.start()
    results = [queue.get() for _ in procs]
    for proc in procs:
        proc.join()
    wall = max(r[1] for r in results) - min(r[0] for r in results)
    return sum(r[2] for r in results) / wall


def _cqt_params():
    from clews_pipe.features.cqt_params import CQTParams

    return CQTParams()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (the default output)")
    parser.add_argument("--corpus", type=Path, help="an existing Discogs-VI-layout corpus (meta + audio/)")
    parser.add_argument("--tracks", type=int, default=32, help="tracks of the generated corpus")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--part-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="alternating (a)/(b) measurements; medians reported")
    parser.add_argument("--backend", default="zarr")
    parser.add_argument("--cqt-impl", default="trimmed", choices=["trimmed", "nnaudio"])
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    from clews_pipe.datasets.catalogs import load_catalog
    from clews_pipe.datasets.demo_corpus import generate_corpus
    from clews_pipe.extract.config import extract_config
    from clews_pipe.extract.job import run_extract, warm_worker

    with tempfile.TemporaryDirectory(prefix="clews-bench-extract-") as tmp:
        tmp = Path(tmp)
        if args.corpus is None:
            corpus = generate_corpus(tmp / "corpus", cliques=max(1, args.tracks // 2), seed=0, versions_min=2,
                                     versions_max=2, workers=args.workers)
            meta, audio = corpus["meta"], corpus["audio"]
        else:
            meta, audio = str(args.corpus), str(args.corpus / "audio")
        catalog = load_catalog("discogs-vi", meta, audio)
        paths = catalog.loc[catalog["status"] == "pending", "path"].tolist()

        # (a) and (b) alternate, so that both see the same background load; medians are reported
        common = dict(dataset="discogs-vi", meta=meta, audio=audio, backend=args.backend, part_size=args.part_size,
                      cqt_impl=args.cqt_impl, progress=False, workers=args.workers)
        ones, jobs, ceilings = [], [], []
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          silence_logs=logging.WARNING) as cluster:
            with Client(cluster) as client:  # steady state: workers imported and built their kernels
                client.run(warm_worker, _cqt_params(), args.cqt_impl)
            for rep in range(args.repeats):
                ones.append(sequential(paths, 16000, 600.0, args.cqt_impl))
                ceilings.append(independent_processes(paths, args.workers, args.cqt_impl))
                jobs.append(run_extract(extract_config(out=str(tmp / f"warm{rep}.store"),
                                                       scheduler=cluster.scheduler_address, **common)))
        t0 = time.perf_counter()
        cold = run_extract(extract_config(out=str(tmp / "cold.store"), **common))
        cold_wall = time.perf_counter() - t0
        store_bytes = _dir_bytes(tmp / "warm0.store")

    one = sorted(ones, key=lambda r: r["realtime_factor"])[len(ones) // 2]
    job_rts = [j["audio_seconds"] / j["job_seconds"] for j in jobs]
    warm = jobs[0]
    job_rt = float(np.median(job_rts))
    result = {
        "benchmark": "extract",
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "tracks": len(paths),
        "audio_hours": round(one["audio_seconds"] / 3600, 4),
        "a_sequential_one_process_median": one,
        "cqt_impl": args.cqt_impl,
        "b_job_workers": args.workers,
        "b_job_realtime_factor": round(job_rt, 1),
        "b_job_seconds": [round(j["job_seconds"], 3) for j in jobs],
        "a_realtime_factors": [r["realtime_factor"] for r in ones],
        "b_realtime_factors": [round(x, 1) for x in job_rts],
        "b_cold_realtime_factor_incl_cluster_start": round(cold["audio_seconds"] / cold_wall, 1),
        "b_cold_wall_seconds": round(cold_wall, 3),
        "speedup_b_over_a": round(job_rt / one["realtime_factor"], 2),
        "ceiling_independent_processes_realtime_factors": [round(x, 1) for x in ceilings],
        "ceiling_speedup_over_a": round(float(np.median(ceilings)) / one["realtime_factor"], 2),
        "realtime_factor_per_core": round(job_rt / args.workers, 1),
        "store_bytes_per_audio_hour": int(store_bytes / (warm["audio_seconds"] / 3600)),
        "raw_float16_bytes_per_audio_hour": 10 * 3600 * 84 * 2,
        "goals": {"speedup_b_over_a >= 1.6": job_rt / one["realtime_factor"] >= 1.6,
                  "realtime_factor_per_core >= 200": job_rt / args.workers >= 200},
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
