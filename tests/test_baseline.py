"""The Qmax baseline against independent computations: a hand-worked Qmax, a brute-force loop
transcription of the paper's recursion and neighbour rule, and the sharded command on 1 vs 2 ranks."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from clews_pipe.baseline.chroma import chroma_from_cqt
from clews_pipe.baseline.matcher import candidate_set, query_distances, track_chroma
from clews_pipe.baseline.qmax import QmaxSettings, _recurrence, delay_embed, oti, qmax_of


def _qmax_by_hand(rec, gamma_o, gamma_e):
    """Serrà et al. 2009, eq. for Q: a literal double loop with out-of-range cells = 0."""
    n_a, n_b = len(rec), len(rec[0])
    q = {}

    def Q(i, j):
        return q.get((i, j), 0.0)

    def R(i, j):
        return rec[i][j] if 0 <= i < n_a and 0 <= j < n_b else 0

    def g(i, j):
        return gamma_o if R(i, j) else gamma_e

    for i in range(n_a):
        for j in range(n_b):
            if rec[i][j]:
                q[i, j] = max(Q(i - 1, j - 1), Q(i - 2, j - 1), Q(i - 1, j - 2)) + 1
            else:
                q[i, j] = max(0.0, Q(i - 1, j - 1) - g(i - 1, j - 1), Q(i - 2, j - 1) - g(i - 2, j - 1),
                              Q(i - 1, j - 2) - g(i - 1, j - 2))
    return max(q.values())


def test_qmax_hand_worked_diagonal_with_a_gap():
    # a 5-frame diagonal path whose middle cell is missing: 1, 2, (gap), 1, 2 with gamma_o = 5
    # (the gap restarts the path); with gamma_o = 0.5 it only costs 0.5: 1, 2, 1.5, 2.5, 3.5
    rec = np.eye(5, dtype=np.uint8)
    rec[2, 2] = 0
    assert qmax_of(rec, 5.0, 0.5) == 2.0
    assert qmax_of(rec, 0.5, 0.5) == 3.5
    # a path may skip a row or a column (steps (1,2) and (2,1)): length 3 despite the skip
    skip = np.zeros((4, 4), dtype=np.uint8)
    skip[0, 0] = skip[1, 1] = skip[3, 2] = 1
    assert qmax_of(skip, 5.0, 0.5) == 3.0
    assert qmax_of(np.zeros((3, 3), dtype=np.uint8), 5.0, 0.5) == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_qmax_equals_the_literal_recursion(seed):
    rng = np.random.default_rng(seed)
    rec = (rng.random((int(rng.integers(3, 25)), int(rng.integers(3, 25)))) < 0.3).astype(np.uint8)
    assert qmax_of(rec, 5.0, 0.5) == pytest.approx(_qmax_by_hand(rec.tolist(), 5.0, 0.5))
    assert qmax_of(rec, 1.0, 0.2) == pytest.approx(_qmax_by_hand(rec.tolist(), 1.0, 0.2))


def test_cross_recurrence_is_the_mutual_nearest_fraction():
    rng = np.random.default_rng(3)
    a, b = rng.random((12, 4)), rng.random((20, 4))
    dist = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    kappa = 0.2
    k_row, k_col = round(kappa * 20), round(kappa * 12)
    expected = np.zeros((12, 20), dtype=np.uint8)
    for i in range(12):
        for j in range(20):
            row_rank = sum(dist[i, jj] < dist[i, j] for jj in range(20))  # neighbours of a_i closer than b_j
            col_rank = sum(dist[ii, j] < dist[i, j] for ii in range(12))
            expected[i, j] = row_rank < k_row and col_rank < k_col
    assert np.array_equal(_recurrence(dist, 20, kappa), expected)


def test_chroma_folds_octaves_and_oti_undoes_a_transposition():
    cqt = np.zeros((10, 84), dtype=np.float16)
    cqt[:, 0] = 1.0  # C1
    cqt[:, 12 * 3 + 7] = 2.0  # G4
    chroma = chroma_from_cqt(cqt, pool=5)
    assert chroma.shape == (2, 12)
    assert chroma[0].tolist() == [0.5] + [0.0] * 6 + [1.0] + [0.0] * 4
    rng = np.random.default_rng(0)
    profile = rng.random(12)
    assert oti(profile, np.roll(profile, -5)) == 5


def _pair_by_hand(q: np.ndarray, c: np.ndarray, s: QmaxSettings) -> float:
    """One pair, step by step as the paper describes it (query transposed towards the candidate)."""
    gq, gc = q.mean(0) / q.mean(0).max(), c.mean(0) / c.mean(0).max()
    shift = max(range(12), key=lambda k: (float(np.dot(gc, np.roll(gq, k))), -k))
    xq, xc = delay_embed(np.roll(q, shift, axis=1), s.m, s.tau), delay_embed(c, s.m, s.tau)
    dist = np.array([[float(((u - v) ** 2).sum()) for v in xc] for u in xq])
    rec = _recurrence(dist, len(xc), s.kappa)
    return np.sqrt(len(xc)) / (_qmax_by_hand(rec.tolist(), s.gamma_o, s.gamma_e) + 1.0)


def test_query_distances_equal_the_pairwise_computation():
    s = QmaxSettings(m=3, pool=1)
    rng = np.random.default_rng(1)
    base = rng.random((30, 12)).astype(np.float32)
    chromas = [base, np.roll(base, 4, axis=1)[2:27], rng.random((18, 12)).astype(np.float32), rng.random((40, 12)).astype(np.float32)]
    tracks = [track_chroma(np.tile(c, (1, 7)), s) for c in chromas]  # (frames, 84): 7 octaves of the chroma
    got = query_distances(tracks[0], candidate_set(tracks), s)
    want = [_pair_by_hand(tracks[0].chroma, t.chroma, s) for t in tracks]
    assert got == pytest.approx(want, rel=1e-5)
    assert got[1] < got[2] and got[1] < got[3]  # the transposed, cut copy is the nearest other track


def _tiny_store(path):
    from clews_pipe.store import create_store

    rng = np.random.default_rng(0)
    writer = create_store(path)
    for c in range(5):
        song = rng.random((80, 12)).astype(np.float16)
        for v in range(3):
            frames = np.roll(song, int(rng.integers(0, 12)), axis=1)[int(rng.integers(0, 20)):]
            frames = np.tile(frames + 0.3 * rng.random(frames.shape).astype(np.float16), (1, 7)).astype(np.float16)
            record = {"track_id": f"t{c}{v}", "clique": f"C{c}", "split": "test", "status": "ok"}
            writer.write_part(f"p{c}{v}", [record], [frames])
    writer.consolidate()
    return path


def _run(args):
    """In a fresh interpreter: two ranks are started by Fabric, which re-runs the command line."""
    proc = subprocess.run([sys.executable, "-m", "clews_pipe.cli.app", "baseline", *args, "--quiet", "--m", "4"],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"), timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_baseline_command_same_results_on_one_and_two_ranks(tmp_path):
    store = _tiny_store(tmp_path / "s.store")
    _run(["--store", str(store), "--out", str(tmp_path / "r1"), "--tile", "4"])
    _run(["--store", str(store), "--out", str(tmp_path / "r2"), "--tile", "4", "--devices", "2"])
    one, two = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("r1", "r2"))
    assert one["provenance"]["method"] == "chroma cross-recurrence Qmax"
    assert (one["provenance"]["world_size"], two["provenance"]["world_size"]) == (1, 2)
    for key in ("MAP", "MR1", "NAR", "NAR_strict", "queries", "MAP_chance"):
        assert one[key] == two[key]
    assert one["queries"] == 15 and one["MAP"] > 0.9  # transposed, shifted, noisy copies are found
    rows1, rows2 = (list(csv.DictReader((tmp_path / r / "per_query.csv").open())) for r in ("r1", "r2"))
    assert rows1 == rows2
    from clews_pipe.reporting.html_report import write_report  # the report reads it like a model's evaluation

    write_report(tmp_path / "r1", tmp_path / "r1.html")
    assert "Qmax" in (tmp_path / "r1.html").read_text()
    from clews_pipe.reporting.plots import curve_from_eval_dir, plot_eval_dirs  # and plot, as a reference line

    assert curve_from_eval_dir(tmp_path / "r1").track_level
    assert plot_eval_dirs([tmp_path / "r1"], tmp_path / "cmp.png").stat().st_size > 1000
