"""The reduction of a track pair's segment distances to one number, as one typed value.

``Redux.parse("bpwr-10")`` is the only place a reduction name is read; everything downstream (the
loss, validation, the tiled evaluator, the bpwr kernel, metrics.json) receives the parsed
:class:`Redux` and asks it what it needs: its ``kind`` and ``r``, whether it is ``symmetric`` in
query and candidate, whether it reads ``+inf`` distances as excluded pairs, and ``reduce`` itself.
Torch-free: configs validate reduction names without importing torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from clews_pipe.errors import ClewsError

PLAIN_KINDS = ("min", "max", "mean", "meanmin", "minmean")
KINDS_WITH_R = ("best", "bpwr")
_WITH_R = re.compile(r"^(best|bpwr)-(-?\d+)$")
#: reductions whose value does not change when query and candidate swap roles
_SYMMETRIC = frozenset({"min", "max", "mean", "best", "bpwr"})
#: reductions that read a +inf segment distance as an excluded (padded) pair
_EXCLUDES_INF = frozenset({"min", "bpwr"})


@dataclass(frozen=True)
class Redux:
    kind: str
    r: int | None = None

    @staticmethod
    def parse(name: "str | Redux") -> "Redux":
        """``"bpwr-10"`` → ``Redux("bpwr", 10)``; a :class:`Redux` is returned as it is.

        Unknown names and ``r < 1`` raise :class:`ClewsError` (one line).
        """
        if isinstance(name, Redux):
            return name
        text = str(name).strip().lower()
        if text in PLAIN_KINDS:
            return Redux(text)
        match = _WITH_R.match(text)
        if match is None:
            raise ClewsError(
                f"unknown reduction {name!r}: expected one of min, max, mean, meanmin, minmean, best-<r>, bpwr-<r>"
            )
        r = int(match.group(2))
        if r < 1:
            raise ClewsError(f"reduction {name!r}: r must be >= 1, got {r}")
        return Redux(match.group(1), r)

    @property
    def name(self) -> str:
        return self.kind if self.r is None else f"{self.kind}-{self.r}"

    def __str__(self) -> str:
        return self.name

    @property
    def symmetric(self) -> bool:
        """True when reducing (u, v) and its transpose gives the same value."""
        return self.kind in _SYMMETRIC

    @property
    def excludes_inf(self) -> bool:
        """True when +inf segment distances count as excluded pairs (padding can be folded into them)."""
        return self.kind in _EXCLUDES_INF
