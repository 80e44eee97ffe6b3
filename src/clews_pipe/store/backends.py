"""Backend lookup: ``zarr`` and ``hdf5`` modules share write_frames / read_frames / check_layout."""

from __future__ import annotations

from types import ModuleType

from clews_pipe.errors import ClewsError
from clews_pipe.store.layout import BACKENDS


def backend_module(name: str) -> ModuleType:
    if name == "zarr":
        from clews_pipe.store import zarr_backend

        return zarr_backend
    if name == "hdf5":
        from clews_pipe.store import hdf5_backend

        return hdf5_backend
    raise ClewsError(f"unknown store backend {name!r} (choose from {', '.join(BACKENDS)})")
