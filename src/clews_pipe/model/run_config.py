"""The training configuration schema (``TrainConfig``) shared by training, checkpoints and evaluation.

The ``model:`` section has exactly the layout of the official CLEWS ``configuration.yaml`` so a
published model section can be merged in unchanged. Load a file with :func:`load_train_config`
(YAML + dotlist overrides over this schema; unknown key / wrong type / bad value → one
:class:`~clews_pipe.errors.ClewsError` line).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Sequence

from omegaconf import DictConfig, OmegaConf

from clews_pipe.config import load_config
from clews_pipe.errors import ClewsError
from clews_pipe.features.augment_config import AugmentConfig
from clews_pipe.retrieval.protocol_options import DEFAULT_PROTOCOL, PROTOCOLS
from clews_pipe.retrieval.redux import Redux

MONITORS = ("nar_map", "map")
SCHEDULES = ("plateau", "cosine")
KEY_ESTIMATES = ("profile", "scale", "scale-triad")


# --------------------------------------------------------------------------------------- data
@dataclass
class DataConfig:
    store: str = ""  # path of the feature store (``clews-pipe extract`` output)
    train_split: str = "train"
    val_split: str = "val"
    n_per_class: int = 4  # anchor + 3 positives drawn from its clique
    block_len: float = 150.0  # seconds of each track per training example
    shingle_len: float = 20.0
    shingle_hop: float = 20.0
    maxlen: float = 600.0  # seconds of a track considered at most
    workers: int = 2  # DataLoader workers per device
    samplerate: int = 16000


# ------------------------------------------------------------------ model (official layout)
@dataclass
class ShinglingConfig:
    len: float = 20.0  # seconds
    hop: float = 20.0


@dataclass
class ModelCQTConfig:
    hoplen: float = 0.02  # seconds
    noctaves: int = 7
    nbinsoct: int = 12
    fscale: float = 1.0
    pool: int = 5  # CQT hops averaged into one frame


@dataclass
class FrontendConfig:
    cqtpow: float = 0.5
    channels: List[int] = field(default_factory=lambda: [128, 256])
    keynorm: bool = False  # shift each segment's key to pitch class 0 (not in the published network)
    # how keynorm estimates the key: "profile" = the dominant pitch class of the segment's energy;
    # "scale" = the major scale that best covers each frame's strongest pitch from octave 3 up;
    # "scale-triad" = the same, ties broken by the tonic triad
    keynorm_by: str = "profile"
    # the network reads the prepared CQT from this octave up (0 = every octave, the published network)
    from_octave: int = 0


@dataclass
class BackboneConfig:
    blocks: List[int] = field(default_factory=lambda: [3, 4, 6, 3])
    channels: List[int] = field(default_factory=lambda: [256, 512, 1024, 2048])
    down: List[int] = field(default_factory=lambda: [1, 2, 2, 1])


@dataclass
class ReduxConfig:
    pos: str = "bpwr-5"
    neg: str = "min"


@dataclass
class LossConfig:
    redux: ReduxConfig = field(default_factory=ReduxConfig)
    gamma: float = 5.0
    epsilon: float = 1e-6


@dataclass
class ModelConfig:
    name: str = "clews"
    shingling: ShinglingConfig = field(default_factory=ShinglingConfig)
    cqt: ModelCQTConfig = field(default_factory=ModelCQTConfig)
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    zdim: int = 1024
    loss: LossConfig = field(default_factory=LossConfig)


# ---------------------------------------------------------------------------------- training
@dataclass
class OptimConfig:
    epochs: int = 1000
    batch_size: int = 25  # anchor tracks per device
    lr: float = 2e-4
    # "plateau": ReduceLROnPlateau on the validation monitor (the published schedule);
    # "cosine": cosine decay from lr to min_lr over the epochs, whatever validation says
    schedule: str = "plateau"
    plateau_factor: float = 0.2
    plateau_patience: int = 10  # epochs
    min_lr: float = 1e-6  # stop when the learning rate falls below this
    monitor: str = "nar_map"  # "nar_map": minimise sqrt(NAR·(1−MAP)); "map": maximise MAP
    seed: int = 0
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    # exponential moving average of the weights, updated every step; validation, checkpoint_best
    # and checkpoint_last's "model" hold the average (what evaluate uses); 0 = off (published)
    ema_decay: float = 0.0


@dataclass
class FabricConfig:
    accelerator: str = "auto"
    devices: int = 1
    nodes: int = 1
    strategy: str = "ddp"
    precision: str = "32"
    # seconds a DDP collective waits for a missing rank before the run stops (torch's default is
    # 30 min): long enough for rank 0's checkpoint writes; raise it for very slow filesystems
    timeout: float = 600.0


@dataclass
class EvalConfig:
    maxlen: float = 600.0
    shingle_len: float = 20.0
    shingle_hop: float = 5.0
    redux: str = "bpwr-10"


@dataclass
class TrainConfig:
    # validation during training: "clews" = the published train.py (hop = model hop / 2, the model's
    # positive reduction, per-query monitor m_COMP, "plateau_N" waits N - 1); see retrieval/protocol.py
    protocol: str = DEFAULT_PROTOCOL
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: OptimConfig = field(default_factory=OptimConfig)
    fabric: FabricConfig = field(default_factory=FabricConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ---------------------------------------------------------------------------------- loading
def _check(ok: bool, where: str, key: str, value: Any, what: str) -> None:
    if not ok:
        raise ClewsError(f"{where}: config key '{key}' = {value!r}: {what}")


def validate_train_config(conf: DictConfig, where: str = "config", require_store: bool = False) -> None:
    """Value checks the type schema cannot express; one ClewsError line naming the key."""
    d, a, m, t, f, e = conf.data, conf.augment, conf.model, conf.training, conf.fabric, conf.eval
    if require_store:
        _check(bool(d.store), where, "data.store", d.store, "path of the feature store required")
    for key, value in (
        ("data.n_per_class", d.n_per_class),
        ("data.block_len", d.block_len),
        ("data.shingle_len", d.shingle_len),
        ("data.shingle_hop", d.shingle_hop),
        ("data.maxlen", d.maxlen),
        ("data.samplerate", d.samplerate),
        ("model.shingling.len", m.shingling.len),
        ("model.shingling.hop", m.shingling.hop),
        ("model.cqt.hoplen", m.cqt.hoplen),
        ("model.cqt.noctaves", m.cqt.noctaves),
        ("model.cqt.nbinsoct", m.cqt.nbinsoct),
        ("model.cqt.pool", m.cqt.pool),
        ("model.zdim", m.zdim),
        ("training.epochs", t.epochs),
        ("training.batch_size", t.batch_size),
        ("training.lr", t.lr),
        ("fabric.devices", f.devices),
        ("fabric.nodes", f.nodes),
        ("fabric.timeout", f.timeout),
        ("eval.maxlen", e.maxlen),
        ("eval.shingle_len", e.shingle_len),
        ("eval.shingle_hop", e.shingle_hop),
    ):
        _check(value > 0, where, key, value, "must be > 0")
    _check(d.n_per_class >= 2, where, "data.n_per_class", d.n_per_class, "need the anchor and >= 1 positive")
    _check(d.workers >= 0, where, "data.workers", d.workers, "must be >= 0")
    for name in ("specaugment", "timestretch", "pitchroll"):
        p = a[name].p
        _check(0.0 <= p <= 1.0, where, f"augment.{name}.p", p, "must be a probability in [0, 1]")
    for key in ("max_freq", "max_time"):
        v = a.specaugment[key]
        _check(0.0 <= v <= 1.0, where, f"augment.specaugment.{key}", v, "must be a fraction in [0, 1]")
    ts = a.timestretch
    _check(0.0 < ts.min <= ts.max, where, "augment.timestretch.min", ts.min, f"need 0 < min <= max ({ts.max})")
    _check(a.pitchroll.max >= 0, where, "augment.pitchroll.max", a.pitchroll.max, "must be >= 0")
    _check(m.name == "clews", where, "model.name", m.name, "only 'clews' is implemented")
    _check(len(m.frontend.channels) == 2, where, "model.frontend.channels", list(m.frontend.channels),
           "need two channel counts")
    nb, nc, nd = len(m.backbone.blocks), len(m.backbone.channels), len(m.backbone.down)
    _check(nb == nc == nd and nb > 0, where, "model.backbone", OmegaConf.to_container(m.backbone),
           "blocks, channels and down need the same non-zero length")
    _check(all(b >= 1 for b in m.backbone.blocks), where, "model.backbone.blocks", list(m.backbone.blocks),
           "every stage needs >= 1 block")
    chans = list(m.frontend.channels) + list(m.backbone.channels)
    _check(all(c > 0 and c % 2 == 0 for c in chans), where, "model.backbone.channels", chans,
           "channel counts must be positive and even (IBN splits them in halves)")
    _check(0 <= m.frontend.from_octave < m.cqt.noctaves - 2, where, "model.frontend.from_octave",
           m.frontend.from_octave, f"must be in [0, {m.cqt.noctaves - 3}] (the network needs 3 octaves)")
    _check(m.frontend.keynorm_by in KEY_ESTIMATES, where, "model.frontend.keynorm_by", m.frontend.keynorm_by,
           f"expected one of {list(KEY_ESTIMATES)}")
    _check(m.loss.gamma > 0, where, "model.loss.gamma", m.loss.gamma, "must be > 0")
    _check(m.loss.epsilon > 0, where, "model.loss.epsilon", m.loss.epsilon, "must be > 0")
    _check(t.monitor in MONITORS, where, "training.monitor", t.monitor, f"expected one of {list(MONITORS)}")
    _check(conf.protocol in PROTOCOLS, where, "protocol", conf.protocol, f"expected one of {list(PROTOCOLS)}")
    _check(t.schedule in SCHEDULES, where, "training.schedule", t.schedule, f"expected one of {list(SCHEDULES)}")
    _check(0 < t.plateau_factor < 1, where, "training.plateau_factor", t.plateau_factor, "must be in (0, 1)")
    _check(t.plateau_patience >= 0, where, "training.plateau_patience", t.plateau_patience, "must be >= 0")
    _check(t.min_lr >= 0 and math.isfinite(t.min_lr), where, "training.min_lr", t.min_lr, "must be >= 0")
    _check(t.grad_clip >= 0, where, "training.grad_clip", t.grad_clip, "must be >= 0 (0 = off)")
    _check(0 <= t.ema_decay < 1, where, "training.ema_decay", t.ema_decay, "must be in [0, 1) (0 = off)")
    _check(f.precision in ("32", "32-true", "16-mixed", "bf16-mixed", "64", "64-true"), where,
           "fabric.precision", f.precision, "expected 32, 16-mixed or bf16-mixed")
    for key, name in (("model.loss.redux.pos", m.loss.redux.pos), ("model.loss.redux.neg", m.loss.redux.neg),
                      ("eval.redux", e.redux)):
        try:
            Redux.parse(name)
        except ClewsError as exc:
            raise ClewsError(f"{where}: config key '{key}': {exc}") from None


#: keys of the published CLEWS code (sony/clews train.py) and what clews-pipe calls them
PUBLISHED_KEYS = {
    "fabric.ngpus": "fabric.devices",
    "fabric.nnodes": "fabric.nodes",
    "fabric.nodes_rank": None,  # Slurm / Fabric give the node rank; nothing to set
    "jobname": "--out RUN_DIR",
    "conf": "the CONFIG argument",
}


def published_key_hint(overrides: Sequence[str]) -> None:
    """ClewsError naming the clews-pipe form when an override uses a published code's key."""
    for item in overrides:
        key = str(item).partition("=")[0].strip()
        if key in PUBLISHED_KEYS:
            ours = PUBLISHED_KEYS[key]
            if ours is None:
                raise ClewsError(f"override '{item}': the published code's {key} is not needed (taken from Slurm/Fabric)")
            raise ClewsError(f"override '{item}': the published code's {key} is {ours} in clews-pipe")


def load_train_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    base: dict | None = None,
    require_store: bool = False,
) -> DictConfig:
    """``TrainConfig`` from YAML ``path`` + dotlist ``overrides`` (over ``base``, e.g. a checkpoint's config).

    Raises :class:`ClewsError` with one line for an unknown key, a wrong type or a bad value.
    """
    published_key_hint(overrides)
    conf = load_config(TrainConfig, path, overrides, base=base)
    validate_train_config(conf, where=str(path) if path is not None else "config", require_store=require_store)
    return conf


def train_config_from_model_section(model_section: Any, samplerate: int = 16000) -> DictConfig:
    """A full ``TrainConfig`` (defaults elsewhere) around an official ``model:`` section."""
    if isinstance(model_section, DictConfig):
        model_section = OmegaConf.to_container(model_section, resolve=True)
    return load_train_config(base={"model": dict(model_section), "data": {"samplerate": int(samplerate)}})


def to_plain_dict(conf: Any) -> dict:
    """The config as plain Python containers (what checkpoints store: no OmegaConf classes)."""
    if isinstance(conf, DictConfig):
        return OmegaConf.to_container(conf, resolve=True)  # type: ignore[return-value]
    return dict(conf)
