"""A rerun reconciles the store with the disk and the metadata instead of trusting its own index.

- :func:`sweep_temporaries` removes temporary parts and files of dead runs (older than the job);
- :func:`damaged_parts` finds the parts whose directory is gone or that fail their manifest
  check (with ``crc``: also the crc32 of every byte); :func:`drop_parts` moves them aside
  (``parts/.damaged-<name>-<time>``, never read, kept for inspection) and removes their rows
  from the consolidated index, so their tracks are no longer "done" and are extracted again;
- :func:`apply_metadata` overwrites clique, version, split, title and artist of the indexed
  tracks with the catalog's values (no decoding): a clique moved from train to test follows.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from clews_pipe.store import track_table
from clews_pipe.store import layout

#: the index columns that come from the metadata alone (applied on rerun without decoding)
METADATA_COLUMNS = ("clique", "version", "split", "title", "artist")
DAMAGED_PREFIX = layout.DAMAGED_PREFIX


def sweep_temporaries(root: Path, older_than: float) -> list[str]:
    """Remove temporary parts (``parts/.tmp-*``) and temporary files in the store root whose
    modification time is before ``older_than`` (a ``time.time()``); returns the names removed."""
    removed = []
    for folder in (root / layout.PARTS_DIR, root):
        try:
            names = [n for n in os.listdir(folder) if n.startswith(layout.TEMP_PREFIX)]
        except OSError:
            continue
        for name in names:
            path = folder / name
            try:
                if path.lstat().st_mtime >= older_than:
                    continue  # a live writer's
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            except OSError:
                continue
            removed.append(name)
    return sorted(removed)


def damaged_parts(root: Path, backend: str, n_bins: int, parts: list[str], crc: bool = False) -> dict[str, str]:
    """{part: first problem} for the ``parts`` that are missing or fail their checks."""
    from concurrent.futures import ThreadPoolExecutor

    from clews_pipe.store.verify import part_problems

    def check(part: str) -> list[str]:
        return part_problems(root, backend, n_bins, part, crc=crc)

    with ThreadPoolExecutor(max_workers=8) as pool:  # stat/open latency on network filesystems
        found = list(pool.map(check, parts))
    return {part: problems[0] for part, problems in zip(parts, found) if problems}


def drop_parts(root: Path, frame: pd.DataFrame, parts: dict[str, int], bad: dict[str, str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Move the ``bad`` parts aside and write the consolidated index without their rows;
    returns the new (index, parts)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    parts_dir = root / layout.PARTS_DIR
    for part in bad:
        source = parts_dir / part
        if source.exists():
            os.rename(source, parts_dir / f"{DAMAGED_PREFIX}{part}-{stamp}")
    keep = ~frame["part"].isin(list(bad)).to_numpy()
    frame = frame[keep].reset_index(drop=True)
    parts = {name: seq for name, seq in parts.items() if name not in bad}
    track_table.write_consolidated(root / layout.CONSOLIDATED_INDEX, frame, parts)
    layout.fsync_dir(parts_dir)
    return frame, parts


def apply_metadata(frame: pd.DataFrame, catalog: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``frame`` (the index) with METADATA_COLUMNS taken from ``catalog`` for every track in
    both; returns (new frame, number of tracks whose metadata changed)."""
    if frame.empty or catalog.empty:
        return frame, 0
    wanted = catalog.drop_duplicates("track_id", keep="first").set_index("track_id")
    rows = frame["track_id"].map(pd.Series(np.arange(len(wanted)), index=wanted.index))
    present = rows.notna().to_numpy()
    if not present.any():
        return frame, 0
    take = rows[present].astype(np.int64).to_numpy()
    changed = np.zeros(len(frame), dtype=bool)
    frame = frame.copy()
    for column in METADATA_COLUMNS:
        if column not in wanted.columns:
            continue
        new = wanted[column].fillna("").astype(str).to_numpy()[take]
        old = frame[column].fillna("").astype(str).to_numpy()[present]
        differs = new != old
        if differs.any():
            idx = np.flatnonzero(present)[differs]
            frame.loc[idx, column] = new[differs]
            changed[idx] = True
    return frame, int(changed.sum())
