"""What produced an evaluation: digests of its inputs and the settings, for ``metrics.json`` and the
embeddings' fingerprint.

``provenance`` in ``metrics.json`` holds at least ``clews_pipe_version``, ``checkpoint``,
``checkpoint_sha256``, ``checkpoint_epoch``, ``store``, ``store_index_sha256``, ``split``,
``protocol``, ``redux``, ``level``, ``maxlen``, ``world_size`` and ``created`` (UTC, ISO 8601);
``null`` where an input does not apply (e.g. no checkpoint for a bare embeddings file).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from clews_pipe.digests import file_sha256, json_sha256 as digest_of, text_sha256

__all__ = ["file_sha256", "digest_of", "store_index_sha256", "checkpoint_epoch", "now_utc", "base_provenance",
           "evaluation_provenance"]
#: index columns that decide which frames a track's embeddings come from
INDEX_DIGEST_COLUMNS = ("clique", "split", "status", "n_frames", "part", "offset")


def store_index_sha256(store) -> str:
    """sha256 of the store's index (track id + :data:`INDEX_DIGEST_COLUMNS`, rows sorted by track id),
    independent of how the parts were consolidated."""
    index = store.index
    frame = index[list(INDEX_DIGEST_COLUMNS)].copy()
    frame.index = frame.index.astype(str)
    frame = frame.sort_index(kind="stable")
    return text_sha256(frame.to_csv(lineterminator="\n"))


def checkpoint_epoch(path: str | Path, trust: bool = False) -> int | None:
    from clews_pipe.model.checkpoint import load_checkpoint

    epoch = load_checkpoint(path, trust=trust).get("epoch")
    try:
        return None if epoch is None else int(epoch)
    except (TypeError, ValueError):
        return None


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def base_provenance() -> dict:
    from clews_pipe import __version__

    return {
        "clews_pipe_version": __version__,
        "checkpoint": None,
        "checkpoint_sha256": None,
        "checkpoint_epoch": None,
        "store": None,
        "store_index_sha256": None,
        "embeddings": None,
        "embeddings_sha256": None,
        "split": None,
    }


def evaluation_provenance(inputs: dict, *, protocol, redux, level: str, maxlen: float | None, world_size: int,
                          settings: dict | None = None) -> dict:
    """``inputs`` (from :func:`base_provenance`, filled by the embedding step) + the evaluation's own choices."""
    out = base_provenance()
    out.update({k: v for k, v in inputs.items() if k in out or k == "embed_settings"})
    out.update({
        "protocol": protocol.as_dict() if hasattr(protocol, "as_dict") else protocol,
        "redux": str(redux),
        "level": level,
        "maxlen": None if maxlen is None else float(maxlen),
        "world_size": int(world_size),
        "created": now_utc(),
    })
    if settings:
        out["settings"] = settings
    return out
