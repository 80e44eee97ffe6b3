"""Distance matrices as pickles in the layout lyrics-matching tools (WEALY) fuse.

``{"distance_matrix": (n_q, n_c) float32, "query_references": [{"clique", "version", "matrix_row",
"track"}...], "candidate_references": [{"clique", "version", "matrix_col", "track"}...],
"metadata": {...}}``. ``version`` is the track's position in the partition (an int, as WEALY
expects); ``track`` carries our track id so matrices can be matched by id.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clews_pipe.errors import ClewsError, first_line


#: The globals a WEALY-layout pickle needs: numpy arrays, dtypes and scalars (numpy 1 and 2
#: module names) and the bytes codec protocol 2 uses for array buffers. Dicts, lists, tuples,
#: str, numbers, bools and None need no global at all.
WEALY_SAFE_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
) | frozenset(
    (module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")
) | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

TRUST_PICKLE_HINT = "use --trust-pickle if you trust this file"


class _WealyUnpickler(pickle.Unpickler):
    """Admits only :data:`WEALY_SAFE_GLOBALS`; any other global is refused before it is imported."""

    def find_class(self, module: str, name: str):
        if (module, name) in WEALY_SAFE_GLOBALS:
            return super().find_class(module, name)
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid):
        raise _Refused(f"persistent id {str(pid)[:40]!r}")


class _Refused(pickle.UnpicklingError):
    """A global outside the WEALY layout; its message is the global's dotted name."""


def restricted_pickle_load(data: bytes, where: str, trust: bool = False):
    """Unpickle ``data`` (read from ``where``): with ``trust`` a plain :func:`pickle.loads`, else
    through :class:`_WealyUnpickler`; a refused global is one :class:`ClewsError` line naming it."""
    if trust:
        return pickle.loads(data)
    try:
        return _WealyUnpickler(io.BytesIO(data)).load()
    except _Refused as exc:
        raise ClewsError(
            f"{where}: pickle refers to {exc}, outside the WEALY layout (dicts, lists, tuples, str, "
            f"numbers, numpy arrays); {TRUST_PICKLE_HINT}"
        ) from None


@dataclass
class LabelledMatrix:
    distances: np.ndarray  # (n_q, n_c)
    query_key: list[str]
    candidate_key: list[str]
    query_clique: np.ndarray
    candidate_clique: np.ndarray
    metadata: dict


def export_wealy(distances_path: str | Path, out_file: str | Path, metadata: dict | None = None) -> Path:
    """Write the finished ``distances.zarr`` at ``distances_path`` as a WEALY-layout pickle."""
    from clews_pipe.evaluation.distances import open_distances

    group = open_distances(distances_path)
    matrix = np.asarray(group["distances"][:], dtype=np.float32)
    q_track, c_track = group["query_track"][:], group["candidate_track"][:]
    q_clique, c_clique = group["query_clique"][:], group["candidate_clique"][:]
    c_pos = {t: j for j, t in enumerate(c_track.tolist())}
    payload = {
        "distance_matrix": matrix,
        "query_references": [
            {"clique": int(c), "version": int(c_pos.get(t, i)), "matrix_row": i, "track": str(t)}
            for i, (t, c) in enumerate(zip(q_track.tolist(), q_clique.tolist()))
        ],
        "candidate_references": [
            {"clique": int(c), "version": j, "matrix_col": j, "track": str(t)}
            for j, (t, c) in enumerate(zip(c_track.tolist(), c_clique.tolist()))
        ],
        "metadata": {"source": "clews-pipe", "redux": str(group.attrs.get("redux", "")), **(metadata or {})},
    }
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with open(out_file, "wb") as handle:
        pickle.dump(payload, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return out_file


def load_matrix(path: str | Path, trust: bool = False) -> LabelledMatrix:
    """A ``distances.zarr`` of ours or a WEALY pickle → a matrix with per-row/column keys.

    Keys are track ids when known, else ``"<clique>:<version>"``. The pickle is read by the
    restricted unpickler (:func:`restricted_pickle_load`) unless ``trust``.
    """
    path = Path(path)
    if path.is_dir():
        from clews_pipe.evaluation.distances import open_distances

        group = open_distances(path)
        return LabelledMatrix(
            distances=np.asarray(group["distances"][:], dtype=np.float64),
            query_key=[str(t) for t in group["query_track"][:].tolist()],
            candidate_key=[str(t) for t in group["candidate_track"][:].tolist()],
            query_clique=np.asarray(group["query_clique"][:], dtype=np.int64),
            candidate_clique=np.asarray(group["candidate_clique"][:], dtype=np.int64),
            metadata=dict(group.attrs),
        )
    if not path.is_file():
        raise ClewsError(f"distance matrix not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ClewsError(f"cannot read WEALY distance pickle {path}: {exc.strerror or exc}") from None
    try:
        payload = restricted_pickle_load(data, str(path), trust=trust)
    except ClewsError:
        raise
    except Exception as exc:  # garbage bytes fail in many ways inside the unpickler
        raise ClewsError(f"cannot read WEALY distance pickle {path}: {type(exc).__name__}: {first_line(exc)}") from None
    try:
        if not isinstance(payload, dict):
            raise TypeError(f"expected a dict, got {type(payload).__name__}")
        matrix = np.asarray(payload["distance_matrix"], dtype=np.float64)
        q_refs = sorted(payload["query_references"], key=lambda r: r["matrix_row"])
        c_refs = sorted(payload["candidate_references"], key=lambda r: r["matrix_col"])
        for ref in q_refs + c_refs:
            int(ref["clique"])
            str(ref["track"]) if "track" in ref else ref["version"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ClewsError(f"WEALY distance pickle {path}: not the WEALY layout ({type(exc).__name__}: {first_line(exc)})") from None
    if matrix.ndim != 2:
        raise ClewsError(f"WEALY pickle {path}: distance_matrix must be 2-D, got shape {matrix.shape}")
    if matrix.shape != (len(q_refs), len(c_refs)):
        raise ClewsError(
            f"WEALY pickle {path}: distance_matrix {matrix.shape} does not match {len(q_refs)} query / {len(c_refs)} candidate references"
        )

    def key(ref):
        return str(ref["track"]) if "track" in ref else f"{ref['clique']}:{ref['version']}"

    return LabelledMatrix(
        distances=matrix,
        query_key=[key(r) for r in q_refs],
        candidate_key=[key(r) for r in c_refs],
        query_clique=np.array([int(r["clique"]) for r in q_refs], dtype=np.int64),
        candidate_clique=np.array([int(r["clique"]) for r in c_refs], dtype=np.int64),
        metadata=dict(payload.get("metadata") or {}) if isinstance(payload.get("metadata"), dict) else {},
    )
