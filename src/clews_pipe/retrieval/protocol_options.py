"""The evaluation protocol: the published CLEWS choices (``clews``, the default) or clews-pipe's own.

Every place where the published code (sony/clews ``train.py``, ``test.py``, ``lib/eval.py``)
and clews-pipe could choose differently is one field here, read by evaluation and validation:

================  =====================================  ======================================
field             ``clews`` (published, default)          ``clews-pipe``
================  =====================================  ======================================
``distractors``   False: cliques with < 2 available       True: kept as distractors (they query
                  versions are dropped from the split     nothing, but are candidates)
``nar``           ``published``: the query itself (+inf)  ``strict``: NAR over the true
                  counts as a negative, NAR·n/(n+1)       negatives only
``shingles``      ``published``: at most                  ``full``: shingles cover the whole
                  int((maxlen − len) / hop) per track     first ``maxlen`` seconds (one more)
``validation``    hop = 20 s / 2 over the first 150 s,    the training shingling (hop = len)
                  the model's positive reduction,          and ``eval.redux``; monitor
                  monitor mean_q sqrt(ARP_q·(1 − AP_q)),   sqrt(NAR/100 · (1 − MAP)), patience
                  "plateau_N" waits N − 1 epochs           N epochs
================  =====================================  ======================================

``metrics.json`` always carries ``NAR_strict`` besides the protocol's ``NAR``. Torch-free: configs
validate protocol names without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from clews_pipe.errors import ClewsError

PROTOCOLS = ("clews", "clews-pipe")
DEFAULT_PROTOCOL = "clews"
NAR_KINDS = ("published", "strict")
SHINGLE_COUNTS = ("published", "full")
MIN_VERSIONS = 2  # a clique needs this many available versions to stay in a split (published)


@dataclass(frozen=True)
class Protocol:
    name: str = DEFAULT_PROTOCOL
    distractors: bool = False
    nar: str = "published"
    shingles: str = "published"
    validation: str = "published"

    @staticmethod
    def parse(name: "str | Protocol | None" = None, *, distractors: bool | None = None, nar: str | None = None,
              shingles: str | None = None) -> "Protocol":
        """``"clews"`` / ``"clews-pipe"``, optionally with single choices overridden (the name then
        says so, e.g. ``clews+distractors``). Unknown names → one-line :class:`ClewsError`."""
        if isinstance(name, Protocol):
            base = name
        else:
            text = DEFAULT_PROTOCOL if name is None else str(name).strip().lower()
            if text not in PROTOCOLS:
                raise ClewsError(f"unknown protocol {name!r}: expected one of {', '.join(PROTOCOLS)}")
            base = Protocol() if text == "clews" else Protocol(text, True, "strict", "full", "clews-pipe")
        if nar is not None and nar not in NAR_KINDS:
            raise ClewsError(f"--nar must be one of {', '.join(NAR_KINDS)}, not {nar!r}")
        if shingles is not None and shingles not in SHINGLE_COUNTS:
            raise ClewsError(f"--shingles must be one of {', '.join(SHINGLE_COUNTS)}, not {shingles!r}")
        changed = {}
        if distractors is not None and distractors != base.distractors:
            changed["distractors"] = bool(distractors)
        if nar is not None and nar != base.nar:
            changed["nar"] = nar
        if shingles is not None and shingles != base.shingles:
            changed["shingles"] = shingles
        if not changed:
            return base
        label = base.name.split("+")[0]
        for key, value in changed.items():
            label += f"+{key}" if isinstance(value, bool) and value else f"+{key}={str(value).lower()}"
        return replace(base, name=label, **changed)

    def as_dict(self) -> dict:
        return asdict(self)

    # ------------------------------------------------------------------------- evaluation
    def max_shingles(self, maxlen: float, shingle_len: float, shingle_hop: float, samplerate: int) -> int | None:
        """The published cap on shingles per track (``None``: no cap): int((maxlen − len) / hop)
        computed in samples as ``test.py`` does (116 for 20 s every 5 s over 600 s), at least 1."""
        if self.shingles == "full":
            return None
        total, length, hop = int(maxlen * samplerate), int(shingle_len * samplerate), int(shingle_hop * samplerate)
        return max(1, int((total - length) / max(hop, 1)))

    # ------------------------------------------------------------------------- validation
    @property
    def published_validation(self) -> bool:
        return self.validation == "published"

    def validation_hop(self, model_hop: float, training_hop: float) -> float:
        """Shingle hop of validation blocks: the published model hop / 2 (``train.py``:
        ``get_shingle_params()[-1] / 2``, = len / 2 = 10 s in the published configs), or the training hop."""
        return float(model_hop) / 2.0 if self.published_validation else float(training_hop)

    def validation_redux(self, positive_redux: str, eval_redux: str) -> str:
        """Reduction of validation distances: the model's positive reduction (published) or ``eval.redux``."""
        return str(positive_redux) if self.published_validation else str(eval_redux)

    def plateau_patience(self, configured: int) -> int:
        """ReduceLROnPlateau patience for a configured "plateau_N": N − 1 (published) or N."""
        return max(0, int(configured) - 1) if self.published_validation else int(configured)


def composite_monitor(ap, nar_percent) -> float:
    """The Discogs-VI validation monitor of the published code, ``m_COMP``: the mean over queries of
    sqrt(NAR_q · (1 − AP_q)), NAR in percent (lower is better)."""
    import numpy as np

    ap = np.asarray(ap, dtype=np.float64)
    nar = np.asarray(nar_percent, dtype=np.float64)
    if ap.size == 0:
        return math.nan
    return float(np.mean(np.sqrt(np.clip(nar, 0.0, None) * np.clip(1.0 - ap, 0.0, None))))
