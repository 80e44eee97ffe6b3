"""The CQT settings of the store contract and of the CLEWS model, as one torch-free value.

Extraction writes them to ``store.json``, the model is built from them, and training and
evaluation check a store against a model with :meth:`CQTParams.require_equal`. Defaults are the
published ones (docs/clews-method.md, "CQT"): 16 kHz, hop 20 ms, 7 octaves x 12 bins, filter scale 1, pooled x5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

from clews_pipe.errors import ClewsError

SAMPLERATE = 16000


@dataclass(frozen=True)
class CQTParams:
    """CQT settings; field names follow the CLEWS ``model.cqt`` config section."""

    samplerate: int = SAMPLERATE
    hoplen: float = 0.02  # seconds between CQT frames before pooling
    noctaves: int = 7
    nbinsoct: int = 12
    fscale: float = 1.0
    pool: int = 5

    @property
    def hop_length(self) -> int:
        return int(round(self.hoplen * self.samplerate))

    @property
    def n_bins(self) -> int:
        return self.noctaves * self.nbinsoct

    @property
    def frame_rate(self) -> float:
        """Stored frames per second (after pooling): 10 for the defaults."""
        return self.samplerate / (self.hop_length * self.pool)

    def seconds_to_frames(self, seconds: float) -> int:
        """Stored frames that ``seconds`` of audio give: the one seconds -> frames conversion, used by
        the training dataset, the embedder and the segment protocol. It is the frame count of the
        model's own CQT on a waveform of that length (centred frames, then floor pooling): 200 for
        20 s, 1500 for 150 s, 50 for 5 s at the defaults."""
        samples = int(self.samplerate * float(seconds))
        return (samples // self.hop_length + 1) // self.pool

    @staticmethod
    def from_dict(values: Mapping[str, Any]) -> "CQTParams":
        """From ``store.json``'s ``cqt_params`` (or :meth:`to_dict`); an unknown key or a bad value is one line."""
        known = {f.name: f.type for f in fields(CQTParams)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ClewsError(f"cqt_params: unknown key {unknown[0]!r}")
        try:
            params = CQTParams(
                **{k: (int(v) if k in ("samplerate", "noctaves", "nbinsoct", "pool") else float(v)) for k, v in values.items()}
            )
        except (TypeError, ValueError) as exc:
            raise ClewsError(f"cqt_params: {exc}") from None
        if params.hop_length < 1 or params.pool < 1 or params.n_bins < 1 or params.samplerate < 1:
            raise ClewsError(f"cqt_params: not a usable CQT ({params.to_dict()})")
        return params

    @staticmethod
    def from_model_conf(cqt_conf: Any, samplerate: int) -> "CQTParams":
        """From a config's ``model.cqt`` section (official layout) and ``data.samplerate``."""
        return CQTParams(
            samplerate=int(samplerate),
            hoplen=float(cqt_conf.hoplen),
            noctaves=int(cqt_conf.noctaves),
            nbinsoct=int(cqt_conf.nbinsoct),
            fscale=float(cqt_conf.fscale),
            pool=int(cqt_conf.pool),
        )

    def require_equal(self, other: "CQTParams", mine: str, theirs: str) -> None:
        """The single store/model check: ClewsError naming the first setting that differs."""
        for name in (f.name for f in fields(CQTParams)):
            a, b = getattr(self, name), getattr(other, name)
            if not math.isclose(float(a), float(b), rel_tol=1e-9):
                raise ClewsError(f"{mine} CQT setting {name}={a!r} differs from {theirs} ({name}={b!r})")

    def to_dict(self) -> dict:
        return {
            "samplerate": self.samplerate,
            "hoplen": self.hoplen,
            "noctaves": self.noctaves,
            "nbinsoct": self.nbinsoct,
            "fscale": self.fscale,
            "pool": self.pool,
        }
