"""Which compositions a compositions corpus is made of, and the rule that makes scores one clique.

A *work* is one composition; every version of a clique is a rendition of one work.

- **Chorale families.** music21's four-part J. S. Bach chorales harmonise a few hundred Lutheran
  melodies, many of them several times (the "Passion chorale" six times). Chorales whose
  soprano lines start with the same 11 pitch intervals (transposition-invariant, repeated notes
  merged: :func:`clews_pipe.datasets.scores.melody_signature`) are one work: a natural variant
  family, whose versions use the family's different harmonisations in turn. The grouping of the
  364 chorales into 269 families (54 with two to seven members) is stored in
  ``chorale_families.json`` (written by ``scripts/build_chorale_families.py``), since parsing
  every chorale costs about 40 s.
- **Folk tunes.** Each tune of Ryan's Mammoth Collection (1883; 1,059 ABC files in music21) is a
  work of its own.

:func:`choose_works` picks ``n`` works for a seed: 40% chorale families (those with several
harmonisations first), the rest folk tunes, in a seeded order, plus spare folk tunes a clique
falls back to when its score cannot be parsed. :func:`choose_train_only_works` then draws the
*train-only* cliques (``demo-corpus --train-only-cliques``) from the works left over: no score of
theirs is a work or a spare of the main cliques, so they never share a piece with val or test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

import numpy as np

CHORALE_SHARE = 0.4
SPARES_PER_WORK = 3
CHORALE_COLLECTION = "J. S. Bach, four-part chorales (music21 corpus)"
FOLK_COLLECTION = "Ryan's Mammoth Collection, 1883 (music21 corpus)"


@dataclass(frozen=True)
class Work:
    """One composition: its score(s) in music21's corpus and what the ``.meta`` files say."""

    title: str
    composer: str
    collection: str
    kind: str  # "chorale" | "folk"
    sources: tuple[str, ...]  # corpus paths, one per member of the family
    source_titles: tuple[str, ...]


def chorale_works() -> list[Work]:
    text = resources.files("clews_pipe.datasets").joinpath("chorale_families.json").read_text(encoding="utf-8")
    works = []
    for family in json.loads(text)["families"]:
        titles = [m["title"] for m in family]
        works.append(Work(
            title=max(set(titles), key=lambda t: (titles.count(t), -titles.index(t))),
            composer="J. S. Bach (harmonisation)", collection=CHORALE_COLLECTION, kind="chorale",
            sources=tuple(m["source"] for m in family), source_titles=tuple(f"{m['title']} (BWV {m['bwv']})" for m in family),
        ))
    return works


def folk_works() -> list[Work]:
    from music21 import corpus

    sources = sorted(
        "ryansMammoth/" + str(p).rsplit("ryansMammoth/", 1)[1]
        for p in corpus.corpora.CoreCorpus().getPaths(fileExtensions=("abc",))
        if "ryansMammoth/" in str(p)
    )
    return [Work(title="", composer="Traditional", collection=FOLK_COLLECTION, kind="folk",
                 sources=(s,), source_titles=("",)) for s in sources]


@dataclass(frozen=True)
class WorkChoice:
    """The work of one clique and the folk tunes it falls back to, in order."""

    work: Work
    spares: tuple[Work, ...]


def choose_works(n: int, seed: int, chorale_share: float = CHORALE_SHARE) -> list[WorkChoice]:
    """``n`` works for ``seed`` (same seed, same works), each with its own spares."""
    rng = np.random.default_rng([seed, 7])
    chorales = chorale_works()
    multi = [w for w in chorales if len(w.sources) > 1]
    single = [w for w in chorales if len(w.sources) == 1]
    chorales = [multi[i] for i in rng.permutation(len(multi))] + [single[i] for i in rng.permutation(len(single))]
    folk = folk_works()
    folk = [folk[i] for i in rng.permutation(len(folk))]
    n_chorale = min(len(chorales), int(round(chorale_share * n)))
    n_folk = n - n_chorale
    if n_folk * (1 + SPARES_PER_WORK) > len(folk):
        from clews_pipe.errors import ClewsError

        most = len(chorales) + len(folk) // (1 + SPARES_PER_WORK)
        raise ClewsError(f"--cliques {n}: the compositions corpus has at most {most} cliques")
    chosen = chorales[:n_chorale] + folk[:n_folk]
    order = rng.permutation(n)
    spare_pool = folk[n_folk:]
    return [
        WorkChoice(chosen[i], tuple(spare_pool[k * SPARES_PER_WORK:(k + 1) * SPARES_PER_WORK]))
        for k, i in enumerate(order)
    ]


def choose_train_only_works(n: int, seed: int, taken: list[WorkChoice]) -> list[WorkChoice]:
    """``n`` more works for ``seed``, none of whose scores is a work or spare in ``taken``, in a
    seeded order (chorale families and folk tunes mixed as the pool has them). They have no
    spares: a train-only clique whose score does not parse is reported as failed, and the pool
    (about 730 works beside 150 main cliques) is left for as many cliques as possible."""
    used = {source for choice in taken for work in (choice.work,) + choice.spares for source in work.sources}
    pool = [w for w in chorale_works() + folk_works() if not used.intersection(w.sources)]
    rng = np.random.default_rng([seed, 9])
    pool = [pool[i] for i in rng.permutation(len(pool))]
    if n > len(pool):
        from clews_pipe.errors import ClewsError

        raise ClewsError(f"--train-only-cliques {n}: at most {len(pool)} works are left beside the "
                         f"{len(taken)} main cliques")
    return [WorkChoice(work, ()) for work in pool[:n]]
