"""hdf5 backend: each part's frames are one contiguous (unchunked, uncompressed) dataset
``frames`` in ``frames.h5``; readers memory-map it at ``dataset.id.get_offset()``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA_NAME = "frames.h5"
DATASET = "frames"


def write_frames(part_dir: Path, frames: np.ndarray) -> dict:
    import h5py

    path = part_dir / DATA_NAME
    with h5py.File(path, "w") as fh:
        fh.create_dataset(DATASET, data=frames, dtype="<f2", chunks=None, compression=None)
    offset = dataset_offset(path)
    raw = frames.shape[0] == 0 or offset is not None
    return {"data_file": DATA_NAME, "data_offset": int(offset or 0), "raw": raw}


def dataset_offset(path: Path) -> int | None:
    """Byte offset of the contiguous dataset in the file (None if unallocated/not contiguous)."""
    import h5py

    with h5py.File(path, "r") as fh:
        dset = fh[DATASET]
        if dset.chunks is not None or dset.compression is not None:
            return None
        return dset.id.get_offset()


def read_frames(part_dir: Path, start: int, stop: int) -> np.ndarray:
    """Fallback read through h5py (used only when the dataset cannot be memory-mapped)."""
    import h5py

    with h5py.File(part_dir / DATA_NAME, "r") as fh:
        return np.asarray(fh[DATASET][start:stop], dtype=np.float16)


def check_layout(part_dir: Path, manifest: dict) -> list[str]:
    import h5py

    try:
        with h5py.File(part_dir / DATA_NAME, "r") as fh:
            dset = fh[DATASET]
            shape, dtype = tuple(dset.shape), dset.dtype
            offset = dset.id.get_offset() if dset.chunks is None else None
    except Exception as exc:  # h5py raises OSError/KeyError/RuntimeError for broken files
        return [f"hdf5 dataset unreadable ({type(exc).__name__}: {exc})"]
    n_frames, n_bins = manifest["n_frames"], manifest["n_bins"]
    problems = []
    if shape != (n_frames, n_bins):
        problems.append(f"hdf5 dataset shape {shape} != manifest ({n_frames}, {n_bins})")
    if dtype != np.dtype("<f2"):
        problems.append(f"hdf5 dataset dtype {dtype} != float16")
    if manifest.get("raw") and n_frames and offset != manifest.get("data_offset"):
        problems.append(f"hdf5 dataset offset {offset} != manifest {manifest.get('data_offset')}")
    return problems
