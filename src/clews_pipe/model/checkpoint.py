"""Checkpoints: atomic saving, safe loading, import of published CLEWS checkpoints, model loading.

Our checkpoint format is a dict::

    {"model": state_dict, "config": plain dict of the full TrainConfig, "epoch": int,
     optional "optimizer", "scheduler", "best", "metrics"}

holding only tensors and plain Python containers/scalars, so it loads with
``torch.load(weights_only=True)``. (Store RNG states as tensors / ints / tuples, not numpy arrays.)

Published checkpoints (``model``, ``optim``, ``sched``, ``conf``, ``epoch``, ``lr``, ``cost_best``)
pickle an OmegaConf ``conf``; :func:`load_checkpoint` allows exactly the OmegaConf classes those
need (:data:`OFFICIAL_SAFE_GLOBALS`) and nothing else unless ``trust=True``.
"""

from __future__ import annotations

import collections
import pickle
import re
import typing
import zipfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.base import ContainerMetadata, Metadata
from omegaconf.nodes import AnyNode

from clews_pipe.atomic import atomic_path
from clews_pipe.errors import ClewsError, first_line

#: What a published checkpoint's pickle needs beyond torch's default weights-only set.
OFFICIAL_SAFE_GLOBALS: list[Any] = [
    DictConfig,
    ListConfig,
    ContainerMetadata,
    Metadata,
    AnyNode,
    typing.Any,
    dict,
    list,
    int,
    collections.defaultdict,
]

TRUST_HINT = "use --trust-checkpoint if you trust this file"


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """``torch.save(payload)`` to ``path`` atomically: a temporary file beside it, fsync, rename."""
    if not isinstance(payload, dict):
        raise TypeError(f"checkpoint payload must be a dict, got {type(payload).__name__}")
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except OSError as exc:
        raise ClewsError(f"{path}: cannot write checkpoint ({exc.strerror or exc})") from None


def _refused_global(message: str) -> str | None:
    # torch <= 2.5: "Unsupported global: GLOBAL x.y"; torch >= 2.6: "unsupported GLOBAL x.y whose module ..."
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)|unsupported GLOBAL ([\w.]+)", message, re.IGNORECASE)
    if match:
        return match.group(1) or match.group(2)
    match = re.search(r"Unsupported operand \d+|Unsupported class ([\w.]+)", message)
    return match.group(0) if match else None


def load_checkpoint(path: str | Path, trust: bool = False, mmap: bool = False, hint: str = TRUST_HINT) -> dict:
    """Load a checkpoint (ours or a published one) onto the CPU.

    ``mmap``: map the tensors instead of reading them (cheap when only the config is needed).
    Without ``trust`` it is a weights-only load allowing exactly :data:`OFFICIAL_SAFE_GLOBALS`;
    anything else is refused with a :class:`ClewsError` naming the refused global and ``hint``
    (by default: ``--trust-checkpoint``; a caller without that flag passes its own).
    """
    path = Path(path)
    if not path.is_file():
        raise ClewsError(f"{path}: checkpoint file not found")
    mmap = mmap and zipfile.is_zipfile(path)  # only torch's zip format can be mapped
    try:
        if trust:
            payload = torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
        else:
            with torch.serialization.safe_globals(OFFICIAL_SAFE_GLOBALS):
                payload = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        refused = _refused_global(str(exc))
        if refused is None:
            raise ClewsError(f"{path}: not a loadable checkpoint ({first_line(exc)})") from None
        raise ClewsError(f"{path}: checkpoint contains {refused}, outside the safe set; {hint}") from None
    except Exception as exc:  # garbage bytes fail in many ways inside the unpickler
        raise ClewsError(f"{path}: not a readable checkpoint ({first_line(exc)})") from None
    if not isinstance(payload, dict) or "model" not in payload:
        raise ClewsError(f"{path}: not a CLEWS checkpoint (expected a dict with a 'model' state dict)")
    return payload


def checkpoint_config(payload: dict, where: str = "checkpoint", config_yaml: str | Path | None = None) -> DictConfig:
    """The full TrainConfig of a loaded checkpoint (ours: ``config``; published: ``conf`` or a
    ``configuration.yaml``: its ``model:`` section and ``data.samplerate`` over our defaults)."""
    from clews_pipe.model.run_config import load_train_config, train_config_from_model_section

    if config_yaml is None and "config" in payload:
        return load_train_config(base=dict(payload["config"]))
    if config_yaml is not None:
        from clews_pipe.config import read_yaml

        official = read_yaml(config_yaml)
        where = str(config_yaml)
    elif "conf" in payload:
        official = payload["conf"]
        if not isinstance(official, DictConfig):
            official = OmegaConf.create(official)
    else:
        raise ClewsError(f"{where}: no 'config' or 'conf' in the checkpoint and no configuration.yaml given")
    if "model" not in official:
        raise ClewsError(f"{where}: no 'model' section in the configuration")
    samplerate = OmegaConf.select(official, "data.samplerate", default=16000)
    try:
        return train_config_from_model_section(official.model, samplerate=samplerate)
    except ClewsError as exc:
        raise ClewsError(f"{where}: {exc}") from None


def _build_loaded_model(state_dict: dict, conf: DictConfig, where: str):
    from clews_pipe.model.network import CLEWS

    model = CLEWS(conf.model, samplerate=int(conf.data.samplerate))
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        first = detail[0] if detail else first_line(exc)
        raise ClewsError(f"{where}: weights do not fit the configured model: {first}") from None
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"missing {len(result.missing_keys)} keys (e.g. {result.missing_keys[0]})")
        if result.unexpected_keys:
            parts.append(f"unexpected {len(result.unexpected_keys)} keys (e.g. {result.unexpected_keys[0]})")
        raise ClewsError(f"{where}: weights do not fit the configured model: {'; '.join(parts)}")
    return model


def import_official(
    ckpt_path: str | Path,
    config_yaml: str | Path | None,
    out_path: str | Path,
    *,
    trust: bool = False,
) -> dict:
    """Convert a published ``checkpoint_best.ckpt`` (+ its ``configuration.yaml``; ``None`` = use
    the checkpoint's own ``conf``) into our format at ``out_path``. The weights are checked to load
    strictly into our model first. Returns the written payload."""
    if Path(out_path).is_dir():  # before the (large) checkpoint is read
        raise ClewsError(f"{out_path}: is a directory; give the path of the checkpoint file to write")
    payload = load_checkpoint(ckpt_path, trust=trust)
    conf = checkpoint_config(payload, where=str(ckpt_path), config_yaml=config_yaml)
    state = {k: v for k, v in payload["model"].items()}
    _build_loaded_model(state, conf, str(ckpt_path))
    from clews_pipe.model.run_config import to_plain_dict

    metrics = {}
    if "cost_best" in payload:
        metrics["cost_best"] = float(payload["cost_best"])
    if "lr" in payload:
        metrics["lr"] = float(payload["lr"])
    ours = {
        "model": state,
        "config": to_plain_dict(conf),
        "epoch": int(payload.get("epoch", 0)),
        "metrics": metrics,
        "source": str(Path(ckpt_path).resolve()),
    }
    save_checkpoint(out_path, ours)
    return ours


def load_model(ckpt_path: str | Path, trust: bool = False, device: str | torch.device = "cpu"):
    """``(CLEWS in eval mode on device, TrainConfig)`` from our checkpoint or a published one
    (its OmegaConf ``conf`` supplies the model section)."""
    payload = load_checkpoint(ckpt_path, trust=trust)
    conf = checkpoint_config(payload, where=str(ckpt_path))
    model = _build_loaded_model(payload["model"], conf, str(ckpt_path))
    return model.to(device).eval(), conf
