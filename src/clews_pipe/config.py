"""YAML configs with a typed schema and OmegaConf dotlist overrides.

Every stage declares its schema as dataclasses; ``load_config`` merges the YAML file and the
``key=value`` overrides onto the schema and turns OmegaConf's validation errors (unknown key,
wrong type, missing file) into one :class:`ClewsError` line that names the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from clews_pipe.errors import ClewsError, first_line

T = TypeVar("T")


def _one_line(exc: OmegaConfBaseException, where: str) -> str:
    msg = first_line(exc)
    key = getattr(exc, "full_key", None)
    if key:
        return f"{where}: config key '{key}': {msg}"
    return f"{where}: {msg}"


def read_yaml(path: str | Path) -> Any:
    """An OmegaConf container from a YAML file; missing or unparsable → one :class:`ClewsError` line."""
    p = Path(path)
    if not p.is_file():
        raise ClewsError(f"{p}: config file not found")
    try:
        return OmegaConf.load(p)
    except Exception as exc:  # yaml errors come in many types
        raise ClewsError(f"{p}: not a readable YAML config ({first_line(exc)})") from None


def load_config(
    schema: type[T] | None,
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    base: dict[str, Any] | None = None,
) -> DictConfig:
    """Load ``path`` (YAML) over ``schema`` (a dataclass type), then apply dotlist ``overrides``.

    Returns a structured ``DictConfig`` (attribute access, typed, read-write).
    Raises :class:`ClewsError` with one line on any problem.
    """
    try:
        conf = OmegaConf.structured(schema) if schema is not None else OmegaConf.create({})
        if base:
            conf = OmegaConf.merge(conf, OmegaConf.create(base))
        if path is not None:
            p = Path(path)
            loaded = read_yaml(p)
            try:
                conf = OmegaConf.merge(conf, loaded)
            except OmegaConfBaseException as exc:
                raise ClewsError(_one_line(exc, str(p))) from None
        for item in overrides:
            if "=" not in item:
                raise ClewsError(f"override '{item}': expected key=value")
        if overrides:
            try:
                conf = OmegaConf.merge(conf, OmegaConf.from_dotlist(list(overrides)))
            except OmegaConfBaseException as exc:
                raise ClewsError(_one_line(exc, "overrides")) from None
        _resolve_all(conf, str(path) if path else "config")
        return conf  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise ClewsError(_one_line(exc, str(path) if path else "config")) from None


def _resolve_all(conf: DictConfig, where: str) -> None:
    """Resolve every ``${...}`` interpolation now, so that a bad one (``training.lr=${missing}``)
    is one ClewsError line naming its key instead of a traceback wherever it is first read."""
    from omegaconf.errors import InterpolationResolutionError

    try:
        OmegaConf.resolve(conf)
    except InterpolationResolutionError as exc:
        raise ClewsError(_one_line(exc, where)) from None


def to_yaml(conf: Any) -> str:
    """The resolved config as YAML text (what run directories store)."""
    return OmegaConf.to_yaml(conf, resolve=True)
