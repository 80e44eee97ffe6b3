"""Time one CLEWS training step (forward + loss + backward + Adam) on random CQT shingles.

    .venv/bin/python benchmarks/model_step.py --config configs/tiny-cpu.yaml [--repeats 3]

Prints JSON: batch geometry, parameter count, wall and CPU seconds per step (medians over repeats
after one warm-up step) and the load average (wall times on a shared machine are only meaningful
with it). Batch = training.batch_size anchors × data.n_per_class tracks × shingles per block.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tiny-cpu.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from clews_pipe.model.run_config import load_train_config
    from clews_pipe.training.loss import loss_from_config
    from clews_pipe.model.network import CLEWS, count_parameters

    conf = load_train_config(args.config, args.overrides)
    torch.manual_seed(conf.training.seed)
    model = CLEWS(conf.model, samplerate=conf.data.samplerate).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=conf.training.lr)

    n_tracks = conf.training.batch_size * conf.data.n_per_class
    n_shingles = math.ceil(conf.data.block_len / conf.data.shingle_hop)
    n_frames = model.shingle_frames(conf.data.shingle_len)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n_tracks, n_shingles, model.cqt_params.n_bins, n_frames, generator=generator)
    clique = torch.arange(conf.training.batch_size).repeat_interleave(conf.data.n_per_class)
    track = torch.arange(n_tracks)

    def step() -> tuple[float, float]:
        start, cpu_start = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        z = model.embed(x)
        loss, _, _ = loss_from_config(z, clique, track, conf.model.loss)
        loss.backward()
        optimizer.step()
        return time.perf_counter() - start, time.process_time() - cpu_start

    step()  # warm-up
    measured = [step() for _ in range(args.repeats)]
    times = [wall for wall, _ in measured]
    cpu = [used for _, used in measured]
    print(json.dumps({
        "config": args.config,
        "parameters": count_parameters(model),
        "tracks": n_tracks,
        "shingles_per_track": n_shingles,
        "segments": n_tracks * n_shingles,
        "input": [n_tracks, n_shingles, model.cqt_params.n_bins, n_frames],
        "threads": torch.get_num_threads(),
        "step_seconds_median": round(statistics.median(times), 3),
        "step_seconds": [round(t, 3) for t in times],
        # CPU seconds (all threads) per step: ≈ threads × wall time on an otherwise idle machine
        "step_cpu_seconds_median": round(statistics.median(cpu), 3),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
