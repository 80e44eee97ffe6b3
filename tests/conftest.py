"""Shared fixtures.

``demo_corpus`` (session-scoped): a small synthetic Discogs-VI-layout corpus written once per
test session by :func:`clews_pipe.datasets.demo_corpus.generate_corpus` — 8 cliques of 2-3
versions, 20-32 s each, split 4/2/2 cliques over train/val/test, a mix of mp3 (most), flac,
ogg and wav. The fixture value is the generator's summary dict (keys ``root``, ``audio``,
``meta``, ``tracks``, ``splits``, ...) that also behaves as the corpus root path
(``os.fspath(corpus)``, ``corpus / "audio"``) and has Path attributes ``.root``, ``.audio``,
``.meta``. Load it with
``load_catalog("discogs-vi", corpus.meta, corpus.audio)`` (the ``demo_catalog`` fixture).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_fixtures_root() -> Path:
    """``$CLEWS_TEST_FIXTURES``, else ``../shared/fixtures`` next to the repository root."""
    env = os.environ.get("CLEWS_TEST_FIXTURES")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "fixtures"


def _shared_fixture(name: str) -> Path:
    """The shared fixture folder ``name``; a missing one skips the test naming it, or fails it
    when ``CLEWS_REQUIRE_FIXTURES=1`` (``.ci/run`` sets that whenever the fixtures exist)."""
    path = shared_fixtures_root() / name
    if not path.is_dir():
        message = f"shared fixture {name} not found at {path} (set CLEWS_TEST_FIXTURES)"
        if os.environ.get("CLEWS_REQUIRE_FIXTURES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def official_tiny() -> Path:
    """``official-clews-tiny``: a small checkpoint saved by the published code, with its CQT,
    embeddings and loss on fixed inputs."""
    return _shared_fixture("official-clews-tiny")


@pytest.fixture(scope="session")
def official_eval() -> Path:
    """``official-clews-eval``: embeddings and what the published evaluation computes on them."""
    return _shared_fixture("official-clews-eval")

DEMO_CORPUS_ARGS = dict(
    cliques=8,
    seed=1234,
    versions_min=2,
    versions_max=3,
    duration_min=20.0,
    duration_max=32.0,
    split_fractions=(0.5, 0.25, 0.25),
)


class DemoCorpus(dict):
    """Summary dict of a generated demo corpus that also acts as its root path."""

    @property
    def root(self) -> Path:
        return Path(self["root"])

    @property
    def audio(self) -> Path:
        return Path(self["audio"])

    @property
    def meta(self) -> Path:
        return Path(self["meta"])

    def __fspath__(self) -> str:
        return self["root"]

    def __truediv__(self, other) -> Path:
        return self.root / other

    def __str__(self) -> str:
        return self["root"]


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> DemoCorpus:
    from clews_pipe.datasets.demo_corpus import generate_corpus

    root = tmp_path_factory.mktemp("demo_corpus")
    return DemoCorpus(generate_corpus(root, **DEMO_CORPUS_ARGS))


@pytest.fixture(scope="session")
def demo_catalog(demo_corpus):
    """The demo corpus through the Discogs-VI catalog (all three splits, every track found)."""
    from clews_pipe.datasets.catalogs import load_catalog

    return load_catalog("discogs-vi", demo_corpus.meta, demo_corpus.audio)


@pytest.fixture(scope="session")
def extracted_demo_store(demo_corpus, tmp_path_factory) -> Path:
    """The ``demo_corpus`` extracted into a zarr store by the real ``clews-pipe extract`` (1 worker)."""
    from clews_pipe.cli.app import main

    out = tmp_path_factory.mktemp("extracted") / "demo.store"
    code = main(
        [
            "extract", "--dataset", "discogs-vi", "--meta", str(demo_corpus.meta),
            "--audio", str(demo_corpus.audio), "--out", str(out), "--workers", "1", "--quiet",
        ]
    )
    assert code == 0
    return out
