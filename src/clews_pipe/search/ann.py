"""FAISS index kinds for the segment index: exact ``flat`` and the approximate ``ivf-flat``,
``ivf-pq`` and ``hnsw``, with defaults derived from the number of segments.

Defaults (M segments of dimension D; every one overridable):

``nlist``            IVF cells: the largest power of two <= 4·sqrt(M), at most M / 39 (FAISS wants
                     >= 39 training points per cell), at least 1
``nprobe``           cells visited per query segment: nlist / 16, at least min(8, nlist)
``pq_m``             PQ sub-quantizers: D / 8 (8 dims each; the largest divisor of D <= D / 8)
``pq_bits``          bits per sub-quantizer code: 8 (so ``ivf-pq`` keeps D / 8 bytes a segment)
``hnsw_m``           HNSW links per node: 32     ``ef_construction`` 80     ``ef_search`` 128
``train_size``       vectors the IVF quantizers are trained on: min(M, max(64·nlist, 20000))
``rerank``           approximate kinds: nearest segments each query segment keeps as candidates,
                     max(64, rerank · top), before the exact re-rank: 10 (``ivf-pq`` tunes it)

Search parameters (``nprobe``, ``ef_search``) are recorded with the index and can be changed at
search time. Approximate kinds only choose candidate tracks; the segment index re-ranks them
exactly by R_min from the stored vectors.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from clews_pipe.errors import ClewsError

KINDS = ("flat", "ivf-flat", "ivf-pq", "hnsw")
_INT_PARAMS = ("nlist", "nprobe", "pq_m", "pq_bits", "hnsw_m", "ef_construction", "ef_search", "train_size",
               "rerank")


@dataclass(frozen=True)
class IndexParams:
    kind: str = "flat"
    nlist: int = 0
    nprobe: int = 0
    pq_m: int = 0
    pq_bits: int = 8
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    train_size: int = 0
    rerank: int = 10  # approximate kinds: nearest segments kept per query segment = max(64, rerank x top)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def approximate(self) -> bool:
        return self.kind != "flat"

    @property
    def needs_training(self) -> bool:
        return self.kind in ("ivf-flat", "ivf-pq")


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ClewsError(f"--kind must be one of {', '.join(KINDS)}, not {kind!r}")
    return kind


def default_params(kind: str, n_segments: int, dim: int, overrides: dict | None = None) -> IndexParams:
    """The defaults above for ``n_segments`` vectors of ``dim``, then ``overrides`` (None values
    ignored); a bad value → one-line :class:`ClewsError` naming the parameter."""
    check_kind(kind)
    m = max(1, int(n_segments))
    nlist = 1
    while nlist * 2 <= 4 * math.sqrt(m) and nlist * 2 <= max(1, m // 39):
        nlist *= 2
    pq_m = max(d for d in range(1, max(1, dim // 8) + 1) if dim % d == 0)
    params = IndexParams(kind=kind, nlist=nlist, nprobe=max(min(8, nlist), nlist // 16), pq_m=pq_m)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(given) - set(_INT_PARAMS))
    if unknown:
        raise ClewsError(f"unknown index parameter(s) {', '.join(unknown)} (known: {', '.join(_INT_PARAMS)})")
    for key, value in given.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ClewsError(f"index parameter {key} must be a positive integer, got {value!r}")
    params = replace(params, **given)
    if "train_size" not in given:
        params = replace(params, train_size=min(m, max(64 * params.nlist, 20000)))
    if kind == "ivf-pq" and dim % params.pq_m:
        raise ClewsError(f"index parameter pq_m={params.pq_m} must divide the dimension D={dim}")
    if params.pq_bits > 16:
        raise ClewsError(f"index parameter pq_bits must be <= 16, got {params.pq_bits}")
    return params


def params_from_dict(values: dict) -> IndexParams:
    known = {k: values[k] for k in ("kind", *_INT_PARAMS) if k in values}
    return IndexParams(**known)


def make_index(params: IndexParams, dim: int):
    """An empty FAISS index of ``params.kind`` (L2 metric) with its build parameters set."""
    import faiss

    if params.kind == "flat":
        return faiss.IndexFlatL2(dim)
    if params.kind == "ivf-flat":
        index = faiss.index_factory(dim, f"IVF{params.nlist},Flat", faiss.METRIC_L2)
    elif params.kind == "ivf-pq":
        index = faiss.index_factory(dim, f"IVF{params.nlist},PQ{params.pq_m}x{params.pq_bits}", faiss.METRIC_L2)
    else:
        index = faiss.IndexHNSWFlat(dim, params.hnsw_m)
        index.hnsw.efConstruction = params.ef_construction
    set_search_params(index, params)
    return index


def set_search_params(index, params: IndexParams) -> None:
    """Apply ``nprobe`` (IVF kinds) or ``ef_search`` (hnsw) to a built or loaded index."""
    import faiss

    if params.kind in ("ivf-flat", "ivf-pq"):
        faiss.extract_index_ivf(index).nprobe = int(min(params.nprobe, params.nlist))
    elif params.kind == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = int(params.ef_search)


def index_bytes(index) -> int:
    """Bytes of the serialised index (what it occupies in memory once loaded, to a few %)."""
    import faiss

    return int(faiss.serialize_index(index).nbytes)
