"""Training-item throughput: memmap store loader vs decoding audio the published way.

    .venv/bin/python benchmarks/loader.py [--store STORE] [--json] [--batches 20]

One item = one anchor + (n_per_class − 1) positives, each a 150 s block cut into 8 shingles of
20 s: ``(4, 8, 84, 200)``. Prints one JSON object with

- ``items_per_s``: ``make_train_loader`` with ONE worker process, no augmentation (float16 items);
- ``items_per_s_f32``: the same with float32 items out of the loader;
- ``items_per_s_aug``: the same loader, batches converted to float32 and augmented in the main
  process with :class:`~clews_pipe.features.augment.CQAugment` at the SHS100K probabilities
  (SpecAugment 0.4, time stretch 0.3, pitch roll 0.5), on the CPU with ``--threads`` torch
  threads (default 1: more threads than free cores makes torch's CPU kernels spin and run
  10-100× slower on a shared machine);
- ``items_per_s_decode``: the same items produced the published way in one process: decode each
  track's 150 s block with PyAV + soxr (``decode_audio``), cut 8 shingles of 20 s of waveform
  (repeat-padded) and run the nnAudio CQT (``build_cqt``) per shingle;
- ``speedup`` = items_per_s / items_per_s_decode.

Without ``--store``, a store of synthetic float16 frames (60 cliques × 3 tracks of 200–400 s) is
built in a temporary folder; the decode path uses the store's source ``path`` column when those
audio files exist, otherwise a small synthetic corpus (``demo_corpus.generate_corpus``, 150–180 s
tracks, mostly mp3) is rendered for it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SHS_AUGMENT = {
    "specaugment": {"p": 0.4, "max_freq": 0.15, "max_time": 0.15},
    "timestretch": {"p": 0.3, "min": 0.6, "max": 1.8},
    "pitchroll": {"p": 0.5, "max": 12},
}


def build_synthetic_store(path: Path, cliques: int = 60, per_clique: int = 3, seed: int = 0) -> None:
    from clews_pipe.store import create_store

    rng = np.random.default_rng(seed)
    writer = create_store(path, backend="zarr")
    records, feats = [], []
    for c in range(cliques):
        for v in range(per_clique):
            n = int(rng.integers(2000, 4001))
            tid = f"t{c:04d}-{v}"
            records.append(dict(track_id=tid, clique=f"C-{c:04d}", version=f"V-{c:04d}-{v}",
                                split="train", title="", artist="", path="", duration=n / 10.0,
                                status="ok", error=""))
            feats.append(rng.random((n, 84), dtype=np.float32).astype(np.float16))
    writer.write_part("bench", records, feats)
    writer.consolidate()


def time_loader(store, batches: int, batch_size: int, out_dtype, augment=None) -> float:
    from clews_pipe.training.dataset import make_train_loader

    loader = make_train_loader(store, {"n_per_class": 4}, batch_size, seed=0, workers=1,
                               out_dtype=out_dtype)
    gen = torch.Generator().manual_seed(0)
    it = iter(loader)
    next(it)  # worker start-up excluded
    n_items, t0 = 0, time.perf_counter()
    for _ in range(batches):
        try:
            x, clique, track = next(it)
        except StopIteration:
            loader.batch_sampler.set_epoch(loader.batch_sampler.epoch + 1)
            it = iter(loader)
            x, clique, track = next(it)
        if augment is not None:
            x = augment(x.float(), gen, inplace=True)  # .float() already made the copy
        n_items += x.shape[0] // 4
    return n_items / (time.perf_counter() - t0)


def decode_paths(store, tmp: Path, n: int) -> list[str]:
    paths = [p for p in store.index["path"].astype(str).tolist() if p and os.path.exists(p)]
    if len(paths) >= n:
        return paths[:n]
    from clews_pipe.datasets.demo_corpus import generate_corpus

    corpus = tmp / "corpus"
    generate_corpus(corpus, cliques=2, seed=0, versions_min=2, versions_max=2,
                    duration_min=150.0, duration_max=180.0)
    files = sorted(p for p in (corpus / "audio").rglob("*") if p.suffix in (".mp3", ".flac", ".ogg", ".wav"))
    return [str(p) for p in files][:n]


def time_decode(paths: list[str], items: int) -> float:
    from clews_pipe.features.cqt import build_cqt
    from clews_pipe.features.cqt_params import CQTParams
    from clews_pipe.audio.decode import decode_audio

    sr, block, shingle = 16000, 150 * 16000, 20 * 16000
    cqt = build_cqt(CQTParams()).eval()
    n_shingles = 8
    starts = np.arange(n_shingles) * shingle
    pos = (starts[:, None] + np.arange(shingle)[None, :]) % block  # repeat-padded last shingle

    def one_track(path):
        audio = decode_audio(path, samplerate=sr, max_seconds=150.0).waveform
        wave = np.resize(audio, block)  # repeat-pad a shorter track to the 150 s block
        with torch.inference_mode():
            return cqt(torch.from_numpy(wave[pos]))  # (8, 84, 200)

    one_track(paths[0])  # warm-up (kernels, codecs)
    t0 = time.perf_counter()
    for i in range(items):
        x = torch.stack([one_track(paths[(4 * i + k) % len(paths)]) for k in range(4)])
        assert x.shape == (4, 8, 84, 200)
    return items / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="existing feature store (default: build a synthetic one)")
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--decode-items", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the main process (augmentation, decode path); the "
                             "loader worker uses 1. Default 1: with 2 cores, worker + main = 2")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from clews_pipe.features.augment import CQAugment
    from clews_pipe.store import open_store

    with tempfile.TemporaryDirectory(prefix="clews-loader-bench-") as tmp:
        tmp = Path(tmp)
        store_path = Path(args.store) if args.store else tmp / "store"
        if not args.store:
            build_synthetic_store(store_path)
        store = open_store(store_path)
        result = {
            "store": str(args.store or "synthetic"),
            "batch_size": args.batch_size,
            "batches": args.batches,
            "loader_workers": 1,
            "torch_threads": torch.get_num_threads(),
        }
        result["items_per_s"] = time_loader(store, args.batches, args.batch_size, torch.float16)
        result["items_per_s_f32"] = time_loader(store, args.batches, args.batch_size, torch.float32)
        augment = CQAugment(SHS_AUGMENT)
        result["items_per_s_aug"] = time_loader(
            store, args.batches, args.batch_size, torch.float16, augment=augment
        )
        paths = decode_paths(store, tmp, 4)
        result["decode_files"] = [Path(p).suffix for p in paths]
        result["items_per_s_decode"] = time_decode(paths, args.decode_items)
        result["speedup"] = result["items_per_s"] / result["items_per_s_decode"]
        store.close()
    for key, value in result.items():
        if isinstance(value, float):
            result[key] = round(value, 3)
    print(json.dumps(result, indent=None if args.json else 1))


if __name__ == "__main__":
    sys.exit(main())
