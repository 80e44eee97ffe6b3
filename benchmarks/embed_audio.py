"""``clews-pipe embed`` throughput: files decoded, shingled (model CQT) and embedded per second.

    .venv/bin/python benchmarks/embed_audio.py [--checkpoint CKPT] [--audio FILE] [--copies 6]
        [--batch 32] [--threads 1]

Defaults: the published tiny fixture checkpoint and its 47 s ``input.flac`` (44.1 kHz stereo
flac), copied ``--copies`` times. Prints one JSON object: wall seconds, files/s, seconds of audio
per wall second, segments/s (20 s windows every 5 s), and the same run's decode-only time.
"""

from __future__ import annotations

import argparse
import os
import json
import shutil
import tempfile
import time
from pathlib import Path

FIXTURE = Path(os.environ.get("CLEWS_TEST_FIXTURES", Path(__file__).resolve().parents[2] / "shared" / "fixtures")) / "official-clews-tiny"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", type=Path, default=FIXTURE / "checkpoint_best.ckpt")
    parser.add_argument("--audio", type=Path, default=FIXTURE / "input.flac")
    parser.add_argument("--copies", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from clews_pipe.embeddings.from_audio import collect_audio_jobs, embed_audio_files, load_file_embedding
    from clews_pipe.audio.decode import decode_audio
    from clews_pipe.model.checkpoint import load_model

    torch.set_num_threads(args.threads)
    model, _ = load_model(args.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        for i in range(args.copies):
            shutil.copy(args.audio, folder / f"{i:03d}{args.audio.suffix}")
        jobs = collect_audio_jobs([folder])
        t0 = time.perf_counter()
        seconds = sum(decode_audio(j.source).duration for j in jobs)
        decode_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        report = embed_audio_files(model, jobs, Path(tmp) / "out", shingle_hop=5.0, batch=args.batch,
                                   decode_workers=1)
        wall = time.perf_counter() - t0
        segments = sum(load_file_embedding(p).z.shape[0] for p in report.written)
    print(json.dumps({
        "files": len(jobs), "audio_s": round(seconds, 1), "segments": segments, "batch": args.batch,
        "threads": args.threads, "zdim": model.zdim, "wall_s": round(wall, 3),
        "files_per_s": round(len(jobs) / wall, 3), "audio_s_per_s": round(seconds / wall, 1),
        "segments_per_s": round(segments / wall, 2), "decode_only_s": round(decode_s, 3),
    }))


if __name__ == "__main__":
    main()
