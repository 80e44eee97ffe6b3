"""``clews-pipe baseline``: the Qmax matcher over a store split, sharded over ranks like ``evaluate``,
written as an ordinary evaluation folder.

Every rank reads the split's chroma (cheap: a fold of the stored CQT) and writes its query-row
blocks (:mod:`clews_pipe.baseline.shards`; a rerun with the same inputs resumes). Rank 0 then ranks
the matrix with the per-query metrics every evaluation uses (:mod:`clews_pipe.retrieval.metrics`)
and writes ``metrics.json``, ``metrics.md`` and ``per_query.csv`` with the evaluation folder's own
writers (:mod:`clews_pipe.reporting`), so ``report`` and ``plot`` read it like a model's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clews_pipe.baseline.matcher import candidate_set, query_distances, track_chroma
from clews_pipe.baseline.qmax import QmaxSettings
from clews_pipe.errors import ClewsError
from clews_pipe.retrieval.protocol_options import DEFAULT_PROTOCOL, MIN_VERSIONS, Protocol

METHOD = {
    "name": "chroma cross-recurrence Qmax",
    "paper": "J. Serrà, X. Serra, R. G. Andrzejak (2009), Cross recurrence quantification for cover song "
             "identification, New Journal of Physics 11, 093017",
    "features": "chroma folded from the store's CQT (84 bins -> 12 pitch classes), key-invariant by OTI",
    "distance": "sqrt(candidate frames) / (Qmax + 1)",
}
REDUX = "qmax"


@dataclass(frozen=True)
class SplitTracks:
    track: np.ndarray  # str (N,)
    clique_name: np.ndarray  # str (N,)
    clique: np.ndarray  # int64 (N,)


@dataclass(frozen=True)
class BaselineJob:
    """Everything one rank needs (picklable: Fabric may spawn the ranks)."""

    store: Path
    out: Path
    split: str = "test"
    maxlen: float = 600.0
    tile: int = 64  # query rows per block (= distance chunk)
    settings: QmaxSettings = field(default_factory=QmaxSettings)
    protocol: Protocol = field(default_factory=lambda: Protocol.parse(DEFAULT_PROTOCOL))
    progress: bool = True

    def __call__(self, ctx):
        from clews_pipe.baseline.shards import read_matrix, write_rows
        from clews_pipe.digests import arrays_sha1
        from clews_pipe.embeddings.provenance import store_index_sha256
        from clews_pipe.reporting.eval_dir import clear_evaluation
        from clews_pipe.store import open_store

        store = open_store(self.store)
        tracks = self._tracks(store)
        frames = int(round(self.maxlen * store.frame_rate))
        chroma = [track_chroma(store.read(t, 0, frames), self.settings) for t in tracks.track]
        candidates = candidate_set(chroma)
        if ctx.rank == 0:
            Path(self.out).mkdir(parents=True, exist_ok=True)
            clear_evaluation(self.out)  # never a stale report beside a failed run
        stamp = arrays_sha1(tracks.track, tracks.clique,
                            extra=f"qmax {self.settings.as_dict()} {self.maxlen} {store_index_sha256(store)}")
        write_rows(ctx, self.out, len(tracks.track), self.tile, stamp,
                   lambda i: query_distances(chroma[i], candidates, self.settings), self.progress, f"qmax {self.split}")
        if ctx.rank != 0:
            return None
        return self._report(store, tracks, read_matrix(self.out, len(tracks.track), self.tile), ctx.world_size)

    def _tracks(self, store) -> SplitTracks:
        from clews_pipe.embeddings.from_store import evaluated_tracks

        available = store.tracks(self.split)
        rows = evaluated_tracks(available, self.protocol)
        if len(rows) == 0:
            raise ClewsError(f"store {self.store}: split {self.split!r} has no clique with >= {MIN_VERSIONS} "
                             f"available versions ({len(available)} usable tracks)")
        names = np.asarray(rows["clique"].astype(str))
        _, ids = np.unique(names, return_inverse=True)
        return SplitTracks(np.asarray(rows.index.astype(str)), names, ids.astype(np.int64))

    def _report(self, store, tracks: SplitTracks, matrix: np.ndarray, world_size: int) -> dict:
        from clews_pipe.embeddings.provenance import base_provenance, evaluation_provenance, store_index_sha256
        from clews_pipe.reporting.eval_dir import write_metrics
        from clews_pipe.reporting.per_query import nearest, neighbour_items, write_per_query_csv
        from clews_pipe.retrieval.metrics import query_metrics, self_columns, summarize

        own = self_columns(tracks.track, tracks.track)
        per_query = query_metrics(matrix, tracks.clique, tracks.clique, own)
        summary = summarize(per_query, REDUX, "track", nar_kind=self.protocol.nar)
        if summary["queries"] == 0:
            raise ClewsError(f"baseline: no query of split {self.split!r} has another version of its clique")
        cols, dists = nearest(matrix, own)
        neighbours = neighbour_items(cols, dists, tracks.track, tracks.clique, tracks.clique)
        inputs = base_provenance() | {"store": str(self.store), "store_index_sha256": store_index_sha256(store),
                                      "split": self.split}
        provenance = evaluation_provenance(inputs, protocol=self.protocol, redux=REDUX, level="track",
                                           maxlen=self.maxlen, world_size=world_size,
                                           settings={"method": METHOD, "qmax": self.settings.as_dict(), "tile": self.tile})
        provenance["method"] = METHOD["name"]
        summary = summary | {"protocol": self.protocol.name, "warnings": [], "provenance": provenance}
        write_per_query_csv(Path(self.out) / "per_query.csv", tracks.track, tracks.clique_name, per_query,
                            self.protocol.nar, neighbours)
        write_metrics(self.out, summary)
        return summary
