"""``index build`` measures the recall of approximate kinds against exact search and tunes it."""

import json
from pathlib import Path

import numpy as np
import pytest

from clews_pipe.cli.app import main
from clews_pipe.search.recall import exact_top, sample_queries
from clews_pipe.embeddings.npz_format import Embeddings, save_embeddings
from clews_pipe.search.segment_index import build_segment_index, load_segment_index, search_tracks


def _clique_set(n_tracks=1200, max_segments=6, dim=16, seed=0):
    """Isotropic Gaussian cliques: clique centre + per-track offset + per-segment noise."""
    rng = np.random.default_rng(seed)
    clique = np.arange(n_tracks) // 4
    centers = rng.standard_normal((clique.max() + 1, dim))
    offset = 0.6 * rng.standard_normal((n_tracks, dim))
    z = centers[clique][:, None, :] + offset[:, None, :] + 0.5 * rng.standard_normal((n_tracks, max_segments, dim))
    lengths = rng.integers(1, max_segments + 1, n_tracks)
    mask = np.arange(max_segments)[None, :] >= lengths[:, None]
    return Embeddings(z=z.astype(np.float32), mask=mask, clique=clique,
                      track=np.asarray([f"T{i:05d}" for i in range(n_tracks)]))


def test_exact_top_equals_a_brute_force_loop():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 4, 30)
    segment_track = np.repeat(np.arange(30), lengths)
    vectors = rng.standard_normal((len(segment_track), 5)).astype(np.float32)
    queries = sample_queries(segment_track, 30, 6, seed=2)
    got = exact_top(vectors, segment_track, 30, queries, top=10)
    for i, q in enumerate(queries):
        best = {}
        for a in np.flatnonzero(segment_track == q):
            for b in range(len(segment_track)):
                t = int(segment_track[b])
                if t == q:
                    continue
                d = float(np.sum((vectors[a].astype(np.float64) - vectors[b]) ** 2))
                best[t] = min(best.get(t, np.inf), d)
        assert got.top[i].tolist() == sorted(best, key=lambda t: (best[t], t))[:10]


def test_default_build_reaches_target_against_flat_on_new_queries(tmp_path):
    emb = _clique_set()
    save_embeddings(tmp_path / "e.npz", emb)
    flat = build_segment_index(tmp_path / "e.npz", tmp_path / "flat.faiss")
    for kind in ("ivf-flat", "ivf-pq", "hnsw"):
        built = build_segment_index(tmp_path / "e.npz", tmp_path / f"{kind}.faiss", kind=kind, recall_queries=60)
        report = built.recall
        assert report["reached"] and report["recall"] >= 0.95 and report["tuned"]
        loaded = load_segment_index(tmp_path / f"{kind}.faiss")
        assert loaded.recall == report
        assert getattr(loaded.params, report["parameter"]) == report["value"]
        # independent check: held-out queries (new versions), answers compared with the flat index's
        rng = np.random.default_rng(7)
        same = total = 0
        for t in rng.choice(emb.n_tracks, 40, replace=False):
            q = (emb.z[t][~emb.mask[t]] + 0.2 * rng.standard_normal((int((~emb.mask[t]).sum()), 16))).astype(np.float32)
            want = [m.track for m in search_tracks(flat, q, top=10)]
            got = [m.track for m in search_tracks(loaded, q, top=10)]
            same += sum(a == b for a, b in zip(want, got))
            total += len(want)
        assert same / total >= 0.9, (kind, same / total)


def test_unreachable_target_says_so_and_suggests_flat(tmp_path, capsys):
    emb = _clique_set(n_tracks=600)
    save_embeddings(tmp_path / "e.npz", emb)
    out = tmp_path / "pq.faiss"
    assert main(["index", "build", str(tmp_path / "e.npz"), "--out", str(out), "--kind", "ivf-pq",
                 "--pq-m", "1", "--pq-bits", "1", "--nlist", "4", "--target-recall", "1.0",
                 "--recall-queries", "30"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "below the target 1" in last and "--kind flat" in last
    q = tmp_path / "q.npz"
    from clews_pipe.embeddings.from_audio import FileEmbedding, save_file_embedding

    n_seg = int((~emb.mask[0]).sum())
    save_file_embedding(q, FileEmbedding(source=Path("q.wav"), z=emb.z[0][~emb.mask[0]], starts=np.arange(n_seg) * 5.0,
                                         duration=5.0 * n_seg + 15.0, shingle_len=20.0, shingle_hop=5.0))
    assert main(["search", str(out), str(q), "--json"]) == 0
    recall = json.loads(capsys.readouterr().out)["recall"]
    assert recall["measured"] and recall["reached"] is False and 0 <= recall["recall_at_10"] < 1.0


def test_given_setting_is_measured_not_tuned(tmp_path, capsys):
    emb = _clique_set(n_tracks=400)
    save_embeddings(tmp_path / "e.npz", emb)
    out = tmp_path / "i.faiss"
    assert main(["index", "build", str(tmp_path / "e.npz"), "--out", str(out), "--kind", "ivf-flat",
                 "--nlist", "16", "--nprobe", "16", "--recall-queries", "20"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert "with nprobe 16" in last and "not tuned" in last and "recall@10 1.000" in last


@pytest.mark.parametrize("value", ["0", "-0.5", "1.5", "nan"])
def test_bad_target_recall_is_one_error_line(tmp_path, capsys, value):
    save_embeddings(tmp_path / "e.npz", _clique_set(n_tracks=40))
    code = main(["index", "build", str(tmp_path / "e.npz"), "--out", str(tmp_path / "i"), "--kind", "hnsw",
                 "--target-recall", value])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("error:") and "--target-recall" in err[0]
