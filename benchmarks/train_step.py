"""Training step time split into data wait, forward (augment + embed + loss) and backward (+ step).

    .venv/bin/python benchmarks/train_step.py --json [--store STORE] [--config configs/tiny-cpu.yaml]
        [--steps 12] [--workers 1] [--threads 1]

Without ``--store`` a synthetic store of random CQT frames (60 cliques × 3 tracks × 240 s) is
written to a temporary folder first. The goal: data wait < 5% of the step with the configured
DataLoader workers. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def synthetic_store(root: Path, cliques: int = 60, per_clique: int = 3, seconds: float = 240.0) -> Path:
    from clews_pipe.store import create_store

    rng = np.random.default_rng(0)
    writer = create_store(root / "bench.store")
    n_frames = int(seconds * 10)
    records, feats = [], []
    for c in range(cliques):
        split = "train" if c < int(0.8 * cliques) else "val"
        for v in range(per_clique):
            tid = f"c{c:03d}v{v}"
            records.append(
                dict(track_id=tid, clique=f"C{c}", version=f"V{c}-{v}", split=split, title="", artist="",
                     path="", duration=seconds, status="ok", error="")
            )
            feats.append(rng.random((n_frames, 84), dtype=np.float32).astype(np.float16))
    writer.write_part("p0", records, feats)
    writer.consolidate()
    return root / "bench.store"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--store", type=Path)
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "tiny-cpu.yaml")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the training process")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from clews_pipe.features.augment import CQAugment
    from clews_pipe.training.dataset import make_train_loader
    from clews_pipe.store import open_store
    from clews_pipe.model.run_config import load_train_config
    from clews_pipe.training.loss import loss_from_config
    from clews_pipe.model.network import CLEWS

    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    store_path = args.store or synthetic_store(Path(tmp.name))
    conf = load_train_config(args.config, [f"data.store={store_path}", f"data.workers={args.workers}"])
    store = open_store(store_path)
    loader = make_train_loader(store, conf.data, int(conf.training.batch_size), seed=0, workers=args.workers)
    torch.manual_seed(0)
    model = CLEWS(conf.model, samplerate=int(conf.data.samplerate))
    optimizer = torch.optim.Adam(model.parameters(), lr=float(conf.training.lr))
    augment = CQAugment(conf.augment)
    generator = torch.Generator().manual_seed(0)

    waits, forwards, backwards = [], [], []
    steps_needed = args.warmup + args.steps
    done = 0
    epoch = 0
    while done < steps_needed:
        loader.batch_sampler.set_epoch(epoch)
        it = iter(loader)
        while done < steps_needed:
            t0 = time.perf_counter()
            try:
                x, clique, track = next(it)
            except StopIteration:
                break
            x = x.float()
            t1 = time.perf_counter()
            z = model.embed(augment(x, generator))
            loss, _, _ = loss_from_config(z, clique, track, conf.model.loss)
            t2 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            t3 = time.perf_counter()
            if done >= args.warmup:
                waits.append(t1 - t0)
                forwards.append(t2 - t1)
                backwards.append(t3 - t2)
            done += 1
        epoch += 1

    step = np.array(waits) + np.array(forwards) + np.array(backwards)
    result = {
        "config": str(args.config.relative_to(REPO) if args.config.is_relative_to(REPO) else args.config),
        "store": str(store_path) if args.store else "synthetic (60 cliques × 3 × 240 s)",
        "segments_per_step": int(x.shape[0] * x.shape[1]),
        "steps": len(step),
        "workers": args.workers,
        "threads": args.threads,
        "step_s": round(float(np.median(step)), 4),
        "data_wait_s": round(float(np.median(waits)), 4),
        "forward_s": round(float(np.median(forwards)), 4),
        "backward_s": round(float(np.median(backwards)), 4),
        "data_wait_fraction": round(float(np.sum(waits) / np.sum(step)), 4),
        "segments_per_s": round(float(x.shape[0] * x.shape[1] * len(step) / np.sum(step)), 1),
        "load_average": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
