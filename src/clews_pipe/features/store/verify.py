"""Integrity checks of a feature store: part files, layouts, checksums, index ranges, values."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from clews_pipe.errors import ClewsError
from clews_pipe.features.store import index as store_index
from clews_pipe.features.store import layout
from clews_pipe.features.store.backends import backend_module

_BLOCK_FRAMES = 1 << 20  # frames checked per step (168 MiB of float16 at 84 bins)


def verify_store(store) -> list[str]:
    """Every problem of ``store`` (a FeatureStore), one line each."""
    problems: list[str] = []
    idx = store.index
    parts_dir = store.root / layout.PARTS_DIR
    with_features = idx["status"].isin(store_index.WITH_FEATURES).to_numpy()
    part_of = idx["part"].to_numpy()
    track_ids = idx.index.to_numpy()
    offsets = idx["offset"].to_numpy(np.int64)
    n_frames = idx["n_frames"].to_numpy(np.int64)

    bad_status = ~idx["status"].isin(store_index.STATUSES).to_numpy()
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
    try:
        manifest = store.manifest(part)
    except ClewsError as exc:
        return [f"part {part}: {exc}"]
    problems = [f"part {part}: {p}" for p in backend_module(store.backend).check_layout(part_dir, manifest)]
    total = int(manifest.get("n_frames", -1))
    if manifest.get("n_bins") != store.n_bins:
        problems.append(f"part {part}: manifest n_bins {manifest.get('n_bins')} != store {store.n_bins}")
    ends = offsets[rows] + n_frames[rows]
    for tid, end in zip(track_ids[rows][ends > total], ends[ends > total]):
        problems.append(f"track {tid}: frames end at {end} beyond part {part}'s {total} frames")
    if problems or total <= 0:
        return problems

    data_path = part_dir / manifest["data_file"]
    if manifest.get("raw"):
        expected_end = int(manifest["data_offset"]) + int(manifest["data_nbytes"])
        try:
            size = data_path.stat().st_size
        except OSError:
            return [f"part {part}: data file {data_path} is missing"]
        exact = store.backend == "zarr"
        if size < expected_end or (exact and size != expected_end):
            return [f"part {part}: data file {data_path} has {size} bytes, expected "
                    f"{'' if exact else 'at least '}{expected_end}"]
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
    bad = np.zeros(total, dtype=bool)
    crc = 0
    for lo in range(0, total, _BLOCK_FRAMES):
        hi = min(total, lo + _BLOCK_FRAMES)
        if mapped is not None:
            block = np.asarray(mapped[lo:hi])
        else:
            block = reader.read_frames(store.root / layout.PARTS_DIR / part, lo, hi)
        block = np.ascontiguousarray(block, dtype="<f2")
        crc = zlib.crc32(block.reshape(-1).view(np.uint8), crc)
        bad[lo:hi] = ~(np.isfinite(block) & (block >= 0)).all(axis=1)
    return bad, crc
