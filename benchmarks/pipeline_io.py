"""Pipeline I/O benchmark: demo-corpus rendering, audio decoding, catalog loading. Prints JSON.

    .venv/bin/python benchmarks/pipeline_io.py                       # all three, defaults
    .venv/bin/python benchmarks/pipeline_io.py --only corpus --cliques 50 --workers 2
    .venv/bin/python benchmarks/pipeline_io.py --only decode
    .venv/bin/python benchmarks/pipeline_io.py --only catalog --tracks 500000 --present 0.2

- corpus: ``generate_corpus`` with the default clique sizes (2-6) and durations (40-100 s);
  reports wall seconds, CPU seconds (this process and its workers) and audio seconds per
  wall / CPU second (the wall time depends on what else shares the cores).
- decode: ``decode_audio`` of a 16 kHz mono mp3 (the demo corpus' format) and of a 44.1 kHz
  stereo 128 kbit/s mp3 (typical of real downloads), 120 s each, plus a 600 s file cut at
  ``max_seconds=60`` (decoding stops early); reports seconds of audio per wall second.
- catalog: a Discogs-VI light split of ``--tracks`` youtube ids, about 4 per clique,
  an audio tree where a fraction ``--present`` of them exist as empty files (half of the
  two-letter folders in upper case), then ``load_catalog`` timed (without .meta files, and
  with them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def bench_corpus(work: Path, cliques: int, workers: int, seed: int) -> dict:
    from clews_pipe.datasets.demo_corpus import generate_corpus

    import resource

    def cpu_seconds() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    cpu_before = cpu_seconds()
    summary = generate_corpus(work / "corpus", cliques=cliques, seed=seed, workers=workers)
    cpu = cpu_seconds() - cpu_before
    return {
        "cliques": cliques,
        "workers": workers,
        "tracks": summary["tracks"],
        "audio_hours": round(summary["audio_seconds"] / 3600, 3),
        "wall_s": summary["elapsed_s"],
        "audio_s_per_wall_s": round(summary["audio_seconds"] / summary["elapsed_s"], 1),
        "cpu_s": round(cpu, 1),  # all processes: what the job costs whatever else runs on the machine
        "audio_s_per_cpu_s": round(summary["audio_seconds"] / cpu, 1),
    }


def _music(seconds: float, sr: int, channels: int) -> np.ndarray:
    from clews_pipe.datasets.demo_corpus import _make_song, _render_version

    wave, _ = _render_version(_make_song(0, 0), 0, 0, 0, seconds, sr)
    if channels == 2:
        wave = np.stack([wave, np.roll(wave, 50)], axis=1)
    return wave


def _timed_decode(path: Path, repeats: int = 3, **kw) -> tuple[float, float]:
    from clews_pipe.audio.decode import decode_audio

    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = decode_audio(path, **kw)
        best = min(best, time.perf_counter() - start)
    return out.duration, best


def bench_decode(work: Path) -> dict:
    import av
    import soundfile as sf

    results = {}
    mono16 = work / "mono16k.mp3"
    sf.write(mono16, _music(120.0, 16000, 1), 16000, format="MP3")
    stereo44 = work / "stereo44k.mp3"
    wave = _music(120.0, 44100, 2)
    with av.open(str(stereo44), "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=44100, layout="stereo")
        stream.codec_context.bit_rate = 128000
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave.T, dtype=np.float32), format="fltp", layout="stereo")
        frame.sample_rate = 44100
        for packet in list(stream.encode(frame)) + list(stream.encode(None)):
            container.mux(packet)
    for name, path in (("mp3_16k_mono", mono16), ("mp3_44k1_stereo_128k", stereo44)):
        seconds, wall = _timed_decode(path)
        results[name] = {"audio_s": round(seconds, 2), "wall_s": round(wall, 4), "audio_s_per_wall_s": round(seconds / wall, 1)}
    # a 10-minute file asked for its first minute: decoding stops early
    long = work / "long.mp3"
    sf.write(long, np.tile(_music(60.0, 16000, 1), 10), 16000, format="MP3")
    seconds, wall = _timed_decode(long, max_seconds=60.0)
    results["mp3_600s_max_seconds_60"] = {"audio_s": round(seconds, 2), "wall_s": round(wall, 4)}
    return results


def _youtube_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    alphabet = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", dtype=np.uint8)
    raw = alphabet[rng.integers(0, 64, size=(int(n * 1.01) + 10, 11))]
    ids = np.unique(raw.view("S11").ravel())
    return rng.permutation(ids)[:n].astype(str)


def bench_catalog(work: Path, tracks: int, present: float, seed: int) -> dict:
    from clews_pipe.datasets.catalogs import load_catalog

    rng = np.random.default_rng(seed)
    ids = _youtube_ids(rng, tracks)
    n_cliques = max(1, tracks // 4)  # about 4 versions per clique
    clique_of = rng.integers(0, n_cliques, size=tracks)
    content: dict[str, list] = {}
    for i, (ytid, c) in enumerate(zip(ids.tolist(), clique_of.tolist())):
        content.setdefault(f"C-{c:07d}", []).append({"version_id": f"V-{i:07d}", "track_title": f"title {i}", "youtube_id": ytid})
    meta = work / "meta"
    meta.mkdir()
    (meta / "DiscogsVI-YT-20240701-light.json.train").write_text(json.dumps(content))
    audio = work / "audio"
    chosen = ids[rng.random(tracks) < present]
    start = time.perf_counter()
    for i, ytid in enumerate(chosen.tolist()):
        prefix = ytid[:2].upper() if hash(ytid[:2].lower()) % 2 else ytid[:2]
        folder = audio / prefix
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{ytid}.{('mp3', 'mp4', 'm4a')[i % 3]}").touch()
        if i % 2 == 0:
            (folder / f"{ytid}.meta").write_text('{"artist": "a", "title": "t"}')
    build = time.perf_counter() - start
    audio.mkdir(exist_ok=True)
    timings = {}
    for read_meta in (False, True):
        start = time.perf_counter()
        df = load_catalog("discogs-vi", meta, audio, splits=("train",), read_meta_files=read_meta)
        timings["with_meta_files" if read_meta else "without_meta_files"] = round(time.perf_counter() - start, 3)
    return {
        "tracks": tracks,
        "files_present": int(len(chosen)),
        "meta_files": int((len(chosen) + 1) // 2),
        "found": int((df["status"] == "pending").sum()),
        "tree_build_s": round(build, 1),
        "load_catalog_s": timings,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("corpus", "decode", "catalog"), action="append")
    parser.add_argument("--cliques", type=int, default=50)
    parser.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 8))
    parser.add_argument("--tracks", type=int, default=500_000)
    parser.add_argument("--present", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp dir, removed)")
    args = parser.parse_args()
    parts = args.only or ["corpus", "decode", "catalog"]
    work = Path(tempfile.mkdtemp(prefix="bench-io-", dir=args.workdir))
    report: dict = {"cpu_count": os.cpu_count(), "loadavg_1min": round(os.getloadavg()[0], 2)}
    try:
        if "corpus" in parts:
            report["corpus"] = bench_corpus(work, args.cliques, args.workers, args.seed)
        if "decode" in parts:
            (work / "decode").mkdir()
            report["decode"] = bench_decode(work / "decode")
        if "catalog" in parts:
            (work / "catalog").mkdir()
            report["catalog"] = bench_catalog(work / "catalog", args.tracks, args.present, args.seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
