"""The store index: one row per track, keyed by track_id (the youtube_id for Discogs-VI).

Each finished part carries an index fragment; ``consolidate`` merges them into
``<store>/index.parquet``. When the same track_id appears more than once, the record with
the larger write sequence (the part finished later) wins.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from clews_pipe.atomic import atomic_path
from clews_pipe.errors import ClewsError

#: the track record, from catalog to index: what a catalog says of a track (all strings)
TRACK_RECORD_FIELDS = ("track_id", "clique", "version", "split", "title", "artist", "path")
#: the index row: the record plus what extraction found and where the features are
INDEX_COLUMNS = [*TRACK_RECORD_FIELDS, "duration", "n_frames", "part", "offset", "status", "error"]
STATUSES = ("ok", "truncated", "failed", "missing")
WITH_FEATURES = ("ok", "truncated")
DONE_STATUSES = ("ok", "truncated", "failed")

_STRING_COLUMNS = [c for c in INDEX_COLUMNS if c not in ("duration", "n_frames", "offset")]
SEQ_COLUMN = "seq"  # write sequence (ns timestamp of the part's completion); consolidated file only
PARTS_METADATA_KEY = b"clews_parts"

_SCHEMA = pa.schema(
    [(c, pa.float64() if c == "duration" else pa.int64() if c in ("n_frames", "offset") else pa.string())
     for c in INDEX_COLUMNS]
)
_SCHEMA_WITH_SEQ = _SCHEMA.append(pa.field(SEQ_COLUMN, pa.int64()))


def records_to_table(records: list[dict]) -> pa.Table:
    """Index rows (dicts with every INDEX_COLUMNS key) → an Arrow table with the index schema."""
    columns = {}
    for name in INDEX_COLUMNS:
        values = [r[name] for r in records]
        if name == "duration":
            columns[name] = pa.array(np.asarray(values, dtype=np.float64), pa.float64())
        elif name in ("n_frames", "offset"):
            columns[name] = pa.array(np.asarray(values, dtype=np.int64), pa.int64())
        else:
            columns[name] = pa.array(["" if v is None else str(v) for v in values], pa.string())
    return pa.table(columns, schema=_SCHEMA)


def write_fragment(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path, compression="zstd")


def read_fragment(path: Path, part_name: str, seq: int) -> pa.Table:
    """A part's index fragment with its ``part`` column set to the directory's real name and
    the part's write sequence as ``seq``."""
    try:
        table = pq.read_table(path, schema=_SCHEMA)
    except (OSError, pa.ArrowException) as exc:
        raise ClewsError(f"{path}: unreadable index fragment ({exc})") from None
    n = table.num_rows
    table = table.set_column(INDEX_COLUMNS.index("part"), "part", pa.array([part_name] * n, pa.string()))
    return table.append_column(SEQ_COLUMN, pa.array(np.full(n, seq, dtype=np.int64), pa.int64()))


def read_consolidated(path: Path) -> tuple[pa.Table, dict[str, int]]:
    """The consolidated index (with its ``seq`` column) and the parts it covers {name: seq}."""
    try:
        pfile = pq.ParquetFile(path)
        table = pfile.read()
    except (OSError, pa.ArrowException) as exc:
        raise ClewsError(f"{path}: unreadable store index ({exc})") from None
    meta = pfile.schema_arrow.metadata or {}
    try:
        parts = json.loads(meta[PARTS_METADATA_KEY])
    except (KeyError, ValueError):
        raise ClewsError(f"{path}: store index lacks its list of parts") from None
    return table.replace_schema_metadata(None), {str(k): int(v) for k, v in parts.items()}


def write_consolidated(path: Path, frame: pd.DataFrame, parts: dict[str, int]) -> None:
    """Write the merged index atomically (temp file + rename), recording the parts it covers."""
    table = pa.Table.from_pandas(frame[INDEX_COLUMNS + [SEQ_COLUMN]], schema=_SCHEMA_WITH_SEQ,
                                 preserve_index=False)
    table = table.replace_schema_metadata({PARTS_METADATA_KEY: json.dumps(parts, sort_keys=True)})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def empty_index() -> pa.Table:
    return _SCHEMA_WITH_SEQ.empty_table()


def merge_latest(tables: list[pa.Table]) -> pd.DataFrame:
    """Concatenate index pieces and keep, per track_id, the row with the largest (seq, part)."""
    tables = [t.select(INDEX_COLUMNS + [SEQ_COLUMN]).cast(_SCHEMA_WITH_SEQ) for t in tables if t.num_rows]
    if not tables:
        return empty_index().to_pandas()
    merged = pa.concat_tables(tables).to_pandas()
    if not merged["track_id"].duplicated().any():
        return merged
    merged = merged.sort_values([SEQ_COLUMN, "part"], kind="stable")
    merged = merged.drop_duplicates("track_id", keep="last")
    return merged.reset_index(drop=True)
