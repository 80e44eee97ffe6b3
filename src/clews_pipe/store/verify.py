"""Integrity checks of a feature store: part files, layouts, checksums, index ranges, values."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from clews_pipe.errors import ClewsError, first_line
from clews_pipe.store import track_table
from clews_pipe.store import layout
from clews_pipe.store.backends import backend_module

_BLOCK_FRAMES = 1 << 20  # frames checked per step (168 MiB of float16 at 84 bins)


def part_problems(root: Path, backend: str, n_bins: int, part: str, crc: bool = False) -> list[str]:
    """Everything wrong with finished part ``part`` of the store at ``root`` judged from the part
    alone: directory, manifest, index fragment (readable, ``n_records`` rows, frame ranges inside
    the part), data layout and size, and with ``crc`` the crc32 of every byte. Never raises for a
    damaged part: each problem is one line (without the part's name)."""
    part_dir = root / layout.PARTS_DIR / part
    if not part_dir.is_dir():
        return [f"directory {part_dir} is missing"]
    try:
        manifest = layout.read_json(part_dir / layout.PART_MANIFEST, "part manifest")
    except ClewsError as exc:
        return [str(exc)]
    problems = layout.manifest_problems(manifest)
    if problems:
        return problems
    if manifest["n_bins"] != n_bins:
        return [f"manifest n_bins {manifest['n_bins']} != store {n_bins}"]
    try:
        fragment = track_table.read_fragment(part_dir / layout.PART_INDEX, part, manifest["seq"]).to_pandas()
    except ClewsError as exc:
        return [str(exc)]
    if len(fragment) != manifest["n_records"]:
        problems.append(f"index fragment has {len(fragment)} rows, manifest says {manifest['n_records']}")
    feats = fragment["status"].isin(track_table.WITH_FEATURES).to_numpy()
    starts = fragment["offset"].to_numpy(np.int64)[feats]
    ends = starts + fragment["n_frames"].to_numpy(np.int64)[feats]
    if (starts < 0).any() or (ends > manifest["n_frames"]).any() or (ends < starts).any():
        problems.append(f"index fragment points at frames outside the part's {manifest['n_frames']}")
    try:
        problems += backend_module(backend).check_layout(part_dir, manifest)
    except Exception as exc:  # a backend library failing on a damaged file
        problems.append(f"data unreadable ({type(exc).__name__}: {first_line(exc)})")
    if problems or manifest["n_frames"] == 0:
        return problems
    if manifest["raw"]:
        data_path = part_dir / manifest["data_file"]
        expected_end = manifest["data_offset"] + manifest["data_nbytes"]
        try:
            size = data_path.stat().st_size
        except OSError:
            return [f"data file {data_path} is missing"]
        exact = backend == "zarr"
        if size < expected_end or (exact and size != expected_end):
            return [f"data file {data_path} has {size} bytes, expected {'' if exact else 'at least '}{expected_end}"]
    if crc:
        try:
            _bad, value = _scan_frames(lambda lo, hi: _read_block(root, backend, part, manifest, lo, hi), manifest["n_frames"])
        except Exception as exc:  # unreadable bytes
            return [f"data unreadable ({type(exc).__name__}: {first_line(exc)})"]
        if value != manifest["crc32"]:
            problems.append(f"data checksum {value} != recorded {manifest['crc32']} (corrupted)")
    return problems


def _read_block(root: Path, backend: str, part: str, manifest: dict, lo: int, hi: int) -> np.ndarray:
    part_dir = root / layout.PARTS_DIR / part
    if manifest["raw"]:
        mapped = np.memmap(part_dir / manifest["data_file"], dtype=layout.DTYPE, mode="r",
                           offset=manifest["data_offset"], shape=(manifest["n_frames"], manifest["n_bins"]))
        return np.array(mapped[lo:hi])
    return backend_module(backend).read_frames(part_dir, lo, hi)


def verify_store(store) -> list[str]:
    """Every problem of ``store`` (a FeatureStore), one line each."""
    problems: list[str] = [f"part {part}: {problem}" for part, problem in sorted(store.damaged_parts.items())]
    idx = store.index
    parts_dir = store.root / layout.PARTS_DIR
    with_features = idx["status"].isin(track_table.WITH_FEATURES).to_numpy()
    part_of = idx["part"].to_numpy()
    track_ids = idx.index.to_numpy()
    offsets = idx["offset"].to_numpy(np.int64)
    n_frames = idx["n_frames"].to_numpy(np.int64)

    bad_status = ~idx["status"].isin(track_table.STATUSES).to_numpy()
    for tid, status in zip(track_ids[bad_status], idx["status"].to_numpy()[bad_status]):
        problems.append(f"track {tid}: unknown status {status!r}")
    negative = with_features & ((offsets < 0) | (n_frames < 0))
    for tid in track_ids[negative]:
        problems.append(f"track {tid}: negative offset or n_frames")

    for part in sorted(store.part_seqs):
        rows = np.flatnonzero(with_features & (part_of == part) & ~negative)
        problems.extend(_verify_part(store, parts_dir / part, part, rows, track_ids, offsets, n_frames))

    unknown_part = with_features & ~np.isin(part_of, list(store.part_seqs))
    for tid, part in zip(track_ids[unknown_part], part_of[unknown_part]):
        problems.append(f"track {tid}: its part {part!r} is not in the store")
    return problems


def _verify_part(store, part_dir: Path, part: str, rows, track_ids, offsets, n_frames) -> list[str]:
    if not part_dir.is_dir():
        return [f"part {part}: directory {part_dir} is missing ({len(rows)} tracks index it)"]
    problems = [f"part {part}: {p}" for p in part_problems(store.root, store.backend, store.n_bins, part)]
    if problems:
        return problems
    manifest = store.manifest(part)
    total = int(manifest["n_frames"])
    ends = offsets[rows] + n_frames[rows]
    for tid, end in zip(track_ids[rows][ends > total], ends[ends > total]):
        problems.append(f"track {tid}: frames end at {end} beyond part {part}'s {total} frames")
    if problems or total <= 0:
        return problems
    bad_per_frame, crc = _scan_part(store, part, total)
    if crc != manifest.get("crc32"):
        problems.append(f"part {part}: data checksum {crc} != recorded {manifest.get('crc32')} (corrupted)")
    bad_before = np.concatenate([[0], np.cumsum(bad_per_frame, dtype=np.int64)])
    bad_counts = bad_before[offsets[rows] + n_frames[rows]] - bad_before[offsets[rows]]
    for tid, count in zip(track_ids[rows][bad_counts > 0], bad_counts[bad_counts > 0]):
        problems.append(f"track {tid}: {count} frames with NaN, infinite or negative values (part {part})")
    return problems


def _scan_part(store, part: str, total: int) -> tuple[np.ndarray, int]:
    """Per-frame 'has a non-finite or negative value' flags and the crc32 of the part's bytes."""
    mapped = store.part_frames(part)
    reader = backend_module(store.backend)

    def read(lo: int, hi: int) -> np.ndarray:
        if mapped is not None:
            return np.asarray(mapped[lo:hi])
        return reader.read_frames(store.root / layout.PARTS_DIR / part, lo, hi)

    return _scan_frames(read, total)


def _scan_frames(read, total: int) -> tuple[np.ndarray, int]:
    bad = np.zeros(total, dtype=bool)
    crc = 0
    for lo in range(0, total, _BLOCK_FRAMES):
        hi = min(total, lo + _BLOCK_FRAMES)
        block = np.ascontiguousarray(read(lo, hi), dtype="<f2")
        crc = zlib.crc32(block.reshape(-1).view(np.uint8), crc)
        bad[lo:hi] = ~(np.isfinite(block) & (block >= 0)).all(axis=1)
    return bad, crc
