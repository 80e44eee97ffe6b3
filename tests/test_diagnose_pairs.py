"""scripts/diagnose_pairs.py: the rank of each positive in its row, against a hand-worked case."""

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "diagnose_pairs.py"


def _load():
    spec = importlib.util.spec_from_file_location("diagnose_pairs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ranks_of_positives_by_hand():
    # tracks 0 and 1 are one clique, 2 and 3 another
    dist = np.array([
        [0.0, 0.5, 0.2, 0.9],   # row 0: track 2 (0.2) is closer than its version 1 (0.5) -> rank 1
        [0.5, 0.0, 0.7, 0.6],   # row 1: version 0 nearest -> rank 0
        [0.1, 0.3, 0.0, 0.4],   # row 2: tracks 0 and 1 closer than version 3 -> rank 2
        [0.9, 0.9, 0.8, 0.0],   # row 3: version 2 nearest -> rank 0
    ])
    clique = np.array([0, 0, 1, 1])
    positive = (clique[:, None] == clique[None]) & ~np.eye(4, dtype=bool)
    ranks = _load().ranks_of_positives(dist, positive)
    assert list(zip(*positive.nonzero())) == [(0, 1), (1, 0), (2, 3), (3, 2)]
    assert ranks.tolist() == [1, 0, 2, 0]


def test_pair_groups_name_what_separates_two_versions():
    a = {"collection": "Bach chorales", "version": {"key_shift": 2, "arrangement": "melody"}}
    b = {"collection": "Bach chorales", "version": {"key_shift": 2, "arrangement": "harmonised"}}
    assert _load().pair_groups(a, b) == ["all pairs", "same key", "arrangement changed", "chorale"]
