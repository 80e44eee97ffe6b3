"""The one place that tells the embeddings formats apart and opens either.

An embeddings set is a chunked store (a folder, :mod:`clews_pipe.embeddings.zarr_format`, rows
read lazily) or an ``.npz`` file (:mod:`clews_pipe.embeddings.npz_format`). Every reader of
embeddings (evaluate, index build, conversions) comes through :func:`open_embeddings`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clews_pipe.embeddings.npz_format import Embeddings, load_embeddings
from clews_pipe.embeddings.zarr_format import is_embeddings_store, open_zarr_embeddings
from clews_pipe.errors import ClewsError


def embeddings_layout(path: str | Path) -> str:
    """``"zarr"`` (a chunked store folder), ``"npz"`` (a file) or ``"folder"`` (any other folder,
    e.g. one of ``clews-pipe embed`` outputs); one error line when nothing is there."""
    path = Path(path)
    if path.is_file():
        return "npz"
    if is_embeddings_store(path):
        return "zarr"
    if path.is_dir():
        return "folder"
    raise ClewsError(f"embeddings not found: {path}")


def open_embeddings(path: str | Path) -> Embeddings:
    """An embeddings set from a chunked store (folder) or an ``.npz`` file, rows read on demand
    in both (an uncompressed ``.npz`` member by ``pread``, :mod:`clews_pipe.embeddings.npz_rows`;
    masks and labels in memory), so no rank holds the whole set.

    Any problem → one-line :class:`ClewsError` naming the path."""
    path = Path(path)
    if path.is_file():
        return load_embeddings(path, lazy=True)
    if not path.is_dir():
        raise ClewsError(f"embeddings not found: {path}")
    return open_zarr_embeddings(path)


def read_embeddings(path: str | Path) -> Embeddings:
    """Every array of an embeddings set in memory (a chunked store read whole, or an ``.npz``):
    for conversions, inspection and tests, never the evaluator's path."""
    emb = open_embeddings(path)
    whole = lambda arr: np.asarray(arr)  # noqa: E731
    return Embeddings(
        z=whole(emb.z), mask=whole(emb.mask), clique=emb.clique, track=emb.track,
        queries={t: (whole(zq), whole(mq)) for t, (zq, mq) in emb.queries.items()},
        clique_name=emb.clique_name,
        track_queries=None if emb.track_queries is None else (whole(emb.track_queries[0]), whole(emb.track_queries[1])),
    )
