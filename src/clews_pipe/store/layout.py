"""On-disk layout of a feature store: paths, ``store.json``, part manifests, atomic writes.

```
<store>/store.json              format, backend, cqt_params, frame_rate, n_bins, created, attrs
<store>/index.parquet           consolidated index (optional; written by ``consolidate``)
<store>/duplicates.json         ids the metadata lists in more than one clique or split (first kept)
<store>/parts/<name>/           one finished part (renamed into place when complete)
        part.json               manifest: data file, byte offset, n_frames, crc32, write sequence
        index.parquet           the part's index fragment
        frames.zarr | frames.h5 the part's frames, (n_frames, n_bins) float16, uncompressed
<store>/parts/.tmp-<name>-<uuid>/   a part being written (ignored by every reader)
<store>/parts/.damaged-<name>-<time>/  a part a rerun found damaged (moved aside, never read)
<store>/.lock                   the advisory lock an extract holds
<store>/logs/                   the Dask workers' logs of the last extracts
```
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

from clews_pipe.atomic import TEMP_MARK, fsync_dir
from clews_pipe.atomic import read_json_object as read_json
from clews_pipe.errors import ClewsError

FORMAT_NAME = "clews-pipe-feature-store"
FORMAT_VERSION = 1
BACKENDS = ("zarr", "hdf5")
STORE_META = "store.json"
CONSOLIDATED_INDEX = "index.parquet"
PARTS_DIR = "parts"
PART_MANIFEST = "part.json"
PART_INDEX = "index.parquet"
DUPLICATES = "duplicates.json"  # ids the metadata lists in more than one clique or split (extract writes it)
TEMP_PREFIX = TEMP_MARK  # temporary parts and files: never read, swept by reruns
DTYPE = "<f2"

_PART_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def check_part_name(name: str) -> str:
    if not isinstance(name, str) or not _PART_NAME.match(name):
        raise ClewsError(
            f"invalid part name {name!r}: use letters, digits, '.', '_', '-' (not starting with '.')"
        )
    return name


def temp_part_dir(parts_dir: Path, name: str) -> Path:
    return parts_dir / f"{TEMP_PREFIX}{name}-{uuid.uuid4().hex}"


def finished_part_names(parts_dir: Path) -> list[str]:
    """Names of the finished parts (temporary directories of running/killed writers excluded)."""
    try:
        names = os.listdir(parts_dir)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if not n.startswith(".") and (parts_dir / n).is_dir())


def temp_part_names(parts_dir: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(parts_dir) if n.startswith(TEMP_PREFIX))
    except FileNotFoundError:
        return []


DAMAGED_PREFIX = ".damaged-"  # parts a rerun found damaged and moved aside (never read)


def damaged_part_names(parts_dir: Path) -> list[str]:
    try:
        return sorted(n for n in os.listdir(parts_dir) if n.startswith(DAMAGED_PREFIX))
    except FileNotFoundError:
        return []


#: manifest keys and the types every reader relies on
MANIFEST_FIELDS: dict[str, tuple[type, ...]] = {
    "n_frames": (int,), "n_bins": (int,), "data_file": (str,), "data_offset": (int,),
    "data_nbytes": (int,), "crc32": (int,), "n_records": (int,), "seq": (int,), "raw": (bool,),
}


def manifest_problems(manifest: dict) -> list[str]:
    """What is wrong with a parsed ``part.json`` (missing keys, wrong types, impossible values)."""
    problems = []
    for key, types in MANIFEST_FIELDS.items():
        value = manifest.get(key)
        if not isinstance(value, types) or (types == (int,) and isinstance(value, bool)):
            problems.append(f"manifest key {key!r} is {value!r}, expected {types[0].__name__}")
    if problems:
        return problems
    if manifest["n_frames"] < 0 or manifest["data_offset"] < 0 or manifest["n_records"] < 0:
        problems.append("manifest has a negative n_frames, data_offset or n_records")
    elif manifest["data_nbytes"] != manifest["n_frames"] * manifest["n_bins"] * 2:
        problems.append(f"manifest data_nbytes {manifest['data_nbytes']} != n_frames x n_bins x 2")
    if ".." in Path(manifest["data_file"]).parts or Path(manifest["data_file"]).is_absolute():
        problems.append(f"manifest data_file {manifest['data_file']!r} points outside the part")
    return problems


def read_store_meta(root: Path) -> dict:
    """``store.json`` of the store at ``root``; ClewsError naming ``root`` if it is not a store."""
    meta_path = root / STORE_META
    if not meta_path.is_file():
        raise ClewsError(f"{root}: not a clews-pipe feature store (no {STORE_META})")
    meta = read_json(meta_path, "store metadata")
    if meta.get("format") != FORMAT_NAME:
        raise ClewsError(f"{meta_path}: not a clews-pipe feature store (format={meta.get('format')!r})")
    if meta.get("version") != FORMAT_VERSION:
        raise ClewsError(f"{meta_path}: unsupported store format version {meta.get('version')!r}")
    if meta.get("backend") not in BACKENDS:
        raise ClewsError(f"{meta_path}: unknown backend {meta.get('backend')!r}")
    for key, types in (("cqt_params", (dict,)), ("n_bins", (int,)), ("frame_rate", (int, float))):
        value = meta.get(key)
        if not isinstance(value, types) or isinstance(value, bool):
            raise ClewsError(f"{meta_path}: key {key!r} is {value!r}, expected {types[0].__name__} (damaged store metadata)")
    if meta["n_bins"] < 1 or not meta["frame_rate"] > 0:
        raise ClewsError(f"{meta_path}: n_bins {meta['n_bins']} / frame_rate {meta['frame_rate']} must be positive")
    if not isinstance(meta.get("attrs", {}), dict):
        raise ClewsError(f"{meta_path}: key 'attrs' must be an object")
    return meta


def fsync_tree(directory: Path) -> None:
    """fsync every file below ``directory`` and the directories themselves (before a rename)."""
    for dirpath, _dirnames, filenames in os.walk(directory):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def tree_bytes(directory: Path) -> int:
    total = 0
    for dirpath, _dirnames, filenames in os.walk(directory):
        for name in filenames:
            try:
                total += os.path.getsize(os.path.join(dirpath, name))
            except OSError:
                pass
    return total
