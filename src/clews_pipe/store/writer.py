"""Writing a feature store in parts: each part is built under a temporary name and renamed into
place only when complete, so independent processes/hosts with distinct part names never clash
and readers never see half-written data."""

from __future__ import annotations

import json
import os
import shutil
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from clews_pipe.atomic import write_json_atomic
from clews_pipe.errors import ClewsError
from clews_pipe.features.cqt_params import CQTParams
from clews_pipe.store import track_table
from clews_pipe.store import layout
from clews_pipe.store.backends import backend_module

_RECORD_FIELDS = [*track_table.TRACK_RECORD_FIELDS, "duration", "status", "error"]  # given by the extraction task


def _as_params(value: "CQTParams | dict") -> CQTParams:
    return value if isinstance(value, CQTParams) else CQTParams.from_dict(dict(value))


def _normalised(params: dict) -> dict:
    return json.loads(json.dumps(params, sort_keys=True))


def create_store(path, backend: str = "zarr", cqt_params: "CQTParams | dict | None" = None,
                 attrs: dict | None = None) -> "StoreWriter":
    """Create the store at ``path`` or reopen an existing one for appending.

    ``cqt_params`` defaults to ``CQTParams().to_dict()`` for a new store; for an existing store
    it must equal the recorded parameters (None accepts them). ``attrs`` (JSON-serialisable)
    are recorded at creation only. ClewsError when the existing store has another backend or
    other cqt_params, when ``path`` is a non-empty directory that is not a store, or unwritable.
    """
    backend_module(backend)  # validates the name
    root = Path(path)
    meta_path = root / layout.STORE_META
    if not meta_path.exists():
        params = _as_params(cqt_params if cqt_params is not None else CQTParams())
        try:
            cqt_params = _normalised(params.to_dict())
            meta = {
                "format": layout.FORMAT_NAME,
                "version": layout.FORMAT_VERSION,
                "backend": backend,
                "cqt_params": cqt_params,
                "frame_rate": params.frame_rate,
                "n_bins": params.n_bins,
                "dtype": "float16",
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "attrs": _normalised(attrs or {}),
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise ClewsError(f"invalid cqt_params/attrs for store {root}: {exc}") from None
        check_new_store_target(root)
        try:
            (root / layout.PARTS_DIR).mkdir(parents=True, exist_ok=True)
            _publish_meta(meta_path, meta)
        except OSError as exc:
            raise ClewsError(f"{root}: cannot create feature store ({exc.strerror or exc})") from None
    meta = layout.read_store_meta(root)
    if meta["backend"] != backend:
        raise ClewsError(f"{root}: existing store uses backend {meta['backend']!r}, not {backend!r}")
    if cqt_params is not None:
        wanted = _normalised(_as_params(cqt_params).to_dict())
        if wanted != meta["cqt_params"]:
            raise ClewsError(f"{root}: existing store has cqt_params {meta['cqt_params']}, not {wanted}")
    _probe_writable(root / layout.PARTS_DIR)
    return StoreWriter(root, meta)


#: names a store folder may hold before its store.json exists (a concurrent creator's parts/ and
#: temporary store.json, the extract lock)
_PRE_STORE_NAMES = (layout.PARTS_DIR, layout.STORE_META, ".lock")


def check_new_store_target(root: Path) -> None:
    """ClewsError when a store cannot be created at ``root`` (a file, or a non-empty folder that
    is not a store); nothing is changed."""
    root = Path(root)
    if (root / layout.STORE_META).exists():
        return
    if root.exists() and not root.is_dir():
        raise ClewsError(f"{root}: exists and is not a directory")
    if root.is_dir() and any(n not in _PRE_STORE_NAMES and not n.startswith(layout.TEMP_PREFIX)
                             for n in os.listdir(root)):
        raise ClewsError(f"{root}: directory exists, is not empty and is not a clews-pipe feature store")


def _probe_writable(folder: Path) -> None:
    """Create and remove a temporary folder in ``folder``: a real write, so a read-only mount or
    missing permission is one ClewsError before any decoding (``os.access`` lies for root)."""
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(prefix=f"{layout.TEMP_PREFIX}probe-", dir=folder))
    except OSError as exc:
        raise ClewsError(f"{folder}: not writable ({exc.strerror or exc})") from None


def _publish_meta(meta_path: Path, meta: dict) -> None:
    """Create store.json exclusively: if a concurrent creator won, its file is kept."""
    tmp = meta_path.with_name(f"{layout.TEMP_PREFIX}{meta_path.name}-{os.getpid()}-{time.time_ns()}")
    with open(tmp, "w") as fh:
        json.dump(meta, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, meta_path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


class StoreWriter:
    """Appends parts to a store. Obtain it with :func:`create_store`."""

    def __init__(self, root: Path, meta: dict):
        self.root = root
        self.meta = meta
        self.backend = meta["backend"]
        self.n_bins = int(meta["n_bins"])
        self.parts_dir = root / layout.PARTS_DIR

    @property
    def path(self) -> Path:
        return self.root

    def __repr__(self) -> str:
        return f"StoreWriter({str(self.root)!r}, backend={self.backend!r})"

    def _current_index(self) -> tuple[pd.DataFrame, dict[str, int]]:
        from clews_pipe.store.reader import load_index

        return load_index(self.root)

    def done_track_ids(self) -> set[str]:
        """Track ids whose latest record (in finished parts) is ok, truncated or failed."""
        frame, _parts = self._current_index()
        done = frame["status"].isin(track_table.DONE_STATUSES).to_numpy()
        return set(frame["track_id"].to_numpy()[done].tolist())

    def write_part(self, part_name: str, records: list[dict], features: list) -> str:
        """Write one part atomically; returns the part's final directory name.

        ``records``: dicts with every INDEX_COLUMNS key except n_frames/part/offset (title,
        artist, path, error, clique, version, split default to "", duration to 0.0).
        ``features``: per record a (frames, n_bins) float16 array for ok/truncated, None for
        failed/missing. A later record of the same track_id (in this part) supersedes an
        earlier one. If ``part_name`` is already taken, a unique suffix is appended.
        """
        layout.check_part_name(part_name)
        if len(records) != len(features):
            raise ClewsError(f"part {part_name}: {len(records)} records but {len(features)} feature arrays")
        rows, arrays = self._validated(part_name, records, features)
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum([a.shape[0] for a in arrays], out=offsets[1:])
        frames = (np.concatenate(arrays, axis=0) if arrays
                  else np.zeros((0, self.n_bins), dtype=np.float16))
        frames = np.ascontiguousarray(frames, dtype="<f2")
        feature_slot = 0
        for row in rows:
            row["part"] = part_name
            if row["status"] in track_table.WITH_FEATURES:
                row["offset"] = int(offsets[feature_slot])
                row["n_frames"] = int(offsets[feature_slot + 1] - offsets[feature_slot])
                feature_slot += 1
            else:
                row["offset"], row["n_frames"] = 0, 0

        self.parts_dir.mkdir(parents=True, exist_ok=True)
        tmp_dir = layout.temp_part_dir(self.parts_dir, part_name)
        try:
            tmp_dir.mkdir()
            located = backend_module(self.backend).write_frames(tmp_dir, frames)
            track_table.write_fragment(tmp_dir / layout.PART_INDEX, track_table.records_to_table(rows))
            manifest = {
                "name": part_name,
                "backend": self.backend,
                "n_frames": int(frames.shape[0]),
                "n_bins": self.n_bins,
                "dtype": layout.DTYPE,
                "data_nbytes": int(frames.nbytes),
                "crc32": zlib.crc32(frames.reshape(-1).view(np.uint8)),
                "n_records": len(rows),
                "seq": time.time_ns(),
                **located,
            }
            write_json_atomic(tmp_dir / layout.PART_MANIFEST, manifest, indent=1, sort_keys=True)
            layout.fsync_tree(tmp_dir)
            final_name = self._rename_into_place(tmp_dir, part_name)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
        layout.fsync_dir(self.parts_dir)
        return final_name

    def _rename_into_place(self, tmp_dir: Path, part_name: str) -> str:
        name = part_name
        for attempt in range(100):
            target = self.parts_dir / name
            if not target.exists():
                try:
                    os.rename(tmp_dir, target)
                    return name
                except OSError:  # a concurrent writer took the name first
                    pass
            name = f"{part_name}-{attempt + 1}-{os.getpid()}-{time.time_ns() % 10**6}"
        raise ClewsError(f"{self.parts_dir}: could not find a free name for part {part_name}")

    def _validated(self, part_name: str, records: list[dict], features: list):
        latest: dict[str, int] = {}
        for i, record in enumerate(records):
            if "track_id" not in record or not str(record["track_id"]):
                raise ClewsError(f"part {part_name}: record {i} has no track_id")
            latest[str(record["track_id"])] = i
        rows, arrays = [], []
        for i in sorted(latest.values()):
            record, feats = records[i], features[i]
            status = record.get("status")
            if status not in track_table.STATUSES:
                raise ClewsError(f"part {part_name}: track {record['track_id']}: status {status!r} "
                                 f"not in {track_table.STATUSES}")
            row = {name: record.get(name, "") for name in _RECORD_FIELDS}
            row["track_id"] = str(record["track_id"])
            row["duration"] = float(record.get("duration") or 0.0)
            if status in track_table.WITH_FEATURES:
                if feats is None:
                    raise ClewsError(f"part {part_name}: track {row['track_id']} has status {status} but no features")
                array = np.asarray(feats)
                if array.ndim != 2 or array.shape[1] != self.n_bins or not np.issubdtype(array.dtype, np.floating):
                    raise ClewsError(f"part {part_name}: track {row['track_id']}: features must be "
                                     f"(frames, {self.n_bins}) float16, got {array.shape} {array.dtype}")
                arrays.append(array.astype("<f2", copy=False))
            elif feats is not None:
                raise ClewsError(f"part {part_name}: track {row['track_id']} has status {status} but features")
            rows.append(row)
        return rows, arrays

    def consolidate(self, catalog: pd.DataFrame | None = None) -> pd.DataFrame:
        """Merge every finished part's index fragment into ``<store>/index.parquet`` (atomic);
        returns the merged index (track_id as a column, plus ``seq``). With ``catalog`` (rows
        with track_id and the metadata columns), the indexed tracks take its clique, version,
        split, title and artist; ``self.metadata_updated`` counts the tracks that changed."""
        from clews_pipe.store.reconcile import apply_metadata

        frame, parts = self._current_index()
        self.metadata_updated = 0
        if catalog is not None:
            frame, self.metadata_updated = apply_metadata(frame, catalog)
        track_table.write_consolidated(self.root / layout.CONSOLIDATED_INDEX, frame, parts)
        return frame

    def reconcile(self, crc: bool = False, older_than: float | None = None) -> dict:
        """Make the index agree with the disk before a rerun trusts it: temporary parts older
        than ``older_than`` (a ``time.time()``; None: keep them) are removed; every part that is
        gone or fails its manifest check (``crc``: also its crc32) is moved aside and its tracks
        leave the index (so the rerun extracts them again); an unreadable consolidated index is
        moved aside and rebuilt from the parts' fragments. Returns
        ``{"temporaries_removed": [...], "damaged_parts": {part: problem}, "tracks_dropped": n}``."""
        from clews_pipe.store import reconcile

        removed = [] if older_than is None else reconcile.sweep_temporaries(self.root, older_than)
        unreadable: dict[str, str] = {}
        from clews_pipe.store.reader import load_index

        consolidated = self.root / layout.CONSOLIDATED_INDEX
        try:
            frame, parts = load_index(self.root, damaged=unreadable)
        except ClewsError:  # the consolidated index itself is damaged: rebuild it from the parts
            if not consolidated.exists():
                raise
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            os.rename(consolidated, self.root / f"{layout.DAMAGED_PREFIX}{layout.CONSOLIDATED_INDEX}-{stamp}")
            unreadable[layout.CONSOLIDATED_INDEX] = "unreadable consolidated index: rebuilt from the parts' fragments"
            frame, parts = load_index(self.root, damaged=unreadable)
        on_disk = layout.finished_part_names(self.parts_dir)
        bad = dict(unreadable)
        bad.update(reconcile.damaged_parts(self.root, self.backend, self.n_bins,
                                           sorted(set(parts) | set(frame["part"].unique()) | set(on_disk)), crc=crc))
        dropped = int(frame["part"].isin(list(bad)).sum())
        if bad:
            reconcile.drop_parts(self.root, frame, parts, {k: v for k, v in bad.items() if k != layout.CONSOLIDATED_INDEX})
        return {"temporaries_removed": removed, "damaged_parts": bad, "tracks_dropped": dropped}
