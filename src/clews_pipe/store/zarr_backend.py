"""zarr backend: each part's frames are one zarr v3 array with a single chunk and only the
``bytes`` (little-endian) codec, so the chunk file is the raw (n_frames, n_bins) float16 array
that ``np.memmap`` maps directly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

DATA_NAME = "frames.zarr"
_CHUNK_KEY = ("c", "0", "0")


def write_frames(part_dir: Path, frames: np.ndarray) -> dict:
    """Write ``frames`` under ``part_dir``; return the manifest fields locating the raw bytes."""
    import zarr
    from zarr.codecs import BytesCodec

    n_frames, n_bins = frames.shape
    array = zarr.create_array(
        store=str(part_dir / DATA_NAME),
        shape=frames.shape,
        chunks=(max(n_frames, 1), n_bins),
        dtype="float16",
        compressors=None,
        filters=None,
        serializer=BytesCodec(endian="little"),
        fill_value=0,
        config={"write_empty_chunks": True},
        zarr_format=3,
    )
    if n_frames:
        array[...] = frames
    raw = raw_layout_ok(part_dir, n_frames, n_bins)
    return {
        "data_file": str(Path(DATA_NAME, *_CHUNK_KEY)) if raw else DATA_NAME,
        "data_offset": 0,
        "raw": raw,
    }


def raw_layout_ok(part_dir: Path, n_frames: int, n_bins: int) -> bool:
    """True when the array's single chunk file holds exactly the raw little-endian float16 data."""
    meta_path = part_dir / DATA_NAME / "zarr.json"
    try:
        with open(meta_path) as fh:
            meta = json.load(fh)
    except (OSError, ValueError):
        return False
    expected_nbytes = n_frames * n_bins * 2
    ok = (
        meta.get("zarr_format") == 3
        and meta.get("data_type") == "float16"
        and meta.get("shape") == [n_frames, n_bins]
        and meta.get("chunk_grid", {}).get("configuration", {}).get("chunk_shape") == [max(n_frames, 1), n_bins]
        and meta.get("chunk_key_encoding") == {"name": "default", "configuration": {"separator": "/"}}
        and meta.get("codecs") == [{"name": "bytes", "configuration": {"endian": "little"}}]
        and not meta.get("storage_transformers")
    )
    if not ok:
        return False
    if n_frames == 0:
        return True
    chunk = part_dir.joinpath(DATA_NAME, *_CHUNK_KEY)
    return chunk.is_file() and os.path.getsize(chunk) == expected_nbytes


def read_frames(part_dir: Path, start: int, stop: int) -> np.ndarray:
    """Fallback read through zarr (used only when the chunk file is not raw bytes)."""
    import zarr

    return np.asarray(zarr.open_array(str(part_dir / DATA_NAME), mode="r")[start:stop], dtype=np.float16)


def check_layout(part_dir: Path, manifest: dict) -> list[str]:
    """Problems with the part's zarr array compared with its manifest (empty list when fine)."""
    import zarr

    try:
        array = zarr.open_array(str(part_dir / DATA_NAME), mode="r")
    except Exception as exc:  # zarr raises several types for a broken array
        return [f"zarr array unreadable ({type(exc).__name__}: {exc})"]
    n_frames, n_bins = manifest["n_frames"], manifest["n_bins"]
    problems = []
    if tuple(array.shape) != (n_frames, n_bins):
        problems.append(f"zarr array shape {tuple(array.shape)} != manifest ({n_frames}, {n_bins})")
    if array.dtype != np.float16:
        problems.append(f"zarr array dtype {array.dtype} != float16")
    if manifest.get("raw") and not raw_layout_ok(part_dir, n_frames, n_bins):
        problems.append("zarr chunk file is not the raw float16 layout recorded in the manifest")
    return problems
