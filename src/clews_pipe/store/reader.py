"""Read-only access to a feature store: the index and memory-mapped frame windows."""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clews_pipe.errors import ClewsError
from clews_pipe.features.cqt_params import CQTParams
from clews_pipe.store import track_table
from clews_pipe.store import layout
from clews_pipe.store.backends import backend_module


_FEATURE_CODES = tuple(track_table.STATUSES.index(s) for s in track_table.WITH_FEATURES)

DEFAULT_MAX_OPEN_MAPS = 128
"""Open part memory maps kept per reader (each holds one file descriptor): well under the
``ulimit -n 1024`` many clusters set, even with several DataLoader workers per process."""
MAX_OPEN_MAPS_ENV = "CLEWS_PIPE_MAX_OPEN_MAPS"


def resolve_max_open_maps(value: int | None = None) -> int:
    """``value``, else ``$CLEWS_PIPE_MAX_OPEN_MAPS``, else DEFAULT_MAX_OPEN_MAPS; must be >= 1."""
    source = "max_open_maps"
    if value is None:
        raw = os.environ.get(MAX_OPEN_MAPS_ENV)
        if raw is None:
            return DEFAULT_MAX_OPEN_MAPS
        source, value = f"${MAX_OPEN_MAPS_ENV}", raw
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ClewsError(f"{source}: expected a positive integer, got {value!r}") from None
    if number < 1:
        raise ClewsError(f"{source}: expected a positive integer, got {value!r}")
    return number


@dataclass(frozen=True)
class TrackLookup:
    """Where each track's frames are: ids (pandas Index, O(1) get_loc), part code, frame
    offset, n_frames, status code (position in STATUSES, -1 unknown)."""

    ids: pd.Index
    part_names: list[str]
    part_codes: np.ndarray
    offsets: np.ndarray
    n_frames: np.ndarray
    status_codes: np.ndarray

    @classmethod
    def from_index(cls, index: pd.DataFrame) -> "TrackLookup":
        part_codes, part_names = pd.factorize(index["part"])
        status_codes = pd.Categorical(index["status"], categories=list(track_table.STATUSES)).codes
        return cls(
            ids=index.index,
            part_names=[str(p) for p in part_names],
            part_codes=part_codes.astype(np.int32),
            offsets=index["offset"].to_numpy(np.int64),
            n_frames=index["n_frames"].to_numpy(np.int64),
            status_codes=np.asarray(status_codes, dtype=np.int8),
        )


def read_manifest(part_dir: Path) -> dict:
    return layout.read_json(part_dir / layout.PART_MANIFEST, "part manifest")


def load_index(root: Path, damaged: dict[str, str] | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """Consolidated index plus every finished part not yet in it, latest record per track.

    Returns (index with track_id and seq columns, {part name: seq} of the parts it covers).
    Temporary (unfinished) parts are ignored. A part whose manifest or index fragment cannot
    be read raises a ClewsError naming it, or, when ``damaged`` is a dict, is left out and
    recorded there ({part: problem}).
    """
    parts_dir = root / layout.PARTS_DIR
    consolidated_path = root / layout.CONSOLIDATED_INDEX
    if consolidated_path.exists():
        frame, parts = track_table.read_consolidated(consolidated_path)
    else:
        frame, parts = track_table.empty_index(), {}
    new_names = [n for n in layout.finished_part_names(parts_dir) if n not in parts]
    if not new_names:
        return frame.to_pandas(), dict(parts)
    pieces = [frame]
    parts = dict(parts)
    for name in new_names:
        try:
            manifest = read_manifest(parts_dir / name)
            seq = manifest.get("seq", 0)
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise ClewsError(f"{parts_dir / name / layout.PART_MANIFEST}: manifest key 'seq' is {seq!r}, expected int")
            pieces.append(track_table.read_fragment(parts_dir / name / layout.PART_INDEX, name, seq))
        except ClewsError as exc:
            if damaged is None:
                raise
            damaged[name] = str(exc)
            continue
        parts[name] = seq
    return track_table.merge_latest(pieces), parts


def open_store(path, tolerate_damaged: bool = False, max_open_maps: int | None = None) -> "FeatureStore":
    """Open the store at ``path`` read-only; ClewsError naming ``path`` if it is not a store.
    ``tolerate_damaged``: parts whose manifest or index fragment is unreadable are left out and
    listed in ``damaged_parts`` (``store verify``) instead of failing the open.

    ``max_open_maps``: how many part memory maps (one file descriptor each) stay open at once,
    least recently used closed first (None: ``$CLEWS_PIPE_MAX_OPEN_MAPS`` or 128)."""
    return FeatureStore(path, tolerate_damaged=tolerate_damaged, max_open_maps=max_open_maps)


class FeatureStore:
    """A feature store opened for reading.

    ``index``: DataFrame indexed by track_id with the other INDEX_COLUMNS. ``read`` serves a
    frame window of one track as a read-only view into the part's memory map. Picklable:
    memory maps are dropped when pickled and reopened lazily. At most ``max_open_maps`` part
    maps are open at a time (least recently used dropped first), so a reader sampling across
    thousands of parts holds a bounded number of file descriptors.
    """

    def __init__(self, path, tolerate_damaged: bool = False, max_open_maps: int | None = None):
        self.max_open_maps = resolve_max_open_maps(max_open_maps)
        self.root = Path(path)
        self.meta = layout.read_store_meta(self.root)
        self.damaged_parts: dict[str, str] = {}
        frame, parts = load_index(self.root, self.damaged_parts if tolerate_damaged else None)
        self.part_seqs = parts
        self._index = frame.drop(columns=[track_table.SEQ_COLUMN]).set_index("track_id")
        self._lookup: TrackLookup | None = None
        self._reset_caches()

    @property
    def index(self) -> pd.DataFrame:
        """The track index (track_id → INDEX_COLUMNS). An unpickled copy reloads it from disk
        on first access, restricted to the parts the original had seen."""
        if self._index is None:
            frame, _parts = load_index(self.root)
            frame = frame[frame["part"].isin(list(self.part_seqs)).to_numpy()]
            self._index = frame.drop(columns=[track_table.SEQ_COLUMN]).set_index("track_id")
        return self._index

    # -- metadata -------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        return self.root

    @property
    def backend(self) -> str:
        return self.meta["backend"]

    @property
    def cqt_params(self) -> dict:
        return dict(self.meta["cqt_params"])

    @property
    def cqt(self) -> "CQTParams":
        """The stored CQT settings as the typed value (what models are checked against)."""
        try:
            return CQTParams.from_dict(self.meta["cqt_params"])
        except ClewsError as exc:
            raise ClewsError(f"{self.path}: store.json {exc}") from None

    @property
    def frame_rate(self) -> float:
        return float(self.meta["frame_rate"])

    @property
    def n_bins(self) -> int:
        return int(self.meta["n_bins"])

    @property
    def attrs(self) -> dict:
        return dict(self.meta.get("attrs", {}))

    def __len__(self) -> int:
        return len(self.lookup().ids)

    def __contains__(self, track_id) -> bool:
        return track_id in self.lookup().ids

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r}, backend={self.backend!r}, tracks={len(self.lookup().ids)})"

    # -- pickling / lifetime -----------------------------------------------------------------
    def _reset_caches(self) -> None:
        self._maps: OrderedDict[str, np.ndarray | None] = OrderedDict()
        self._manifests: dict[str, dict] = {}

    def __getstate__(self) -> dict:
        """Only what ``read`` needs travels (≈20 bytes a track): the full index does not; an
        unpickled copy reloads it lazily. Memory maps are reopened lazily too."""
        return {"root": self.root, "meta": self.meta, "part_seqs": self.part_seqs, "lookup": self.lookup(),
                "max_open_maps": self.max_open_maps}

    def __setstate__(self, state: dict) -> None:
        self.root, self.meta, self.part_seqs = state["root"], state["meta"], state["part_seqs"]
        self.damaged_parts = {}
        self.max_open_maps = state.get("max_open_maps", DEFAULT_MAX_OPEN_MAPS)
        self._lookup = state["lookup"]
        self._index = None
        self._reset_caches()

    def close(self) -> None:
        """Drop the memory maps (they reopen lazily on the next read)."""
        self._reset_caches()

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------------
    def lookup(self) -> "TrackLookup":
        """Compact per-track location table used by ``read`` (built from the index once)."""
        if self._lookup is None:
            self._lookup = TrackLookup.from_index(self.index)
        return self._lookup

    def manifest(self, part: str) -> dict:
        """The part's ``part.json``; ClewsError naming it when unreadable or damaged."""
        if part not in self._manifests:
            part_dir = self.root / layout.PARTS_DIR / part
            manifest = read_manifest(part_dir)
            problems = layout.manifest_problems(manifest)
            if problems:
                raise ClewsError(f"{part_dir / layout.PART_MANIFEST}: {problems[0]} (damaged part manifest)")
            self._manifests[part] = manifest
        return self._manifests[part]

    def part_frames(self, part: str):
        """The whole part as a read-only memory map (or None when it must be read through the
        backend library because its bytes are not raw, or when it has no frames).

        Maps are cached least-recently-used first out: opening one beyond ``max_open_maps``
        drops the oldest (its descriptor closes once no view returned by ``read`` is alive)."""
        if part in self._maps:
            self._maps.move_to_end(part)
            return self._maps[part]
        while len(self._maps) >= self.max_open_maps:
            self._maps.popitem(last=False)
        manifest = self.manifest(part)
        mapped = None
        if manifest.get("raw") and manifest["n_frames"] > 0:
            data_path = self.root / layout.PARTS_DIR / part / manifest["data_file"]
            shape = (int(manifest["n_frames"]), int(manifest["n_bins"]))
            try:
                mapped = np.memmap(data_path, dtype=layout.DTYPE, mode="r",
                                   offset=int(manifest["data_offset"]), shape=shape)
            except (OSError, ValueError) as exc:
                raise ClewsError(f"{data_path}: cannot memory-map part {part} ({exc})") from None
        self._maps[part] = mapped
        return mapped

    def open_maps(self) -> int:
        """How many part memory maps this reader holds now (≤ ``max_open_maps``)."""
        return sum(1 for m in self._maps.values() if m is not None)

    def read(self, track_id, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``[start:stop]`` (Python slice semantics) of a track: (n, n_bins) float16.

        A read-only view into the memory map (copy it before writing to it).
        """
        lk = self.lookup()
        try:
            row = lk.ids.get_loc(track_id)
        except (KeyError, TypeError):
            raise ClewsError(f"track {track_id!r} is not in store {self.root}") from None
        if not isinstance(row, (int, np.integer)):
            raise ClewsError(f"track {track_id!r} is indexed more than once in store {self.root}")
        status = lk.status_codes[row]
        if status not in _FEATURE_CODES:
            raise ClewsError(f"track {track_id!r} has no features in store {self.root} "
                             f"(status {track_table.STATUSES[status] if status >= 0 else 'unknown'})")
        n_frames, part, base = int(lk.n_frames[row]), lk.part_names[lk.part_codes[row]], int(lk.offsets[row])
        lo, hi, _ = slice(start, stop).indices(n_frames)
        hi = max(hi, lo)
        if hi == lo:
            return np.zeros((0, self.n_bins), dtype=np.float16)
        mapped = self.part_frames(part)
        if mapped is not None:
            return mapped[base + lo: base + hi]
        return backend_module(self.backend).read_frames(self.root / layout.PARTS_DIR / part, base + lo, base + hi)

    # -- queries ------------------------------------------------------------------------------
    def tracks(self, split: str | None = None, statuses=("ok", "truncated")) -> pd.DataFrame:
        """Index rows of one split (None: all) whose status is in ``statuses`` (None: any)."""
        keep = np.ones(len(self.index), dtype=bool)
        if split is not None:
            keep &= (self.index["split"] == split).to_numpy()
        if statuses is not None:
            keep &= self.index["status"].isin(list(statuses)).to_numpy()
        return self.index[keep]

    def summary(self, include_problems: bool = False) -> dict:
        """Counts per split and status, hours of audio, frames, bytes on disk (JSON-ready)."""
        idx = self.index
        with_features = idx["status"].isin(track_table.WITH_FEATURES)
        by_split = idx.groupby(["split", "status"]).size()
        splits: dict[str, dict[str, int]] = {}
        for (split, status), count in by_split.items():
            splits.setdefault(str(split), {s: 0 for s in track_table.STATUSES})[str(status)] = int(count)
        statuses = {s: int(c) for s, c in idx["status"].value_counts().items()}
        parts_dir = self.root / layout.PARTS_DIR
        summary = {
            "path": str(self.root),
            "backend": self.backend,
            "created": self.meta.get("created"),
            "frame_rate": self.frame_rate,
            "n_bins": self.n_bins,
            "cqt_params": self.cqt_params,
            "tracks": int(len(idx)),
            "statuses": {s: statuses.get(s, 0) for s in track_table.STATUSES},
            "splits": splits,
            "hours": float(idx["duration"].to_numpy()[with_features.to_numpy()].sum() / 3600.0),
            "frames": int(idx["n_frames"].sum()),
            "parts": len(self.part_seqs),
            "unconsolidated_parts": len(set(self.part_seqs) - self._consolidated_parts()),
            "temporary_parts": len(layout.temp_part_names(parts_dir)),
            "damaged_parts_set_aside": len(layout.damaged_part_names(parts_dir)),
            "bytes_on_disk": layout.tree_bytes(self.root),
        }
        summary["duplicates"] = self.duplicates()
        if include_problems:
            bad = idx[idx["status"] != "ok"]
            summary["problems"] = [
                {"track_id": str(t), "status": str(s), "error": str(e), "path": str(p)}
                for t, s, e, p in zip(bad.index, bad["status"], bad["error"], bad["path"])
            ]
        return summary

    def duplicates(self) -> list[dict]:
        """Track ids the metadata of the last extract listed in more than one clique or split
        (``[{"track_id", "entries": [{"clique", "split", "version"}, ...]}]``, first entry kept)."""
        path = self.root / layout.DUPLICATES
        if not path.exists():
            return []
        try:
            import json

            with open(path) as fh:
                found = json.load(fh).get("duplicates", [])
        except (OSError, ValueError, AttributeError) as exc:
            raise ClewsError(f"{path}: unreadable list of duplicate track ids ({exc})") from None
        if not isinstance(found, list) or not all(isinstance(d, dict) and "track_id" in d for d in found):
            raise ClewsError(f"{path}: not a list of duplicate track ids")
        return found

    def _consolidated_parts(self) -> set[str]:
        path = self.root / layout.CONSOLIDATED_INDEX
        if not path.exists():
            return set()
        import json

        import pyarrow.parquet as pq

        meta = pq.read_schema(path).metadata or {}
        return set(json.loads(meta.get(track_table.PARTS_METADATA_KEY, b"{}")))

    def verify(self) -> list[str]:
        """One line per problem found (empty list: the store is sound)."""
        from clews_pipe.store.verify import verify_store

        return verify_store(self)
