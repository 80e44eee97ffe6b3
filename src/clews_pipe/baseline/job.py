"""``clews-pipe baseline``: the Qmax matcher over a store split, sharded over ranks like ``evaluate``,
written as an ordinary evaluation folder.

Every rank reads the split's chroma (cheap: a fold of the stored CQT), takes the query-row
blocks of :func:`clews_pipe.evaluation.distances.row_blocks_for_rank` and writes their rows into
``OUT/distances.zarr`` (the layout ``evaluate`` writes; a row block is marked done once written, so
a rerun with the same inputs resumes). Rank 0 then ranks the matrix with the evaluation's own
:func:`~clews_pipe.evaluation.protocols.matrix_report` and writes ``metrics.json``, ``metrics.md``
and ``per_query.csv`` with the evaluation's writers, so ``report`` and ``plot`` read it like a model's.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clews_pipe.baseline.matcher import candidate_set, query_distances, track_chroma
from clews_pipe.baseline.qmax import QmaxSettings
from clews_pipe.errors import ClewsError
from clews_pipe.retrieval.protocol import DEFAULT_PROTOCOL, MIN_VERSIONS, Protocol

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
        from clews_pipe.features.store import open_store

        store = open_store(self.store)
        tracks = self._tracks(store)
        chroma = [track_chroma(store.read(t, 0, int(round(self.maxlen * store.frame_rate))), self.settings)
                  for t in tracks.track]
        path = self._matrix(ctx, store, tracks, chroma)
        if ctx.rank != 0:
            return None
        return self._report(store, tracks, path, ctx.world_size)

    def _tracks(self, store) -> SplitTracks:
        from clews_pipe.evaluation.embed import evaluated_tracks

        available = store.tracks(self.split)
        rows = evaluated_tracks(available, self.protocol)
        if len(rows) == 0:
            raise ClewsError(f"store {self.store}: split {self.split!r} has no clique with >= {MIN_VERSIONS} "
                             f"available versions ({len(available)} usable tracks)")
        names = np.asarray(rows["clique"].astype(str))
        _, ids = np.unique(names, return_inverse=True)
        return SplitTracks(np.asarray(rows.index.astype(str)), names, ids.astype(np.int64))

    def _matrix(self, ctx, store, tracks: SplitTracks, chroma) -> Path:
        from clews_pipe.baseline.shards import write_rows

        return write_rows(self, ctx, store, tracks, chroma, candidate_set(chroma),
                          lambda i, cands: query_distances(chroma[i], cands, self.settings))

    def _report(self, store, tracks: SplitTracks, path: Path, world_size: int) -> dict:
        from clews_pipe.atomic import write_json_atomic, write_text_atomic
        from clews_pipe.evaluation.per_query import write_per_query_csv
        from clews_pipe.evaluation.protocols import collapse_warnings, matrix_report
        from clews_pipe.evaluation.provenance import base_provenance, evaluation_provenance, store_index_sha256
        from clews_pipe.retrieval.metrics import markdown_table

        report = matrix_report(path, REDUX, "track", nar_kind=self.protocol.nar)
        if report.summary["queries"] == 0:
            raise ClewsError(f"baseline: no query of split {self.split!r} has another version of its clique")
        warnings = collapse_warnings(report.d_min, report.d_max)
        for line in warnings:
            print(f"warning: {line}", file=sys.stderr)
        inputs = base_provenance() | {"store": str(self.store), "store_index_sha256": store_index_sha256(store),
                                      "split": self.split}
        provenance = evaluation_provenance(inputs, protocol=self.protocol, redux=REDUX, level="track",
                                           maxlen=self.maxlen, world_size=world_size,
                                           settings={"method": METHOD, "qmax": self.settings.as_dict(), "tile": self.tile})
        provenance["method"] = METHOD["name"]
        summary = report.summary | {"protocol": self.protocol.name, "warnings": warnings, "provenance": provenance}
        out = Path(self.out)
        write_per_query_csv(out / "per_query.csv", tracks.track, tracks.clique_name, report.per_query,
                            self.protocol.nar, report.neighbours)
        write_json_atomic(out / "metrics.json", summary)
        write_text_atomic(out / "metrics.md", markdown_table([summary]))
        return summary
