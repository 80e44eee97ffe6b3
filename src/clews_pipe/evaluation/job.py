"""The evaluation job: its settings as one frozen value, resolved once, and the per-rank body.

:class:`EvaluateJob` is what every rank runs (it is picklable: Fabric may spawn the ranks).
:func:`eval_defaults` reads a checkpoint's ``eval:`` config section, which gives
``clews-pipe evaluate`` its defaults (maxlen, shingle length and hop, redux) for whatever the
command line does not set, so a run's config file is what it says: ``configs/dvi-clews.yaml``'s
``eval.maxlen: 300`` is what a DVI model is evaluated with unless ``--maxlen`` says otherwise.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from clews_pipe.errors import ClewsError
from clews_pipe.evaluation.distances import TileSettings
from clews_pipe.retrieval.protocol_options import DEFAULT_PROTOCOL, Protocol
from clews_pipe.retrieval.redux import Redux

LEVELS = ("track", "segment")


@dataclass(frozen=True)
class EvalDefaults:
    """The ``eval:`` section of a run config (schema: ``model.run_config.EvalConfig``)."""

    maxlen: float = 600.0
    shingle_len: Optional[float] = None  # None: the model's shingle length
    shingle_hop: float = 5.0
    redux: Redux = Redux.parse("bpwr-10")


def eval_defaults(checkpoint: Optional[Path], trust: bool = False) -> EvalDefaults:
    """The checkpoint's ``eval:`` section (built-in defaults without a checkpoint, or for a published
    checkpoint, whose configuration has no such section)."""
    if checkpoint is None:
        return EvalDefaults()
    from clews_pipe.model.checkpoint import checkpoint_config, load_checkpoint

    payload = load_checkpoint(checkpoint, trust=trust, mmap=True)
    if "config" not in payload:  # published checkpoint: its conf has no eval section
        return EvalDefaults()
    conf = checkpoint_config(payload, where=str(checkpoint))
    section = conf.eval
    return EvalDefaults(
        maxlen=float(section.maxlen), shingle_len=float(section.shingle_len),
        shingle_hop=float(section.shingle_hop), redux=Redux.parse(section.redux),
    )


@dataclass(frozen=True)
class EvaluateJob:
    """Everything one rank needs; every field resolved (no None left for a setting with a default)."""

    out: Path
    split: str
    level: str
    redux: Redux
    taus: tuple[float, ...] = ()
    checkpoint: Optional[Path] = None
    store: Optional[Path] = None
    embeddings: Optional[Path] = None
    maxlen: float = 600.0
    cslen: Optional[float] = None
    cshop: float = 5.0
    qslen: Optional[float] = None
    qshop: float = 5.0
    batch_size: int = 32
    trust: bool = False
    progress: bool = True
    settings: TileSettings = field(default_factory=TileSettings)
    protocol: Protocol = field(default_factory=lambda: Protocol.parse(DEFAULT_PROTOCOL))

    def __post_init__(self):
        if (self.embeddings is None) == (self.checkpoint is None and self.store is None):
            raise ClewsError("give either --embeddings FILE or --checkpoint CKPT --store STORE")
        if self.embeddings is None and (self.checkpoint is None or self.store is None):
            raise ClewsError("--checkpoint and --store go together")
        if self.level not in LEVELS:
            raise ClewsError(f"--level must be track or segment, not {self.level!r}")

    @classmethod
    def resolve(cls, *, maxlen=None, cslen=None, cshop=None, qshop=None, redux=None, **given) -> "EvaluateJob":
        """The job with every unset setting taken from the checkpoint's ``eval:`` section."""
        defaults = eval_defaults(given.get("checkpoint"), trust=bool(given.get("trust", False)))
        return cls(
            maxlen=defaults.maxlen if maxlen is None else float(maxlen),
            cslen=defaults.shingle_len if cslen is None else float(cslen),
            cshop=defaults.shingle_hop if cshop is None else float(cshop),
            qshop=defaults.shingle_hop if qshop is None else float(qshop),
            redux=defaults.redux if redux is None else Redux.parse(redux),
            **given,
        )

    def __call__(self, ctx):
        from clews_pipe.evaluation.evaluate import SEGMENT_REDUX, evaluate_segment_level, evaluate_track_level
        from clews_pipe.embeddings.provenance import evaluation_provenance

        emb, inputs = self._embeddings(ctx)
        redux = self.redux if self.level == "track" else SEGMENT_REDUX
        provenance = evaluation_provenance(
            inputs, protocol=self.protocol, redux=redux, level=self.level,
            maxlen=self.maxlen if self.embeddings is None else None, world_size=ctx.world_size,
            settings={"tile": self.settings.tile, "taus": list(self.taus) if self.level == "segment" else None,
                      "matmul_precision": self.settings.precision},
        )
        if self.level == "track":
            return evaluate_track_level(emb, self.out, self.redux, ctx, self.settings, self.progress,
                                        protocol=self.protocol, provenance=provenance)
        return evaluate_segment_level(emb, self.out, self.taus, ctx, self.settings, self.progress,
                                      protocol=self.protocol, provenance=provenance)

    def _embeddings(self, ctx):
        """``(embeddings, provenance of their inputs)``; reused from ``OUT`` when their fingerprint matches."""
        if self.embeddings is not None:
            from clews_pipe.embeddings.from_store import embeddings_file_provenance

            return embeddings_file_provenance(self.embeddings)
        from clews_pipe.embeddings.from_store import EmbedSettings, embed_or_reuse

        emb, inputs, _ = embed_or_reuse(
            self.checkpoint, self.store, self.split, Path(self.out) / "embeddings.zarr",  # chunked, written in place
            EmbedSettings(
                maxlen=self.maxlen, cslen=self.cslen, cshop=self.cshop, qslen=self.qslen, qshop=self.qshop,
                taus=tuple(self.taus), batch_size=self.batch_size, protocol=self.protocol,
            ),
            ctx=ctx, trust=self.trust, progress=self.progress, log=lambda line: print(line, file=sys.stderr),
        )
        return emb, inputs
