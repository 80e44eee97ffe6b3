"""Track catalogs: which tracks a dataset has, their clique/version/split, and their audio file.

``load_catalog(dataset, meta, audio, splits)`` returns one row per unique track_id with the
columns of :data:`TRACK_COLUMNS` (all strings):

- ``discogs-vi``: ``meta`` is the folder holding the light split files
  (``DiscogsVI-YT-20240701-light.json.<split>`` or ``Discogs-VI-YT-20240701-light.json.<split>``)
  or one such file, or the full Discogs-VI-YT ``.jsonl`` (one clique per line; youtube_id from
  the first ``youtube_video`` URL; split from light split files beside it, else ``"all"``).
  Audio at ``<audio>/<id[:2]>/<id>.<ext>``, the two-letter folder in any letter case.
- ``shs100k``: ``meta`` is the folder with ``list`` and ``SHS100K-TRAIN|VAL|TEST`` (or the
  ``list`` file itself); track key ``<set>-<ver>``, audio at ``<audio>/<key[:2]>/<key>.<ext>``.
- ``folder``: every audio file under ``audio`` (recursively); track_id = relative path without
  extension; ``meta`` an optional CSV with columns ``track,clique[,split]``.

Audio is found from one directory listing per two-letter folder (never one stat call per
track and extension); a ``<id>.meta`` JSON beside the audio fills artist/title. Tracks whose
audio is absent get ``status="missing"`` with what was looked for in ``error``; they are not
an error of the catalog. Unreadable metadata or a wrong path raises :class:`ClewsError`.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from clews_pipe.audio.formats import CATALOG_EXTENSIONS
from clews_pipe.errors import ClewsError, first_line
from clews_pipe.store.track_table import TRACK_RECORD_FIELDS

#: a catalog's columns: the track record every stage carries, plus the catalog's own finding
TRACK_COLUMNS = [*TRACK_RECORD_FIELDS, "status", "error"]
DATASETS = ("discogs-vi", "shs100k", "folder")
DVI_SPLIT_PREFIXES = ("DiscogsVI-YT-20240701-light.json", "Discogs-VI-YT-20240701-light.json")
SHS_SPLIT_FILES = {"train": "SHS100K-TRAIN", "val": "SHS100K-VAL", "test": "SHS100K-TEST"}
_YOUTUBE_ID = re.compile(r"(?:[?&]v=|youtu\.be/|/embed/|/shorts/|/v/)([A-Za-z0-9_-]{11})")


# --------------------------------------------------------------------------------------------
# public entry point


#: splits a model is trained on; every other split is evaluated (an id in both is a leak)
TRAINING_SPLITS = ("train",)


def load_catalog(dataset: str, meta, audio, splits=("train", "val", "test"), read_meta_files: bool = True,
                 duplicates: list | None = None) -> pd.DataFrame:
    """Catalog of ``dataset`` with metadata ``meta`` and audio root ``audio`` (see module doc).

    A track id listed more than once keeps its first entry (splits in the order given); when
    ``duplicates`` is a list, every id listed in more than one clique or split is appended to it
    (see :func:`find_duplicates`)."""
    if dataset not in DATASETS:
        raise ClewsError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    splits = tuple(splits)
    audio_root = Path(audio).expanduser()
    if not audio_root.is_dir():
        raise ClewsError(f"audio folder {audio_root} does not exist or is not a directory")
    audio_root = audio_root.resolve()
    if dataset == "folder":
        table = _folder_catalog(audio_root, None if meta is None else Path(meta).expanduser(), splits)
    else:
        if meta is None:
            raise ClewsError(f"dataset {dataset} needs its metadata (--meta): a folder or a file")
        meta = Path(meta).expanduser()
        if not meta.exists():
            raise ClewsError(f"metadata path {meta} does not exist")
        if dataset == "discogs-vi":
            table = _discogs_table(meta, splits)
        else:
            table = _shs_table(meta, splits)
        if table.empty:
            raise ClewsError(f"{meta}: no tracks in splits {', '.join(splits)}")
        if duplicates is not None:
            duplicates.extend(find_duplicates(table))
        table = _resolve_prefixed(table, audio_root)
    if dataset == "folder" and duplicates is not None:
        duplicates.extend(find_duplicates(table))
    if table.empty:
        raise ClewsError(f"{meta if meta is not None else audio_root}: no tracks in splits {', '.join(splits)}")
    if read_meta_files:
        table = _fill_from_meta_files(table)
    return _finish(table)


def find_duplicates(table: pd.DataFrame) -> list[dict]:
    """The track ids of a raw catalog table (before de-duplication) listed in more than one
    clique or split: ``[{"track_id", "entries": [{"clique", "split", "version"}, ...]}]``, the
    first entry being the one kept."""
    if table.empty:
        return []
    keys = table[["track_id", "clique", "split"]].astype(str)
    repeated = keys["track_id"].duplicated(keep=False).to_numpy()
    if not repeated.any():
        return []
    sub = table[repeated].astype({"track_id": str, "clique": str, "split": str})
    out = []
    for track_id, group in sub.groupby("track_id", sort=True):
        if group["clique"].nunique() < 2 and group["split"].nunique() < 2:
            continue
        entries = [{"clique": c, "split": sp, "version": str(v)}
                   for c, sp, v in zip(group["clique"], group["split"], group.get("version", [""] * len(group)))]
        out.append({"track_id": str(track_id), "entries": entries})
    return out


def split_leaks(duplicates: list[dict]) -> list[dict]:
    """The duplicates whose entries span a training split and an evaluated one."""
    leaks = []
    for dup in duplicates:
        splits = {e["split"] for e in dup["entries"]}
        if splits & set(TRAINING_SPLITS) and splits - set(TRAINING_SPLITS):
            leaks.append(dup)
    return leaks


# --------------------------------------------------------------------------------------------
# Discogs-VI


def _read_json(path: Path):
    try:
        with open(path, "rb") as fh:
            return json.load(fh)
    except OSError as exc:
        raise ClewsError(f"{path}: cannot read ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ClewsError(f"{path}: not valid JSON ({exc})") from None


def _dvi_split_file(folder: Path, split: str) -> Path | None:
    for prefix in DVI_SPLIT_PREFIXES:
        candidate = folder / f"{prefix}.{split}"
        if candidate.is_file():
            return candidate
    return None


def _light_split_table(path: Path, split: str) -> pd.DataFrame:
    content = _read_json(path)
    if not isinstance(content, dict):
        raise ClewsError(f"{path}: expected a JSON object of clique_id -> list of versions")
    cliques, versions, titles, ids = [], [], [], []
    for clique, entries in content.items():
        if not isinstance(entries, list):
            raise ClewsError(f"{path}: clique {clique} is not a list of versions")
        for entry in entries:
            try:
                youtube_id = entry["youtube_id"]
                versions.append(entry.get("version_id", ""))
            except (KeyError, TypeError, AttributeError):
                raise ClewsError(f"{path}: clique {clique} has a version without 'youtube_id'") from None
            if not isinstance(youtube_id, str) or not youtube_id.strip():
                raise ClewsError(
                    f"{path}: clique {clique}: youtube_id {json.dumps(youtube_id)[:60]} is not a non-empty string"
                )
            ids.append(youtube_id)
            titles.append(entry.get("track_title", ""))
            cliques.append(clique)
    return pd.DataFrame(
        {"track_id": ids, "clique": cliques, "version": versions, "split": split, "title": titles, "artist": ""}
    )


def _split_suffix(path: Path) -> str:
    suffix = path.name.rsplit(".", 1)[-1].lower()
    return {"valid": "val", "validation": "val"}.get(suffix, suffix)


def _discogs_table(meta: Path, splits: tuple) -> pd.DataFrame:
    if meta.is_dir():
        frames = []
        for split in splits:
            found = _dvi_split_file(meta, split)
            if found is None:
                names = " or ".join(f"{p}.{split}" for p in DVI_SPLIT_PREFIXES)
                raise ClewsError(f"{meta}: no Discogs-VI split file {names}")
            frames.append(_light_split_table(found, split))
        return pd.concat(frames, ignore_index=True) if frames else _empty_rows()
    if meta.suffix.lower() == ".jsonl":
        return _discogs_jsonl_table(meta, splits)
    return _light_split_table(meta, _split_suffix(meta))


def youtube_id_from_url(url: str) -> str:
    """The 11-character video id of a YouTube URL ('' when there is none)."""
    match = _YOUTUBE_ID.search(url or "")
    return match.group(1) if match else ""


def _discogs_jsonl_table(path: Path, splits: tuple) -> pd.DataFrame:
    cliques, versions, titles, artists, ids = [], [], [], [], []
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise ClewsError(f"{path}: cannot read ({exc.strerror})") from None
    with fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                clique = str(record["clique_id"])
                clique_versions = record["versions"]
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                raise ClewsError(f"{path}:{lineno}: not a clique record with 'clique_id' and 'versions'") from None
            for version in clique_versions:
                videos = version.get("youtube_video") or []
                first = videos[0] if videos else ""
                url = first.get("url", "") if isinstance(first, dict) else str(first)
                ytid = youtube_id_from_url(url)
                if not ytid:
                    continue
                title, artist = _jsonl_track_names(version.get("tracks") or [])
                ids.append(ytid)
                cliques.append(clique)
                versions.append(str(version.get("version_id", "")))
                titles.append(title)
                artists.append(artist)
    table = pd.DataFrame(
        {"track_id": ids, "clique": cliques, "version": versions, "split": "all", "title": titles, "artist": artists}
    )
    # splits are known when the light split files sit beside the JSONL
    known = [(s, f) for s in splits if (f := _dvi_split_file(path.parent, s)) is not None]
    if known:
        clique_split = {}
        for split, split_path in known:
            for clique in _read_json(split_path):
                clique_split.setdefault(clique, split)
        table["split"] = table["clique"].map(clique_split)
        table = table[table["split"].notna()]
    return table


def _jsonl_track_names(tracks: list) -> tuple[str, str]:
    """Title and artist names of a version's first Discogs track entry (best effort)."""
    for track in tracks:
        if not isinstance(track, dict):
            continue
        title = str(track.get("title") or track.get("track_title") or "")
        people = track.get("artists") or track.get("artist") or []
        if isinstance(people, list):
            names = [p.get("name", "") if isinstance(p, dict) else str(p) for p in people]
            artist = ", ".join(n for n in names if n)
        else:
            artist = str(people)
        return title, artist
    return "", ""


# --------------------------------------------------------------------------------------------
# SHS100K


def _read_tsv(path: Path, names: list[str]) -> pd.DataFrame:
    """Tab-separated file without quoting; the first ``len(names)`` columns, header row dropped."""
    try:
        table = pd.read_csv(path, sep="\t", header=None, dtype=str, keep_default_na=False, quoting=3)
    except OSError as exc:
        raise ClewsError(f"{path}: cannot read ({exc.strerror})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ClewsError(f"{path}: not a tab-separated {'/'.join(names)} file ({first_line(exc)})") from None
    if table.shape[1] < len(names):
        raise ClewsError(f"{path}: expected {len(names)} tab-separated columns ({', '.join(names)}), found {table.shape[1]}")
    table = table.iloc[:, : len(names)]
    table.columns = names
    table = table.apply(lambda col: col.str.strip())
    if len(table) and table.iloc[0, 0].lower() in ("set_id", "set", "clique"):
        table = table.iloc[1:]
    return table


def _shs_table(meta: Path, splits: tuple) -> pd.DataFrame:
    folder, list_path = (meta, meta / "list") if meta.is_dir() else (meta.parent, meta)
    if not list_path.is_file():
        raise ClewsError(f"{folder}: no SHS100K 'list' file")
    info = _read_tsv(list_path, ["set_id", "ver_id", "title", "performer", "url", "status"])
    info["track_id"] = info["set_id"] + "-" + info["ver_id"]
    info = info.drop_duplicates("track_id")
    present = {s: folder / f for s, f in SHS_SPLIT_FILES.items() if (folder / f).is_file()}
    if present:
        frames = []
        for split in splits:
            if split not in present:
                raise ClewsError(f"{folder}: no SHS100K split file {SHS_SPLIT_FILES.get(split, split)}")
            members = _read_tsv(present[split], ["set_id", "ver_id"])
            keys = pd.DataFrame({"track_id": members["set_id"] + "-" + members["ver_id"], "split": split})
            frames.append(keys.drop_duplicates("track_id"))
        membership = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["track_id", "split"])
        unknown = membership[~membership["track_id"].isin(info["track_id"])]
        if len(unknown):
            raise ClewsError(
                f"{list_path}: {len(unknown)} track(s) of the split files are not in the list, e.g. {unknown['track_id'].iloc[0]}"
            )
        info = membership.merge(info, on="track_id", how="left")
    else:
        info["split"] = "all"
    return pd.DataFrame(
        {
            "track_id": info["track_id"],
            "clique": info["set_id"],
            "version": info["ver_id"],
            "split": info["split"],
            "title": info["title"],
            "artist": info["performer"],
        }
    )


# --------------------------------------------------------------------------------------------
# audio resolution for <root>/<id[:2]>/<id>.<ext>


def _list_audio_files(folder: Path) -> list[tuple[str, str]]:
    """(stem, extension) of the audio files directly in ``folder``."""
    found = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, dot, ext = entry.name.rpartition(".")
                if dot and ext.lower() in CATALOG_EXTENSIONS:
                    found.append((stem, ext))
    except OSError:
        pass
    return found


def _resolve_prefixed(table: pd.DataFrame, root: Path) -> pd.DataFrame:
    """Fill path/status/error for tracks stored at ``<root>/<id[:2]>/<id>.<ext>``.

    One listing of ``root`` maps each two-letter prefix (case-folded) to its actual folder(s);
    only folders some track needs are listed, once each.
    """
    table = table.drop_duplicates("track_id").reset_index(drop=True)
    prefix = table["track_id"].str[:2]
    needed = set(prefix.str.lower().unique())
    try:
        subfolders = [e.name for e in os.scandir(root) if e.is_dir()]
    except OSError as exc:
        raise ClewsError(f"{root}: cannot list audio folder ({exc.strerror})") from None
    rows = []
    for name in subfolders:
        if name.lower() in needed:
            for stem, ext in _list_audio_files(root / name):
                rows.append((name.lower(), stem, str(root / name / f"{stem}.{ext}"), ext.lower()))
    files = pd.DataFrame(rows, columns=["prefix", "track_id", "path", "ext"])
    files["rank"] = files["ext"].map({e: i for i, e in enumerate(CATALOG_EXTENSIONS)})
    files = files.sort_values(["rank", "path"]).drop_duplicates(["prefix", "track_id"])
    table["prefix"] = prefix.str.lower()
    table = table.merge(files[["prefix", "track_id", "path"]], on=["prefix", "track_id"], how="left")
    found = table["path"].notna()
    looked_for = str(root) + os.sep + prefix + os.sep + table["track_id"] + ".{" + ",".join(CATALOG_EXTENSIONS) + "}"
    table["status"] = np.where(found, "pending", "missing")
    table["error"] = np.where(found, "", "no audio file " + looked_for + " (two-letter folder in any case)")
    table["path"] = table["path"].fillna("")
    return table.drop(columns=["prefix"])


# --------------------------------------------------------------------------------------------
# generic folder


def _folder_catalog(root: Path, meta: Path | None, splits: tuple) -> pd.DataFrame:
    rows = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            stem, dot, ext = name.rpartition(".")
            if dot and stem and ext.lower() in CATALOG_EXTENSIONS:
                rel = stem if rel_dir == "." else f"{rel_dir}/{stem}"
                rows.append((rel.replace(os.sep, "/"), os.path.join(dirpath, name), ext.lower()))
    files = pd.DataFrame(rows, columns=["track_id", "path", "ext"])
    files["rank"] = files["ext"].map({e: i for i, e in enumerate(CATALOG_EXTENSIONS)})
    files = files.sort_values(["rank", "path"]).drop_duplicates("track_id")[["track_id", "path"]]
    if meta is None:
        table = files.sort_values("track_id").assign(clique=lambda t: t["track_id"], version="", split="all")
        return table.assign(title="", artist="", status="pending", error="")
    listing = _read_folder_csv(meta)
    if "split" in listing.columns:
        listing = listing[listing["split"].isin(splits)]
    else:
        listing = listing.assign(split="all")
    table = listing.merge(files, on="track_id", how="left")
    found = table["path"].notna()
    table["status"] = np.where(found, "pending", "missing")
    table["error"] = np.where(
        found, "", "no audio file " + str(root) + "/" + table["track_id"] + ".{" + ",".join(CATALOG_EXTENSIONS) + "}"
    )
    table["path"] = table["path"].fillna("")
    return table.assign(version="", title="", artist="")


def _read_folder_csv(path: Path) -> pd.DataFrame:
    try:
        listing = pd.read_csv(path, dtype=str, keep_default_na=False)
    except OSError as exc:
        raise ClewsError(f"{path}: cannot read ({exc.strerror})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ClewsError(f"{path}: not a CSV file ({first_line(exc)})") from None
    listing.columns = [c.strip().lower() for c in listing.columns]
    for column in ("track", "clique"):
        if column not in listing.columns:
            raise ClewsError(f"{path}: CSV needs columns track,clique[,split]; missing {column!r}")
    listing = listing.apply(lambda col: col.str.strip())
    # accept track given with its audio extension or with OS separators
    pattern = r"\.(?:" + "|".join(CATALOG_EXTENSIONS) + r")$"
    track = listing["track"].str.replace("\\", "/", regex=False).str.replace(pattern, "", regex=True, case=False)
    out = pd.DataFrame({"track_id": track, "clique": listing["clique"]})
    if "split" in listing.columns:
        out["split"] = listing["split"]
    return out  # a track listed twice is de-duplicated (and reported) by load_catalog


# --------------------------------------------------------------------------------------------
# shared finishing steps


def _read_meta_file(audio_path: str) -> tuple[str, str] | None:
    meta_path = audio_path.rpartition(".")[0] + ".meta"
    try:
        with open(meta_path, "rb") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    return str(data.get("artist") or ""), str(data.get("title") or "")


def _fill_from_meta_files(table: pd.DataFrame) -> pd.DataFrame:
    """Artist/title from ``<id>.meta`` JSON beside the audio, where present and non-empty.

    Only folders that hold a .meta file are read from (listed once per folder); reads run on
    a small thread pool since they are latency-bound on network filesystems.
    """
    found = table["path"] != ""
    if not found.any():
        return table
    paths = table.loc[found, "path"]
    stems = paths.str.rpartition(".")[0]
    folders = stems.str.rpartition(os.sep)[0].unique()
    meta_names = set()
    for folder in folders:
        try:
            with os.scandir(folder) as entries:
                meta_names.update(os.path.join(folder, e.name) for e in entries if e.name.endswith(".meta"))
        except OSError:
            continue
    has_meta = (stems + ".meta").isin(meta_names)
    todo = paths[has_meta.to_numpy()]
    if todo.empty:
        return table
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(_read_meta_file, todo.tolist(), chunksize=256))
    artist = pd.Series([r[0] if r else "" for r in results], index=todo.index)
    title = pd.Series([r[1] if r else "" for r in results], index=todo.index)
    table = table.copy()
    table.loc[todo.index, "artist"] = artist.where(artist != "", table.loc[todo.index, "artist"])
    table.loc[todo.index, "title"] = title.where(title != "", table.loc[todo.index, "title"])
    return table


def _empty_rows() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=object) for c in ["track_id", "clique", "version", "split", "title", "artist"]})


def _finish(table: pd.DataFrame) -> pd.DataFrame:
    for column in TRACK_COLUMNS:
        if column not in table.columns:
            table[column] = ""
    table = table[TRACK_COLUMNS].drop_duplicates("track_id").reset_index(drop=True)
    return table.fillna("").astype(str)
