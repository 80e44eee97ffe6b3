"""What ``clews-pipe evaluate`` writes: strict ``metrics.json`` with provenance, ``per_query.csv``,
one ``error:`` line where no metric exists, a warning for a collapsed embedding space, and the
protocol's choices on the checkpoint path (cliques dropped, shingle count)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from clews_pipe.cli.app import main
from clews_pipe.embeddings.npz_format import Embeddings, load_embeddings, save_embeddings
from clews_pipe.embeddings.formats import read_embeddings

from test_evaluate_cli import _tiny_checkpoint_and_store, make_embeddings

PROVENANCE_KEYS = {
    "clews_pipe_version", "checkpoint", "checkpoint_sha256", "checkpoint_epoch", "store", "store_index_sha256",
    "split", "protocol", "redux", "level", "maxlen", "world_size", "created",
}


def _strict(path):
    """Parse as strict JSON: a bare NaN / Infinity is an error."""
    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _run(args, capsys):
    code = main(["evaluate", *args, "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_per_query_csv_against_brute_force(tmp_path, capsys):
    # 7 tracks, one 3-d segment each: distance = mean squared difference (the CLEWS distance), by hand
    z = np.random.default_rng(3).standard_normal((7, 1, 3)).astype(np.float32)
    clique = np.array([0, 0, 1, 1, 2, 2, 3])  # track 6 alone: dropped by clews, a distractor for clews-pipe
    track = np.array([f"t{i}" for i in range(7)])
    save_embeddings(tmp_path / "e.npz", Embeddings(z=z, mask=np.zeros((7, 1), bool), clique=clique, track=track))
    for protocol, n_tracks in (("clews", 6), ("clews-pipe", 7)):
        out = tmp_path / protocol
        code, _, err = _run(["--embeddings", str(tmp_path / "e.npz"), "--redux", "min", "--protocol", protocol,
                             "--out", str(out)], capsys)
        assert code == 0, err
        rows = list(csv.DictReader((out / "per_query.csv").open()))
        assert list(rows[0]) == ["track", "clique", "AP", "R1", "NAR", "n_positives", "neighbours"]
        assert [r["track"] for r in rows] == track[:n_tracks].tolist()
        for i, row in enumerate(rows):
            others = [j for j in range(n_tracks) if j != i]
            d = {j: float(np.mean((z[i, 0] - z[j, 0]) ** 2)) for j in others}
            ranked = sorted(others, key=lambda j: (d[j], j))
            items = row["neighbours"].split(" ")
            assert len(items) == min(10, n_tracks - 1)
            for item, j in zip(items, ranked):
                name, dist, match = item.split(":")
                assert name == f"t{j}" and float(dist) == pytest.approx(d[j], rel=1e-5)
                assert match == str(int(clique[j] == clique[i]))
            positives = [j for j in others if clique[j] == clique[i]]
            assert int(row["n_positives"]) == len(positives)
            if not positives:
                assert row["AP"] == row["R1"] == row["NAR"] == ""
                continue
            ranks = [ranked.index(j) + 1 for j in positives]
            assert float(row["R1"]) == min(ranks)
            ap = np.mean([(k + 1) / r for k, r in enumerate(sorted(ranks))])
            assert float(row["AP"]) == pytest.approx(ap, abs=1e-6)
            n_neg = len(others) - len(positives)
            strict = 100 * sum(r - (k + 1) for k, r in enumerate(sorted(ranks))) / (len(positives) * n_neg)
            want = strict if protocol == "clews-pipe" else strict * n_neg / (n_neg + 1)
            assert float(row["NAR"]) == pytest.approx(want, abs=1e-5)


def test_metrics_json_is_strict_with_provenance(tmp_path, capsys):
    ckpt, store, _, _ = _tiny_checkpoint_and_store(tmp_path)
    out = tmp_path / "out"
    code, _, err = _run(["--checkpoint", str(ckpt), "--store", str(store), "--out", str(out), "--maxlen", "60"], capsys)
    assert code == 0, err
    metrics = _strict(out / "metrics.json")
    prov = metrics["provenance"]
    assert PROVENANCE_KEYS <= set(prov)
    import hashlib

    assert prov["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert prov["checkpoint_epoch"] == 0 and prov["split"] == "test" and prov["maxlen"] == 60.0
    assert prov["protocol"]["name"] == "clews" and prov["redux"] == "bpwr-10" and prov["level"] == "track"
    assert prov["world_size"] == 1 and len(prov["store_index_sha256"]) == 64
    assert prov["created"].endswith("+00:00")
    # clews: clique C3 (one track) is not evaluated; the 4 others all query
    assert metrics["queries"] == 4 and metrics["skipped"] == 0
    assert read_embeddings(out / "embeddings.zarr").track.tolist() == ["tr0", "tr1", "tr2", "tr3"]
    sidecar = _strict(out / "embeddings.json")
    assert sidecar["provenance"]["checkpoint_sha256"] == prov["checkpoint_sha256"]
    # the chunked store given back with --embeddings: same metrics, provenance from its sidecar
    again = tmp_path / "again"
    code, _, err = _run(["--embeddings", str(out / "embeddings.zarr"), "--out", str(again)], capsys)
    assert code == 0, err
    given = _strict(again / "metrics.json")
    assert given["MAP"] == metrics["MAP"] and given["provenance"]["checkpoint_sha256"] == prov["checkpoint_sha256"]
    assert given["provenance"]["embeddings"] == str((out / "embeddings.zarr").resolve())
    assert len(given["provenance"]["embeddings_sha256"]) == 64


def test_checkpoint_path_shingle_count_per_protocol(tmp_path, capsys):
    ckpt, store, _, _ = _tiny_checkpoint_and_store(tmp_path)
    counts = {}
    for protocol in ("clews", "clews-pipe"):
        out = tmp_path / protocol
        code, _, err = _run(["--checkpoint", str(ckpt), "--store", str(store), "--out", str(out), "--maxlen", "40",
                             "--protocol", protocol], capsys)
        assert code == 0, err
        emb = read_embeddings(out / "embeddings.zarr")
        counts[protocol] = dict(zip(emb.track.tolist(), (~emb.mask).sum(1).tolist()))
    # tr2 has 420 frames (42 s); maxlen 40 s = 400 frames. full: starts 0, 50, ..., 200 -> 5 shingles;
    # published (test.py): int((40 - 20) / 5) = 4 shingles. tr4 (clique C3, alone) only under clews-pipe.
    assert counts["clews-pipe"] == {"tr0": 1, "tr1": 3, "tr2": 5, "tr3": 1, "tr4": 3}
    assert counts["clews"] == {"tr0": 1, "tr1": 3, "tr2": 4, "tr3": 1}


def test_no_query_with_a_positive_is_an_error(tmp_path, capsys):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, 2, 8)).astype(np.float32)
    emb = Embeddings(z=z, mask=np.zeros((4, 2), bool), clique=np.arange(4), track=np.array(list("abcd")))
    save_embeddings(tmp_path / "e.npz", emb)
    for protocol, needle in (("clews", "no clique has >= 2 versions"), ("clews-pipe", "no query has another version")):
        out = tmp_path / protocol
        code, _, err = _run(["--embeddings", str(tmp_path / "e.npz"), "--out", str(out), "--protocol", protocol], capsys)
        assert code != 0 and len(err.strip().splitlines()) == 1 and err.startswith("error: ") and needle in err, err
        assert not (out / "metrics.json").exists()


def test_all_padding_is_an_error(tmp_path, capsys):
    make_embeddings(tmp_path / "e.npz")
    emb = load_embeddings(tmp_path / "e.npz")
    emb.mask[:] = True
    emb.z[:] = 0
    save_embeddings(tmp_path / "pad.npz", emb)
    code, _, err = _run(["--embeddings", str(tmp_path / "pad.npz"), "--out", str(tmp_path / "o")], capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1 and "padding" in err, err
    assert not (tmp_path / "o" / "metrics.json").exists()


@pytest.mark.parametrize("kind", ["zero", "equidistant"])
def test_collapsed_space_warns(tmp_path, capsys, kind):
    n = 6
    if kind == "zero":  # every embedding the same: every distance 0
        z = np.ones((n, 2, 4), np.float32)
    else:  # one-hot embeddings: every pair at the same distance 2 / D
        z = np.eye(n, dtype=np.float32)[:, None, :].repeat(2, axis=1)
    emb = Embeddings(z=z, mask=np.zeros((n, 2), bool), clique=np.repeat(np.arange(3), 2), track=np.array(list("abcdef")))
    save_embeddings(tmp_path / "e.npz", emb)
    out = tmp_path / "o"
    code, _, err = _run(["--embeddings", str(tmp_path / "e.npz"), "--out", str(out), "--redux", "meanmin"], capsys)
    assert code == 0
    warning_lines = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warning_lines) == 1 and "collapsed" in warning_lines[0]
    metrics = _strict(out / "metrics.json")
    assert len(metrics["warnings"]) == 1 and "collapsed" in metrics["warnings"][0]
    assert metrics["MAP"] is not None


def test_healthy_space_has_no_warning(tmp_path, capsys):
    make_embeddings(tmp_path / "e.npz")
    code, _, err = _run(["--embeddings", str(tmp_path / "e.npz"), "--out", str(tmp_path / "o")], capsys)
    assert code == 0 and "warning" not in err
    metrics = _strict(tmp_path / "o" / "metrics.json")
    assert metrics["warnings"] == []
    assert metrics["provenance"]["embeddings_sha256"] is not None and metrics["provenance"]["checkpoint"] is None
