"""The Fabric training loop: DDP over any number of nodes, resumable, validated every epoch.

``train(conf, out_dir)`` is the library entry point behind ``clews-pipe train``. Under ``srun``
Fabric discovers nodes and ranks from SLURM's environment; on one machine with
``fabric.devices=N`` it starts the other N-1 processes itself.

Stopping early: SIGUSR1 (the SLURM time-limit warning, ``--signal=USR1@N`` / forwarded by
``slurm/train.sbatch``) or SIGTERM makes every rank stop at the next step boundary (the ranks agree
through the per-step all-reduce). The epoch in progress is dropped: ``checkpoint_last.ckpt`` holds
the last finished epoch, so a rerun (or the template's requeue) continues bit-identically with it.
``train`` then returns normally; :data:`STOP_SIGNAL` says which signal stopped it (None otherwise).
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from clews_pipe.config import to_yaml
from clews_pipe.errors import ClewsError

CSV_FIELDS = [
    "epoch",
    "train_loss",
    "val_loss",
    "val_MAP",
    "val_NAR",
    "lr",
    "segments_per_s",
    "data_wait_fraction",
    "epoch_s",
]
CONFIG_NAME = "configuration.yaml"
LAST_NAME = "checkpoint_last.ckpt"
BEST_NAME = "checkpoint_best.ckpt"


STOP_SIGNAL: str | None = None  # the signal that stopped the last ``train`` call early (None: it did not)


class _StopTraining(Exception):
    """Every rank agreed to stop at this step boundary (a stop signal reached at least one)."""


def rank_zero_print(fabric, text: str) -> None:
    """Once per job (``fabric.print`` prints once per node)."""
    if fabric.global_rank == 0:
        print(text, flush=True)


def make_fabric(fabric_conf: DictConfig, loggers: list | None = None):
    """A Fabric from the ``fabric`` config section (accelerator, devices, nodes, strategy, precision)."""
    from lightning.fabric import Fabric

    precision = str(fabric_conf.precision)
    if precision == "32":
        precision = "32-true"
    devices: Any = fabric_conf.devices
    strategy = fabric_conf.strategy
    if str(devices) in ("1",) and int(fabric_conf.nodes) == 1:
        strategy = "auto"
    return Fabric(
        accelerator=fabric_conf.accelerator,
        devices=devices,
        num_nodes=int(fabric_conf.nodes),
        strategy=strategy,
        precision=precision,
        loggers=loggers,
    )


def monitor_value(monitor: str, val_map: float, val_nar: float) -> float:
    """The quantity ReduceLROnPlateau and the best checkpoint follow (lower is better).

    ``nar_map`` (Discogs-VI): sqrt(NAR · (1 − MAP)) with NAR as a fraction; ``map`` (SHS100K): −MAP.
    """
    if monitor == "nar_map":
        return math.sqrt(max(val_nar / 100.0, 0.0) * max(1.0 - val_map, 0.0))
    if monitor == "map":
        return -val_map
    raise ClewsError(f"training.monitor: unknown value '{monitor}' (expected nar_map or map)")


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in CSV_FIELDS})


def _check_finite(value: float, what: str, epoch: int, step: int | None = None) -> None:
    if not math.isfinite(value):
        where = f"epoch {epoch}" + (f", step {step}" if step is not None else "")
        raise ClewsError(
            f"{what} is {value} at {where}: training diverged "
            "(lower training.lr, enable training.grad_clip, or check the store with `clews-pipe store verify`)"
        )


def train(conf: DictConfig, out_dir: str | Path) -> list[dict]:
    """Train (or resume) a CLEWS model; returns the metrics rows of the epochs run (rank 0)."""
    from lightning.fabric.loggers import TensorBoardLogger

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClewsError(f"{out}: cannot create the run directory ({exc.strerror})") from None
    from clews_pipe.training import stop

    global STOP_SIGNAL
    STOP_SIGNAL = None
    previous = stop.install()  # the CLI installed them already; a signal received since stays requested
    try:
        fabric = make_fabric(conf.fabric, loggers=[TensorBoardLogger(root_dir=str(out), name="tensorboard")])
        return fabric.launch(_train_on_rank, conf, out)
    finally:
        stop.reset()
        stop.restore(previous)


def _train_on_rank(fabric, conf: DictConfig, out: Path) -> list[dict]:
    from clews_pipe.features.augment import CQAugment
    from clews_pipe.features.dataset import make_train_loader
    from clews_pipe.features.store import open_store
    from clews_pipe.training.checkpoint import load_checkpoint, save_checkpoint
    from clews_pipe.training.model import CLEWS
    from clews_pipe.training import stop
    from clews_pipe.training.validate import validate

    tconf = conf.training
    rank, world = fabric.global_rank, fabric.world_size
    store = open_store(conf.data.store)
    _check_store_matches_model(store, conf)

    train_loader = make_train_loader(
        store,
        conf.data,
        split=conf.data.train_split,
        batch_size=int(tconf.batch_size),
        seed=int(tconf.seed),
        rank=rank,
        world_size=world,
        workers=int(conf.data.workers),
    )
    val_loader = make_train_loader(
        store,
        conf.data,
        split=conf.data.val_split,
        batch_size=int(tconf.batch_size),
        seed=int(tconf.seed) + 1,
        rank=rank,
        world_size=world,
        workers=int(conf.data.workers),
        shuffle=False,
        drop_last=False,
    )

    torch.manual_seed(int(tconf.seed))  # identical initial weights on every rank
    with fabric.init_module():
        model = CLEWS(conf.model, samplerate=int(conf.data.samplerate))
    optimizer = torch.optim.Adam(model.parameters(), lr=float(tconf.lr))
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=float(tconf.plateau_factor), patience=int(tconf.plateau_patience)
    )
    start_epoch, best = 0, math.inf
    last_path, best_path = out / LAST_NAME, out / BEST_NAME
    if last_path.exists():  # resume: restore before Fabric wraps model and optimizer
        state = load_checkpoint(last_path)
        _check_resume_config(state, conf, last_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"])
        best = float(state.get("best", math.inf))
        if start_epoch >= int(tconf.epochs):
            rank_zero_print(fabric, f"nothing to do: {out} has finished all {start_epoch} epochs "
                                    f"(training.epochs={int(tconf.epochs)}); raise training.epochs to train further")
        else:
            rank_zero_print(fabric, f"resuming {last_path} at epoch {start_epoch + 1} of {int(tconf.epochs)}")
    elif rank == 0:
        (out / CONFIG_NAME).write_text(to_yaml(conf))
    model, optimizer = fabric.setup(model, optimizer)
    model.mark_forward_method("embed")  # DDP gradient sync also when calling embed()
    augment = CQAugment(conf.augment)

    rows: list[dict] = []
    for epoch in range(start_epoch, int(tconf.epochs)):
        lr = optimizer.param_groups[0]["lr"]
        if lr < float(tconf.min_lr):
            first = "nothing to do: " if epoch == start_epoch and start_epoch > 0 else ""
            rank_zero_print(fabric, f"{first}learning rate {lr:.2e} < training.min_lr: stopping")
            break
        seed = _epoch_seed(int(tconf.seed), epoch, rank)
        torch.manual_seed(seed)  # CQTPrepare's noise and any other global draw
        generator = torch.Generator(device=fabric.device).manual_seed(seed)
        train_loader.batch_sampler.set_epoch(epoch)

        t_epoch = time.perf_counter()
        try:
            stats = _train_epoch(fabric, model, optimizer, train_loader, augment, generator, conf, epoch)
        except _StopTraining:
            global STOP_SIGNAL
            STOP_SIGNAL = stop.name() or "signal"
            rank_zero_print(
                fabric,
                f"stopped by {STOP_SIGNAL} during epoch {epoch + 1}: "
                + (f"{last_path} holds epoch {epoch}; the same command resumes at epoch {epoch + 1}"
                   if epoch else "no epoch finished yet; the same command starts again"),
            )
            fabric.barrier()
            return rows
        train_loss = float(stats[0] / max(stats[1], 1))
        _check_finite(train_loss, "training loss", epoch + 1)

        val = validate(fabric, model, val_loader, conf)
        _check_finite(val["loss"], "validation loss", epoch + 1)
        cost = monitor_value(str(tconf.monitor), val["MAP"], val["NAR"])
        scheduler.step(cost)
        is_best = cost < best
        best = min(best, cost)

        row = {
            "epoch": epoch + 1,
            "train_loss": round(train_loss, 6),
            "val_loss": round(val["loss"], 6),
            "val_MAP": round(val["MAP"], 6),
            "val_NAR": round(val["NAR"], 6),
            "lr": lr,
            "segments_per_s": round(float(stats[2]) / max(float(stats[4]) / fabric.world_size, 1e-9), 2),
            "data_wait_fraction": round(float(stats[3] / max(stats[4], 1e-9)), 4),
            "epoch_s": round(time.perf_counter() - t_epoch, 2),
        }
        rows.append(row)
        fabric.log_dict({f"metrics/{k}": v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
        if rank == 0:
            state = {
                "model": _unwrapped_state_dict(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch + 1,
                "best": best,
                "config": OmegaConf.to_container(conf, resolve=True),
                "metrics": row,
                "rng": {
                    "torch": torch.get_rng_state(),
                    "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
                    "epoch_seed": seed,
                },
            }
            save_checkpoint(last_path, state)
            if is_best:
                save_checkpoint(best_path, state)
            _append_csv(out / "metrics.csv", row)
            rank_zero_print(
                fabric,
                f"epoch {epoch + 1}: train_loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
                f"val_MAP {row['val_MAP']:.3f}  val_NAR {row['val_NAR']:.2f}  lr {lr:.1e}  "
                f"{row['segments_per_s']:.0f} seg/s  wait {100 * row['data_wait_fraction']:.1f}%"
                + ("  *" if is_best else "")
            )
        fabric.barrier()
    return rows


def _train_epoch(fabric, model, optimizer, loader, augment, generator, conf: DictConfig, epoch: int) -> torch.Tensor:
    """One pass over this rank's batches; returns the all-reduced
    ``[loss sum, steps, segments, data-wait seconds, train seconds]`` over ranks."""
    from clews_pipe.progress import progress_bar
    from clews_pipe.training import stop as stop_request
    from clews_pipe.training.loss import loss_from_config

    tconf = conf.training
    model.train()
    t_start = time.perf_counter()
    wait, loss_sum, steps, n_segments = 0.0, 0.0, 0, 0
    bar = progress_bar(
        total=len(loader),
        desc=f"epoch {epoch + 1}/{tconf.epochs}",
        disable=fabric.global_rank != 0,
        leave=False,
        dynamic_ncols=True,
        unit="batch",
    )
    it = iter(loader)
    try:
        while True:
            t0 = time.perf_counter()
            try:
                x, clique, track = next(it)
            except StopIteration:
                break
            x = x.to(fabric.device, non_blocking=True).float()
            clique = clique.to(fabric.device)
            track = track.to(fabric.device)
            wait += time.perf_counter() - t0
            with fabric.autocast():  # fabric.precision (bf16-mixed, ...) for a method other than forward
                z = model.embed(augment(x, generator))
            loss, _, _ = loss_from_config(z.float(), clique, track, conf.model.loss)  # distances in fp32
            value = float(loss.detach())
            # Every rank checks the mean over ranks, so all stop together and none waits in backward;
            # the same all-reduce carries the stop request (a signal that reached any rank).
            if fabric.world_size > 1:
                flags = torch.tensor([value, 1.0 if stop_request.requested else 0.0], dtype=torch.float64, device=fabric.device)
                flags = fabric.all_reduce(flags, reduce_op="sum")
                everywhere, stop = float(flags[0]) / fabric.world_size, float(flags[1]) > 0
            else:
                everywhere, stop = value, bool(stop_request.requested)
            if stop:
                raise _StopTraining()
            _check_finite(everywhere, "training loss", epoch + 1, steps)
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            if float(tconf.grad_clip) > 0:
                fabric.clip_gradients(model, optimizer, max_norm=float(tconf.grad_clip))
            optimizer.step()
            loss_sum += value
            n_segments += x.shape[0] * x.shape[1]
            steps += 1
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}")
    finally:
        bar.close()
    stats = torch.tensor(
        [loss_sum, steps, n_segments, wait, time.perf_counter() - t_start],
        dtype=torch.float64,
        device=fabric.device,
    )
    return fabric.all_reduce(stats, reduce_op="sum")


def _unwrapped_state_dict(model) -> dict:
    module = getattr(model, "module", model)
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def _check_store_matches_model(store, conf: DictConfig) -> None:
    """The stored CQT must be the one the model was built for (FACTS.md)."""
    expected = dict(conf.model.cqt)
    stored = store.cqt_params or {}
    for key in ("hoplen", "noctaves", "nbinsoct", "fscale", "pool"):
        if key in stored and key in expected and float(stored[key]) != float(expected[key]):
            raise ClewsError(
                f"{store.path}: store CQT {key}={stored[key]} differs from model.cqt.{key}={expected[key]}"
            )


def _check_resume_config(state: dict, conf: DictConfig, path: Path) -> None:
    saved = (state.get("config") or {}).get("model")
    now = OmegaConf.to_container(conf.model, resolve=True)
    if saved is not None and saved != now:
        raise ClewsError(
            f"{path}: its model config differs from the one given; use another --out or the same config"
        )
