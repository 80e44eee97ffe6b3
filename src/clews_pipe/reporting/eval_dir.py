"""Reading an ``evaluate --out`` folder back: ``metrics.json`` and ``per_query.csv`` (used by
``clews-pipe report`` and ``clews-pipe plot``)."""

from __future__ import annotations

import csv
from pathlib import Path

from clews_pipe.atomic import read_json_object
from clews_pipe.errors import ClewsError


def read_metrics(eval_dir: str | Path) -> dict:
    """``EVAL_DIR/metrics.json``; one ClewsError line when it is missing, unreadable or not an object."""
    path = Path(eval_dir) / "metrics.json"
    if not path.exists():
        raise ClewsError(f"{path}: not found (is {eval_dir} an evaluation output folder?)")
    return read_json_object(path, "evaluation metrics")


def read_per_query(eval_dir: str | Path) -> list[dict]:
    """The rows of ``EVAL_DIR/per_query.csv`` (empty when the folder has none)."""
    path = Path(eval_dir) / "per_query.csv"
    if not path.is_file():
        return []
    try:
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise ClewsError(f"{path}: not a readable per-query table ({exc})") from None
