"""One prepared check of the GPU code paths: evaluator distances, a bf16-mixed training step,
embedding throughput.

    # on a CUDA machine (see README "GPU check" for bringing the wheels it lacks):
    PYTHONPATH=src python benchmarks/gpu_check.py --json --device cuda [--wheels WHEELS_DIR]
    # here, as in the test suite:
    PYTHONPATH=src python benchmarks/gpu_check.py --json --device cpu --quick
    # fetch the wheels a bare accelerator machine lacks (run where a package index is reachable):
    python benchmarks/gpu_check.py --fetch-wheels shared/wheels

Sections of the JSON object:

``evaluator``  random clustered fp16 embeddings, N x S x D (20,000 x 57 x 1024 on CUDA; quick:
  small). Candidates go through :class:`CandidateFeed` (resident on the device when they fit).
  For every query-row tile against every candidate tile on and above the diagonal (the
  symmetric run) until ``--eval-budget-s``: ``gemm_s`` = the segment-distance matmuls alone,
  timed per precision fp32 / tf32 / bf16; ``bpwr_s`` = the bpwr-10 reduction of those distances
  (total tile time minus its matmul); ``tflops`` achieved (2·(tile·S)²·(D+2) flops per tile) and
  the fraction of the device's dense bf16 / fp32 peak (a table of known devices;
  ``peak_source``). ``projected_dvi_test_s``: the full DVI test matrix (116,197 tracks, bpwr-10,
  symmetric) projected from the measured time per tile pair (∝ N²), for fp32 and bf16.
  ``metrics_equal_fp32``: on a ``--subset`` of tracks, the bf16 matmul + float32 re-computation
  of the deciding values (``refine_block``) gives per-query AP / R1 / NAR equal to fp32.
``training``  one Fabric step loop of ``--config`` (configs/dvi-clews.yaml; quick on CPU:
  configs/tiny-cpu.yaml) with ``--precision`` (bf16-mixed), data from a synthetic hdf5 store on
  local disk (``--workdir``) through ``make_train_loader`` with the config's workers:
  ``segments_per_s``, ``step_s``, ``data_wait_s`` and ``data_wait_fraction``.
``embedding``  ``model.embed`` on 300 s tracks (57 shingles of 20 s every 5 s, the DVI
  evaluation): ``tracks_per_s`` in float32 (as the evaluator) and under bf16 autocast.

Imports only what it uses: torch, numpy, numba (bpwr on CPU), h5py / pyarrow / pandas (the
store), lightning (Fabric), and for the training / embedding sections omegaconf + nnAudio
(+ scipy); never zarr, dask, faiss, av or soxr.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WHEELS = ("nnAudio", "omegaconf", "antlr4-python3-runtime", "PyYAML", "scipy")  # pinned to this env's versions
DVI_TEST_TRACKS = 116_197

# dense (no sparsity) peak TFLOP/s: (bf16, tf32, fp32), from the vendors' data sheets
PEAKS = {
    "H100 SXM": (989.4, 494.7, 66.9), "H100 PCIe": (756.0, 378.0, 51.2), "H100 NVL": (835.0, 417.5, 60.0),
    "H200": (989.4, 494.7, 66.9), "A100": (312.0, 156.0, 19.5), "L40S": (362.1, 183.0, 91.6),
    "A10": (125.0, 62.5, 31.2),
}


def fetch_wheels(target: Path) -> None:
    """Download the wheels a bare accelerator machine lacks (CPython 3.11, manylinux x86-64)."""
    from importlib.metadata import PackageNotFoundError, version

    def pinned(name: str) -> str:
        try:
            return f"{name}=={version(name)}"
        except PackageNotFoundError:
            return name

    target.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--python-version", "3.11",
           "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
           "--platform", "manylinux_2_28_x86_64", "--no-deps",
           "-d", str(target), *(pinned(w) for w in WHEELS)]
    subprocess.run(cmd, check=True)


def bring_wheels(wheels: Path | None) -> None:
    """Install the wheels in ``wheels`` (no index) into ``wheels/site`` when a module is missing,
    and put that folder on ``sys.path``."""
    if wheels is None:
        return
    site = wheels / "site"
    missing = []
    for module in ("omegaconf", "nnAudio", "scipy", "yaml"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing and not site.is_dir():
        files = sorted(str(p) for p in wheels.glob("*.whl"))
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--target", str(site), *files],
                       check=True, stdout=subprocess.DEVNULL)
    if site.is_dir():
        sys.path.insert(0, str(site))


def device_peaks(torch, device: str) -> tuple[dict, str]:
    if not device.startswith("cuda"):
        return {"bf16": None, "tf32": None, "fp32": None}, "cpu: no peak table"
    name = torch.cuda.get_device_name(0)
    for key, (bf16, tf32, fp32) in PEAKS.items():
        words = key.split()
        if all(w.lower() in name.lower() for w in words):
            return {"bf16": bf16, "tf32": tf32, "fp32": fp32}, f"table: {key}"
    if "H100" in name:
        bf16, tf32, fp32 = PEAKS["H100 SXM"]
        return {"bf16": bf16, "tf32": tf32, "fp32": fp32}, "table: H100 SXM (closest)"
    return {"bf16": None, "tf32": None, "fp32": None}, f"unknown device {name!r}"


def sync(torch, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------ evaluator
def clustered(np, n: int, s: int, d: int, seed: int = 0, noise: float = 3.0):
    rng = np.random.default_rng(seed)
    n_cliques = max(2, n // 4)
    clique = rng.integers(0, n_cliques, n)
    centers = rng.standard_normal((n_cliques, d)).astype(np.float32)
    z = np.empty((n, s, d), dtype=np.float16)
    for a in range(0, n, 1024):
        b = min(n, a + 1024)
        z[a:b] = centers[clique[a:b]][:, None, :] + noise * rng.standard_normal((b - a, s, d)).astype(np.float32)
    n_valid = rng.integers(max(1, s // 4), s + 1, n)
    mask = np.arange(s)[None, :] >= n_valid[:, None]
    z[mask] = 0
    return z, mask, clique


def check_evaluator(args, torch, np) -> dict:
    from clews_pipe.retrieval.tiles import CandidateFeed, _matmul_mode, lowp_segment_distances, tile_distances
    from clews_pipe.retrieval.segment_distances import cross_segment_distances

    device = args.device
    n, s, d, tile = args.n, args.s, args.d, args.tile
    z, mask, clique = clustered(np, n, s, d)
    row_bytes = s * d * 2 + s
    feed = CandidateFeed(lambda a, b: (z[a:b], mask[a:b]), n, row_bytes, device, block_rows=4 * tile)
    n_t = -(-n // tile)
    pairs = [(qi, ci) for qi in range(n_t) for ci in range(qi, n_t)]
    flops_per_tile = 2.0 * (tile * s) ** 2 * (d + 2)
    result = {"N": n, "S": s, "D": d, "tile": tile, "feed": feed.mode, "tile_pairs_total": len(pairs)}
    peaks, source = device_peaks(torch, device)
    result["peak_tflops"], result["peak_source"] = peaks, source

    def gemm_only(precision: str, budget: float) -> tuple[float, int]:
        done, spent = 0, 0.0
        with torch.inference_mode(), _matmul_mode(precision):
            for qi, ci in pairs:
                q, mq = feed.get(qi * tile, min(n, (qi + 1) * tile))
                c, mc = feed.get(ci * tile, min(n, (ci + 1) * tile))
                sync(torch, device)
                t0 = time.perf_counter()
                qf, cf = q.to(device).float(), c.to(device).float()
                if precision == "fp32":
                    out = cross_segment_distances(qf, cf, mq.to(device), mc.to(device))
                else:
                    out = lowp_segment_distances(qf, cf, mq.to(device), mc.to(device), precision)
                sync(torch, device)
                spent += time.perf_counter() - t0
                del out
                done += 1
                if spent > budget:
                    break
        return spent, done

    gemm_only("fp32", 0.0)  # warm-up (kernels, allocator)
    per_precision = {}
    for precision in ("fp32", "tf32", "bf16"):
        spent, done = gemm_only(precision, args.eval_budget_s / 6)
        tflops = flops_per_tile * done / spent / 1e12
        per_precision[precision] = {
            "tiles": done, "gemm_s_per_tile": round(spent / done, 5), "tflops": round(tflops, 2),
            "fraction_of_bf16_peak": round(tflops / peaks["bf16"], 3) if peaks["bf16"] else None,
            "fraction_of_own_peak": round(tflops / peaks["fp32" if precision == "fp32" else precision], 3)
            if peaks["bf16"] else None,
        }
    result["gemm"] = per_precision

    # full tiles: matmul + bpwr-10 reduction (the evaluator's tile_distances), fp32 and bf16
    for precision in ("fp32", "bf16"):
        spent, done = 0.0, 0
        for qi, ci in pairs:
            q, mq = feed.get(qi * tile, min(n, (qi + 1) * tile))
            c, mc = feed.get(ci * tile, min(n, (ci + 1) * tile))
            sync(torch, device)
            t0 = time.perf_counter()
            tile_distances(q, mq, c, mc, "bpwr-10", args.memory_mb, device, diagonal=qi == ci, precision=precision)
            sync(torch, device)
            spent += time.perf_counter() - t0
            done += 1
            if spent > args.eval_budget_s / 4:
                break
        per_tile = spent / done
        gemm = per_precision[precision]["gemm_s_per_tile"]
        dvi_pairs = (-(-DVI_TEST_TRACKS // tile)) * ((-(-DVI_TEST_TRACKS // tile)) + 1) / 2
        result[f"tiles_{precision}"] = {
            "tiles": done, "tile_s": round(per_tile, 5), "bpwr_s_per_tile": round(max(per_tile - gemm, 0.0), 5),
            "bpwr_over_gemm": round(max(per_tile - gemm, 0.0) / gemm, 3),
            "projected_full_n_s": round(per_tile * len(pairs), 1),
            # (meaningful at S = 57, D = 1024: the DVI test shapes)
            "projected_dvi_test_s": round(per_tile * dvi_pairs, 1),
        }

    # bf16 + float32 re-computation gives the float32 metrics on a subset
    from clews_pipe.evaluation.distances import TileSettings, refine_block
    from clews_pipe.retrieval.metrics import query_metrics

    m = min(args.subset, n)
    zs, ms, cs = z[:m], mask[:m], clique[:m]
    zt, mt = torch.as_tensor(zs), torch.as_tensor(ms)
    exact = tile_distances(zt, mt, zt, mt, "bpwr-10", args.memory_mb, device, precision="fp32")
    approx = tile_distances(zt, mt, zt, mt, "bpwr-10", args.memory_mb, device, precision="bf16")
    differs = int((approx != exact).sum())
    settings = TileSettings(tile=tile, memory_mb=args.memory_mb, device=device, precision="fp32")
    own = np.arange(m)
    recomputed = refine_block(approx, 0, cs, cs, own, zs, ms, zs, ms, __import__("clews_pipe.retrieval.redux",
                              fromlist=["Redux"]).Redux.parse("bpwr-10"), settings)
    a, b = query_metrics(exact, cs, cs, own), query_metrics(approx, cs, cs, own)
    equal = all(np.array_equal(getattr(a, k), getattr(b, k), equal_nan=True) for k in ("ap", "r1", "nar"))
    result["metrics_equal_fp32"] = {"subset": m, "bf16_values_differing": differs, "recomputed_values": recomputed,
                                    "recomputed_fraction": round(recomputed / (m * m), 4), "equal": bool(equal),
                                    "MAP": round(float(np.nanmean(a.ap)), 4)}
    feed = None  # release the staging buffers (the closures above hold the name)
    return result


# ------------------------------------------------------------------------------------ training
def synthetic_store(root: Path, np, cliques: int, per_clique: int, seconds: float) -> Path:
    from clews_pipe.store import create_store

    rng = np.random.default_rng(0)
    writer = create_store(root, backend="hdf5")  # h5py: no zarr needed on the accelerator machine
    n_frames = int(seconds * 10)
    for c0 in range(0, cliques, 16):
        records, feats = [], []
        for c in range(c0, min(cliques, c0 + 16)):
            for v in range(per_clique):
                records.append(dict(track_id=f"c{c:05d}v{v}", clique=f"C{c}", split="train", status="ok",
                                    duration=seconds))
                feats.append((rng.random((n_frames, 84), dtype=np.float32) * 2).astype(np.float16))
        writer.write_part(f"p{c0:05d}", records, feats)
    writer.consolidate()
    return root


def check_training(args, torch, np, workdir: Path) -> dict:
    from lightning.fabric import Fabric

    from clews_pipe.features.augment import CQAugment
    from clews_pipe.training.dataset import make_train_loader
    from clews_pipe.store import open_store
    from clews_pipe.model.network import CLEWS
    from clews_pipe.model.run_config import load_train_config
    from clews_pipe.training.loss import loss_from_config

    store_path = synthetic_store(workdir / "train.store", np, args.train_cliques, 3, args.track_seconds)
    overrides = [f"data.store={store_path}"]
    if args.workers is not None:
        overrides.append(f"data.workers={args.workers}")
    if args.batch_size is not None:
        overrides.append(f"training.batch_size={args.batch_size}")
    conf = load_train_config(args.config, overrides)
    fabric = Fabric(accelerator="cuda" if args.device.startswith("cuda") else "cpu", devices=1,
                    precision=args.precision)
    loader = make_train_loader(open_store(store_path), conf.data, int(conf.training.batch_size), seed=0,
                               workers=int(conf.data.workers))
    torch.manual_seed(0)
    with fabric.init_module():
        model = CLEWS(conf.model, samplerate=int(conf.data.samplerate))
    optimizer = torch.optim.Adam(model.parameters(), lr=float(conf.training.lr))
    model, optimizer = fabric.setup(model, optimizer)
    model.mark_forward_method("embed")
    augment = CQAugment(conf.augment)
    generator = torch.Generator(device=fabric.device).manual_seed(0)
    waits, steps, segments = [], [], 0
    done, epoch = 0, 0
    while done < args.warmup + args.steps:
        loader.batch_sampler.set_epoch(epoch)
        for x, clique, track in _timed(loader, waits):
            t1 = time.perf_counter()
            x = x.to(fabric.device, non_blocking=True).float()
            with fabric.autocast():
                z = model.embed(augment(x, generator))
            loss, _, _ = loss_from_config(z.float(), clique.to(fabric.device), track.to(fabric.device), conf.model.loss)
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            optimizer.step()
            sync(torch, args.device)
            if done >= args.warmup:
                steps.append(time.perf_counter() - t1 + waits[-1])
                segments += int(x.shape[0] * x.shape[1])
            else:
                waits.pop()
            done += 1
            if done >= args.warmup + args.steps:
                break
        epoch += 1
    total = float(np.sum(steps))
    return {"config": str(Path(args.config).relative_to(REPO)) if Path(args.config).is_relative_to(REPO) else str(args.config),
            "precision": args.precision, "batch_anchors": int(conf.training.batch_size),
            "segments_per_step": segments // max(1, len(steps)), "workers": int(conf.data.workers),
            "steps": len(steps), "step_s": round(float(np.median(steps)), 4),
            "segments_per_s": round(segments / total, 1), "data_wait_s": round(float(np.median(waits)), 4),
            "data_wait_fraction": round(float(np.sum(waits)) / total, 4), "loss": round(float(loss.detach()), 4),
            "store": "synthetic hdf5 on local disk"}


def _timed(loader, waits: list):
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        waits.append(time.perf_counter() - t0)
        yield batch


def check_embedding(args, torch, np) -> dict:
    from clews_pipe.model.network import CLEWS
    from clews_pipe.model.run_config import load_train_config

    conf = load_train_config(args.config, [])
    torch.manual_seed(0)
    model = CLEWS(conf.model, samplerate=int(conf.data.samplerate)).to(args.device).eval()
    shingles = 57 if not args.quick else 5  # 300 s: 20 s shingles every 5 s
    x = torch.rand(args.embed_tracks, shingles, 84, 200, device=args.device)
    out = {}
    for label, ctx in (("fp32", None), ("bf16_autocast", torch.bfloat16)):
        with torch.inference_mode():
            for rep in range(2):
                sync(torch, args.device)
                t0 = time.perf_counter()
                if ctx is None:
                    model.embed(x)
                else:
                    with torch.autocast(device_type="cuda" if args.device.startswith("cuda") else "cpu", dtype=ctx):
                        model.embed(x)
                sync(torch, args.device)
                spent = time.perf_counter() - t0
        out[f"tracks_per_s_{label}"] = round(args.embed_tracks / spent, 2)
    out.update({"tracks": args.embed_tracks, "shingles_per_track": shingles})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object (the only output mode)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--wheels", type=Path, default=None, help="folder of wheels for what this machine lacks")
    parser.add_argument("--fetch-wheels", type=Path, default=None, help="download those wheels into this folder and exit")
    parser.add_argument("--sections", default="evaluator,training,embedding")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--s", type=int, default=None)
    parser.add_argument("--d", type=int, default=None)
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--memory-mb", type=float, default=None)
    parser.add_argument("--subset", type=int, default=None)
    parser.add_argument("--eval-budget-s", type=float, default=None)
    parser.add_argument("--config", default=None)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--train-cliques", type=int, default=None)
    parser.add_argument("--track-seconds", type=float, default=None)
    parser.add_argument("--embed-tracks", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if args.fetch_wheels is not None:
        fetch_wheels(args.fetch_wheels)
        return
    cuda = args.device.startswith("cuda")
    quick = args.quick
    defaults = dict(
        n=20_000 if cuda and not quick else (4096 if cuda else 128), s=57 if cuda or not quick else 8,
        d=1024 if cuda or not quick else 64, tile=1024 if cuda else 64, memory_mb=2048.0 if cuda else 16.0,
        subset=2000 if cuda else 64, eval_budget_s=240.0 if cuda and not quick else (60.0 if cuda else 1.0),
        config=str(REPO / "configs" / ("dvi-clews.yaml" if cuda or not quick else "tiny-cpu.yaml")),
        steps=10 if not quick else 1, warmup=3 if not quick else 1, workers=None if cuda else 0,
        batch_size=None if cuda or not quick else 2, train_cliques=200 if not quick else 8,
        track_seconds=240.0 if not quick else 70.0, embed_tracks=16 if cuda else 2,
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    bring_wheels(args.wheels)

    import numpy as np
    import torch

    if cuda and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device (use --device cpu)")
    if not cuda:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    result = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "torch": torch.__version__,
              "quick": quick, "cuda": torch.version.cuda if cuda else None}
    tmp = tempfile.TemporaryDirectory(dir=args.workdir)
    sections = args.sections.split(",")
    try:
        if "evaluator" in sections:
            result["evaluator"] = check_evaluator(args, torch, np)
        if "training" in sections:
            result["training"] = check_training(args, torch, np, Path(tmp.name))
        if "embedding" in sections:
            result["embedding"] = check_embedding(args, torch, np)
    finally:
        tmp.cleanup()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
