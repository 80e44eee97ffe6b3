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
from dataclasses import dataclass, fields
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
    "val_monitor",
    "lr",
    "segments_per_s",
    "data_wait_fraction",
    "epoch_s",
]
CONFIG_NAME = "configuration.yaml"
LAST_NAME = "checkpoint_last.ckpt"
BEST_NAME = "checkpoint_best.ckpt"
#: what a refused resume checkpoint tells the user (train has no --trust-checkpoint: it only
#: resumes from checkpoints it wrote itself, which never need one)
RESUME_HINT = "clews-pipe train writes no such object: this is not its checkpoint; remove it or use another --out"


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
    strategy: Any = fabric_conf.strategy
    from lightning.fabric.strategies import STRATEGY_REGISTRY

    known = ["auto", *sorted(STRATEGY_REGISTRY.available_strategies())]
    if str(strategy) not in known:
        raise ClewsError(f"config fabric.strategy={strategy!r}: not a Fabric strategy (e.g. {', '.join(known[:6])})")
    if str(devices) in ("1",) and int(fabric_conf.nodes) == 1:
        strategy = "auto"
    else:
        if str(strategy) == "auto" and str(fabric_conf.accelerator) in ("cpu", "gpu", "cuda", "auto"):
            strategy = "ddp"  # what Fabric's "auto" picks for several processes there, with our timeout
        strategy = _with_timeout(str(strategy), float(fabric_conf.get("timeout", 600.0)))
    try:
        return Fabric(
            accelerator=fabric_conf.accelerator,
            devices=devices,
            num_nodes=int(fabric_conf.nodes),
            strategy=strategy,
            precision=precision,
            loggers=loggers,
        )
    except Exception as exc:  # lightning raises ValueError / RuntimeError / MisconfigurationException
        from clews_pipe.errors import first_line

        raise ClewsError(
            f"config fabric.accelerator={fabric_conf.accelerator!r}, fabric.strategy={fabric_conf.strategy!r}, "
            f"fabric.devices={devices!r}: {first_line(exc)}"
        ) from None


#: DDP strategy names and the start method each means (``ddp`` starts its own subprocesses)
_DDP_START = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}


def _with_timeout(strategy: str, timeout_s: float):
    """A DDP strategy name as a DDPStrategy with ``timeout_s`` on its collectives; others unchanged."""
    if strategy not in _DDP_START:
        return strategy
    from datetime import timedelta

    from lightning.fabric.strategies import DDPStrategy

    return DDPStrategy(start_method=_DDP_START[strategy], timeout=timedelta(seconds=timeout_s))


def monitor_value(monitor: str, val_map: float, val_nar: float, m_comp: float | None = None) -> float:
    """The quantity ReduceLROnPlateau and the best checkpoint follow (lower is better).

    ``nar_map`` (Discogs-VI): the published per-query ``m_COMP`` when given (``protocol: clews``),
    else sqrt(NAR · (1 − MAP)) of the means with NAR as a fraction; ``map`` (SHS100K): −MAP.
    """
    if monitor == "nar_map":
        if m_comp is not None:
            return float(m_comp)
        return math.sqrt(max(val_nar / 100.0, 0.0) * max(1.0 - val_map, 0.0))
    if monitor == "map":
        return -val_map
    raise ClewsError(f"training.monitor: unknown value '{monitor}' (expected nar_map or map)")


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    fields = CSV_FIELDS
    if not new:  # a run resumed from an older version keeps its file's columns
        with path.open(newline="") as fh:
            fields = next(csv.reader(fh), None) or CSV_FIELDS
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
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


def train(conf: DictConfig, out_dir: str | Path, allow_data_change: bool = False) -> list[dict]:
    """Train (or resume) a CLEWS model; returns the metrics rows of the epochs run (rank 0).

    Rank 0 holds the run directory's advisory lock for the whole run (a second training on the
    same ``out_dir`` stops with one line naming the holder). A resume refuses a different data
    section (store, splits) unless ``allow_data_change``."""
    from lightning.fabric.loggers import TensorBoardLogger

    from clews_pipe.atomic import ensure_dir

    out = ensure_dir(out_dir, "run directory")
    from clews_pipe.training import stop

    global STOP_SIGNAL
    STOP_SIGNAL = None
    previous = stop.install()  # the CLI installed them already; a signal received since stays requested
    try:
        from clews_pipe.ranks import close_process_group

        fabric = make_fabric(conf.fabric, loggers=[TensorBoardLogger(root_dir=str(out), name="tensorboard", version=0)])
        rows = fabric.launch(_train_locked, conf, out, allow_data_change)
        close_process_group()
        return rows
    finally:
        stop.reset()
        stop.restore(previous)


def _train_locked(fabric, conf: DictConfig, out: Path, allow_data_change: bool = False) -> list[dict]:
    """Rank 0 takes the run directory's lock; every rank learns whether it got it (so all stop
    together when another training holds it) before anything is written."""
    import contextlib

    from clews_pipe.lock import folder_lock

    with contextlib.ExitStack() as stack:
        refusal = ""
        if fabric.global_rank == 0:
            try:
                stack.enter_context(folder_lock(out, "clews-pipe train"))
            except ClewsError as exc:
                refusal = str(exc)
        if fabric.world_size > 1:
            refusal = fabric.broadcast(refusal, src=0)
        if refusal:
            raise ClewsError(refusal)
        return _train_on_rank(fabric, conf, out, allow_data_change)


@dataclass
class EpochStats:
    """One epoch's counters summed over ranks."""

    loss_sum: float
    steps: int
    segments: int
    wait_s: float
    train_s: float

    def mean_loss(self) -> float:
        return self.loss_sum / max(self.steps, 1)


@dataclass
class _Run:
    """What one rank trains with: built once, before the first epoch."""

    conf: DictConfig
    out: Path
    model: Any
    optimizer: Any
    scheduler: Any
    train_loader: Any
    val_loader: Any
    protocol: Any
    start_epoch: int = 0
    best: float = math.inf
    best_epoch: int | None = None
    average: Any = None  # training.ema_decay's running average of the weights (weight_average.py)

    @property
    def last_path(self) -> Path:
        return self.out / LAST_NAME


def _resume_state(fabric, conf: DictConfig, out: Path, allow_data_change: bool) -> tuple[DictConfig, dict | None]:
    """The run's checkpoint_last state (None for a new run) and the settings to train with."""
    from clews_pipe.model.checkpoint import load_checkpoint

    last_path = out / LAST_NAME
    if not last_path.exists():
        return conf, None
    state = load_checkpoint(last_path, hint=RESUME_HINT)
    _check_resume_config(state, conf, last_path, allow_data_change)
    conf, ignored = resume_config(state.get("config") or {}, conf)
    if ignored:
        rank_zero_print(fabric, "resume keeps the run's own settings, ignoring the changed "
                                + ", ".join(ignored) + " (start a new --out to train with them)")
    return conf, state


def _loaders(fabric, conf: DictConfig) -> tuple[Any, Any]:
    """This rank's training and validation DataLoaders over the configured store."""
    from clews_pipe.features.cqt_params import CQTParams
    from clews_pipe.store import open_store
    from clews_pipe.training.dataset import make_train_loader
    from clews_pipe.training.validate import validation_data_conf

    tconf = conf.training
    store = open_store(conf.data.store)
    CQTParams.from_model_conf(conf.model.cqt, conf.data.samplerate).require_equal(store.cqt, "config model.cqt", f"store {store.path}")
    common = dict(batch_size=int(tconf.batch_size), rank=fabric.global_rank, world_size=fabric.world_size,
                  workers=int(conf.data.workers))
    train_loader = make_train_loader(store, conf.data, split=conf.data.train_split, seed=int(tconf.seed), **common)
    val_loader = make_train_loader(store, validation_data_conf(conf), split=conf.data.val_split,
                                   seed=int(tconf.seed) + 1, shuffle=False, drop_last=False, **common)
    return train_loader, val_loader


def make_scheduler(optimizer, tconf, protocol):
    """The learning-rate schedule of ``training.schedule``, stepped once per epoch
    (:func:`step_scheduler`): the published plateau rule, or a cosine decay to ``min_lr``."""
    if str(tconf.get("schedule", "plateau")) == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(tconf.epochs), eta_min=float(tconf.min_lr))
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=float(tconf.plateau_factor),
        patience=protocol.plateau_patience(int(tconf.plateau_patience)),
    )


def step_scheduler(scheduler, cost: float) -> None:
    """One epoch's step: the plateau rule reads the validation monitor, the cosine one does not."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(cost)
    else:
        scheduler.step()


def _build_run(fabric, conf: DictConfig, out: Path, allow_data_change: bool) -> _Run:
    """Loaders, model, optimiser and schedule, restored from checkpoint_last when resuming."""
    from clews_pipe.model.network import CLEWS
    from clews_pipe.training.validate import validation_protocol
    from clews_pipe.training.weight_average import make_average

    conf, state = _resume_state(fabric, conf, out, allow_data_change)
    tconf = conf.training
    protocol = validation_protocol(conf)
    train_loader, val_loader = _loaders(fabric, conf)
    torch.manual_seed(int(tconf.seed))  # identical initial weights on every rank
    with fabric.init_module():
        model = CLEWS(conf.model, samplerate=int(conf.data.samplerate))
    optimizer = torch.optim.Adam(model.parameters(), lr=float(tconf.lr))
    scheduler = make_scheduler(optimizer, tconf, protocol)
    run = _Run(conf, out, model, optimizer, scheduler, train_loader, val_loader, protocol,
               average=make_average(model, float(tconf.get("ema_decay", 0.0)), fabric.device))
    if state is not None:  # resume: restore before Fabric wraps model and optimizer
        _restore(fabric, run, state)
    elif fabric.global_rank == 0:
        (out / CONFIG_NAME).write_text(to_yaml(conf))
    return run


def _restore(fabric, run: _Run, state: dict) -> None:
    from clews_pipe.training.weight_average import restore

    restore(run.model, run.average, state)
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.start_epoch = int(state["epoch"])
    run.best = float(state.get("best", math.inf))
    run.best_epoch = state.get("best_epoch")
    epochs = int(run.conf.training.epochs)
    if run.start_epoch >= epochs:
        rank_zero_print(fabric, f"nothing to do: {run.out} has finished all {run.start_epoch} epochs "
                                f"(training.epochs={epochs}); raise training.epochs to train further")
    else:
        rank_zero_print(fabric, f"resuming {run.last_path} at epoch {run.start_epoch + 1} of {epochs}")


def _train_on_rank(fabric, conf: DictConfig, out: Path, allow_data_change: bool = False) -> list[dict]:
    from clews_pipe.features.augment import CQAugment

    run = _build_run(fabric, conf, out, allow_data_change)
    if fabric.global_rank == 0:
        rank_zero_print(fabric, start_banner(run.conf, run.train_loader, run.val_loader, run.model, fabric, out,
                                             run.start_epoch))
        for warning in validation_warnings(run.val_loader.dataset):
            rank_zero_print(fabric, f"warning: {warning}")
        if run.start_epoch == 0:
            _log_hyperparameters(fabric, run.conf)
    run.model, run.optimizer = fabric.setup(run.model, run.optimizer)
    run.model.mark_forward_method("embed")  # DDP gradient sync also when calling embed()
    augment = CQAugment(run.conf.augment)
    rows: list[dict] = []
    for epoch in range(run.start_epoch, int(run.conf.training.epochs)):
        lr = run.optimizer.param_groups[0]["lr"]
        if lr < float(run.conf.training.min_lr):
            first = "nothing to do: " if epoch == run.start_epoch and run.start_epoch > 0 else ""
            rank_zero_print(fabric, f"{first}learning rate {lr:.2e} < training.min_lr: stopping")
            break
        row = _one_epoch(fabric, run, augment, epoch, lr)
        if row is None:
            return rows
        rows.append(row)
        fabric.barrier()
    if fabric.global_rank == 0 and rows:
        rank_zero_print(fabric, end_summary(rows, run.best, run.best_epoch, run.conf.training, out))
    return rows


def _one_epoch(fabric, run: _Run, augment, epoch: int, lr: float) -> dict | None:
    """Train and validate one epoch, step the schedule, write the checkpoints and the metrics row;
    None when a stop signal ended the epoch."""
    from clews_pipe.training import stop
    from clews_pipe.training.validate import validate
    from clews_pipe.training.weight_average import evaluated_network

    tconf = run.conf.training
    seed = _epoch_seed(int(tconf.seed), epoch, fabric.global_rank)
    torch.manual_seed(seed)  # CQTPrepare's noise and any other global draw
    generator = torch.Generator(device=fabric.device).manual_seed(seed)
    run.train_loader.batch_sampler.set_epoch(epoch)
    t_epoch = time.perf_counter()
    try:
        stats = _train_epoch(fabric, run.model, run.optimizer, run.train_loader, augment, generator, run.conf, epoch,
                             run.average)
    except _StopTraining:
        global STOP_SIGNAL
        STOP_SIGNAL = stop.name() or "signal"
        rank_zero_print(
            fabric,
            f"stopped by {STOP_SIGNAL} during epoch {epoch + 1}: "
            + (f"{run.last_path} holds epoch {epoch}; the same command resumes at epoch {epoch + 1}"
               if epoch else "no epoch finished yet; the same command starts again"),
        )
        fabric.barrier()
        return None
    _check_finite(stats.mean_loss(), "training loss", epoch + 1)
    val = validate(fabric, evaluated_network(run.model, run.average), run.val_loader, run.conf,
                   desc=f"validate epoch {epoch + 1}")
    if epoch == 0 and val["MAP"] >= 0.999:
        rank_zero_print(fabric, "warning: validation MAP is 1.000 after the first epoch: the val split is too easy "
                                "to rank models (checkpoint_best will freeze); use a larger data.val_split")
    _check_finite(val["loss"], "validation loss", epoch + 1)
    cost = monitor_value(str(tconf.monitor), val["MAP"], val["NAR_strict"],
                         val["m_COMP"] if run.protocol.published_validation else None)
    step_scheduler(run.scheduler, cost)
    is_best = cost < run.best
    run.best = min(run.best, cost)
    if is_best:
        run.best_epoch = epoch + 1
    row = _epoch_row(epoch, stats, val, cost, lr, time.perf_counter() - t_epoch, fabric.world_size)
    fabric.log_dict({f"metrics/{k}": v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
    if fabric.global_rank == 0:
        _save_epoch(fabric, run, row, is_best)
    return row


def _epoch_row(epoch: int, stats: EpochStats, val: dict, cost: float, lr: float, epoch_s: float, world: int) -> dict:
    """The ``metrics.csv`` row of one epoch."""
    return {
        "epoch": epoch + 1,
        "train_loss": round(stats.mean_loss(), 6),
        "val_loss": round(val["loss"], 6),
        "val_MAP": round(val["MAP"], 6),
        "val_NAR": round(val["NAR"], 6),
        "val_monitor": round(cost, 6),
        "lr": lr,
        "segments_per_s": round(stats.segments / max(stats.train_s / world, 1e-9), 2),
        "data_wait_fraction": round(stats.wait_s / max(stats.train_s, 1e-9), 4),
        "epoch_s": round(epoch_s, 2),
    }


def _save_epoch(fabric, run: _Run, row: dict, is_best: bool) -> None:
    """Rank 0: checkpoint_last (and best), the metrics row, the epoch line."""
    from clews_pipe.model.checkpoint import save_checkpoint
    from clews_pipe.training.weight_average import checkpoint_entries

    state = {
        **checkpoint_entries(_unwrapped_state_dict(run.model), run.average),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "epoch": row["epoch"],
        "best": run.best,
        "best_epoch": run.best_epoch,
        "config": OmegaConf.to_container(run.conf, resolve=True),
        "metrics": row,
        # no RNG state: every epoch reseeds torch, the augmentation generator and the
        # sampler from (training.seed, epoch, rank), so a resume is bit-identical without one
    }
    save_checkpoint(run.last_path, state)
    if is_best:
        save_checkpoint(run.out / BEST_NAME, state)
    _append_csv(run.out / "metrics.csv", row)
    rank_zero_print(
        fabric,
        f"epoch {row['epoch']}: train_loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
        f"val_MAP {row['val_MAP']:.3f}  val_NAR {row['val_NAR']:.2f}  lr {row['lr']:.1e}  "
        f"{row['segments_per_s']:.0f} seg/s  wait {100 * row['data_wait_fraction']:.1f}%"
        + ("  *" if is_best else "")
    )


def _train_epoch(fabric, model, optimizer, loader, augment, generator, conf: DictConfig, epoch: int,
                 average=None) -> EpochStats:
    """One pass over this rank's batches; returns its counters summed over ranks. ``average``
    (training.ema_decay) follows the weights after every step."""
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
            if average is not None:
                average.update_parameters(model)
            loss_sum += value
            n_segments += x.shape[0] * x.shape[1]
            steps += 1
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}")
            if fabric.global_rank == 0 and (steps - 1) % LOG_EVERY_STEPS == 0:  # steps 1, 11, 21, ...
                fabric.log_dict({"step/loss": value, "step/lr": optimizer.param_groups[0]["lr"]},
                                step=epoch * len(loader) + steps)
    finally:
        bar.close()
    return _summed_over_ranks(fabric, EpochStats(loss_sum, steps, n_segments, wait, time.perf_counter() - t_start))


def _summed_over_ranks(fabric, stats: EpochStats) -> EpochStats:
    """Each counter of ``stats`` summed over ranks (one all-reduce, fields in declaration order)."""
    names = [f.name for f in fields(EpochStats)]
    values = torch.tensor([float(getattr(stats, name)) for name in names], dtype=torch.float64, device=fabric.device)
    if fabric.world_size > 1:
        values = fabric.all_reduce(values, reduce_op="sum")
    summed = dict(zip(names, values.tolist()))
    return EpochStats(loss_sum=summed["loss_sum"], steps=int(summed["steps"]), segments=int(summed["segments"]),
                      wait_s=summed["wait_s"], train_s=summed["train_s"])


def _unwrapped_state_dict(model) -> dict:
    module = getattr(model, "module", model)
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


LOG_EVERY_STEPS = 10  # per-step TensorBoard scalars (loss, lr) every this many steps

#: settings a resume may change: how long to train and where/how it runs; everything else is the
#: run's own (a changed learning rate or batch size would make another experiment)
RESUMABLE_KEYS = ("training.epochs", "training.min_lr", "data.workers", "data.store", "data.train_split",
                  "data.val_split", "fabric", "eval")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def resume_config(saved: dict, conf: DictConfig) -> tuple[DictConfig, list[str]]:
    """The configuration a resume runs with: the run's saved settings, except :data:`RESUMABLE_KEYS`
    taken from ``conf``; and ``"key old -> new"`` for every other setting ``conf`` changes (ignored)."""
    if not saved:
        return conf, []
    now = _flat(OmegaConf.to_container(conf, resolve=True))
    before = _flat(dict(saved))
    keep = lambda key: any(key == k or key.startswith(k + ".") for k in RESUMABLE_KEYS)  # noqa: E731
    ignored = [f"{key} {before[key]!r} -> {now[key]!r}" for key in sorted(now)
               if key in before and before[key] != now[key] and not keep(key)]
    merged = OmegaConf.merge(conf, {k: v for k, v in saved.items() if k != "model"})
    for key in now:
        if keep(key):
            OmegaConf.update(merged, key, now[key], merge=False)
    return merged, ignored


def start_banner(conf: DictConfig, train_loader, val_loader, model, fabric, out: Path, start_epoch: int) -> str:
    """What a run is about to do, in a few lines (rank 0 prints it)."""
    train_set, val_set = train_loader.dataset, val_loader.dataset
    n_params = sum(p.numel() for p in model.parameters())
    lines = [
        f"clews-pipe train -> {out}" + (f" (from epoch {start_epoch + 1})" if start_epoch else ""),
        f"  train: {len(train_set.track_ids)} tracks in {len(train_set.clique_names)} cliques "
        f"(split {conf.data.train_split}), {len(train_loader)} steps per epoch of {int(conf.training.batch_size)} anchors per device",
        f"  val:   {len(val_set.track_ids)} tracks in {len(val_set.clique_names)} cliques (split {conf.data.val_split}), "
        f"protocol {conf.protocol}",
        f"  model: {n_params:,} parameters, zdim {int(conf.model.zdim)}; {fabric.world_size} process(es) on "
        f"{fabric.device.type}, precision {conf.fabric.precision}; epochs {start_epoch + 1}..{int(conf.training.epochs)}",
    ]
    return "\n".join(lines)


def validation_warnings(val_set) -> list[str]:
    """Why the validation metric may not rank models (a split too small to rank)."""
    n = len(val_set.clique_names)
    if n < 5:
        return [f"the validation split has {n} clique(s) with >= 2 versions: too few to rank models "
                "(its MAP saturates); use a validation split of >= 5 cliques"]
    return []


def end_summary(rows: list[dict], best: float, best_epoch, tconf, out: Path) -> str:
    last = rows[-1]
    best_text = f"best epoch {best_epoch} (monitor {best:.4f})" if best_epoch else "no best epoch yet"
    return (f"finished epoch {last['epoch']} of {int(tconf.epochs)}: {best_text}; last val_MAP {last['val_MAP']:.3f}\n"
            f"  checkpoints: {out / BEST_NAME} (best), {out / LAST_NAME} (last); log: {out / 'metrics.csv'}, "
            f"TensorBoard: {out / 'tensorboard'}")


def _log_hyperparameters(fabric, conf: DictConfig) -> None:
    for logger in getattr(fabric, "loggers", []):
        try:
            logger.log_hyperparams(_flat(OmegaConf.to_container(conf, resolve=True)))
        except Exception:  # a logger without hparams support must not stop training
            pass


#: the data keys a resume must not change silently (a different store or split is another experiment)
RESUME_DATA_KEYS = ("store", "train_split", "val_split")


def _check_resume_config(state: dict, conf: DictConfig, path: Path, allow_data_change: bool = False) -> None:
    saved_conf = state.get("config") or {}
    saved = saved_conf.get("model")
    now = OmegaConf.to_container(conf.model, resolve=True)
    if saved is not None and saved != now:
        raise ClewsError(
            f"{path}: its model config differs from the one given; use another --out or the same config"
        )
    saved_data = saved_conf.get("data") or {}
    if allow_data_change or not saved_data:
        return
    for key in RESUME_DATA_KEYS:
        before, after = saved_data.get(key), conf.data.get(key)
        if key == "store" and before and after:
            before, after = str(Path(before).expanduser().resolve()), str(Path(after).expanduser().resolve())
        if before is not None and before != after:
            raise ClewsError(
                f"{path}: this run was trained with data.{key}={before!r}, not {after!r}; "
                "use another --out, the same data, or --allow-data-change to continue on the new data"
            )
