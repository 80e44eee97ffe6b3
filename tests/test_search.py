"""``clews-pipe index build`` / ``clews-pipe search``: exact R_min ranking against a brute-force loop."""

import json
from pathlib import Path

import numpy as np
import pytest

from clews_pipe.cli.app import main
from clews_pipe.embeddings.from_audio import FileEmbedding, save_file_embedding
from clews_pipe.embeddings.npz_format import Embeddings, save_embeddings
from clews_pipe.search.segment_index import build_segment_index, load_segment_index, mapping_path, search_tracks

HOP = 5.0


def _random_set(seed: int, n_tracks: int = 40, max_segments: int = 6, dim: int = 16):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n_tracks, max_segments, dim)).astype(np.float32)
    lengths = rng.integers(1, max_segments + 1, size=n_tracks)
    mask = np.arange(max_segments)[None, :] >= lengths[:, None]
    z[mask] = 1e3  # padding far away: must never be indexed (it would win nothing, but count as a track)
    tracks = np.asarray([f"T{i:03d}" for i in range(n_tracks)])
    return Embeddings(z=z, mask=mask, clique=np.arange(n_tracks) // 2, track=tracks)


def _brute_force_rmin(emb: Embeddings, query: np.ndarray, query_starts: np.ndarray, hop: float):
    """(track, distance, query_start, candidate_start) for every track, best first, by plain loops."""
    rows = []
    for t in range(emb.n_tracks):
        best = (np.inf, 0.0, 0.0)
        for j in range(emb.z.shape[1]):
            if emb.mask[t, j]:
                continue
            for i in range(query.shape[0]):
                d = float(np.mean((query[i].astype(np.float64) - emb.z[t, j].astype(np.float64)) ** 2))
                if d < best[0]:
                    best = (d, float(query_starts[i]), j * hop)
        rows.append((str(emb.track[t]), *best))
    return sorted(rows, key=lambda r: r[1])


def _query_near(emb: Embeddings, seed: int, n_segments: int = 5):
    """Query segments: noisy copies of a few tracks' segments plus pure noise."""
    rng = np.random.default_rng(seed)
    picks = [(3, 0), (17, 1), (29, 0)]
    q = rng.normal(size=(n_segments, emb.z.shape[2])).astype(np.float32)
    for row, (t, j) in enumerate(picks):
        q[row + 1] = emb.z[t, j] + 0.3 * rng.normal(size=emb.z.shape[2])
    return q, np.arange(n_segments) * 2.5 + 1.0


def test_cli_ranking_equals_brute_force(tmp_path, capsys):
    emb = _random_set(0)
    save_embeddings(tmp_path / "embeddings.npz", emb)
    index = tmp_path / "idx" / "segments.faiss"
    assert main(["index", "build", str(tmp_path / "embeddings.npz"), "--out", str(index)]) == 0
    assert index.is_file() and mapping_path(index).is_file()
    assert f"{int((~emb.mask).sum())} segments of 40 tracks" in capsys.readouterr().out

    q, q_starts = _query_near(emb, 1)
    query = tmp_path / "query.npz"
    save_file_embedding(query, FileEmbedding(source=Path("q.wav"), z=q, starts=q_starts, duration=12.0,
                                             shingle_len=20.0, shingle_hop=2.5))
    assert main(["search", str(index), str(query), "--top", "10", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = _brute_force_rmin(emb, q, q_starts, HOP)[:10]
    got = result["matches"]
    assert [m["track"] for m in got] == [r[0] for r in expected]
    assert [m["rank"] for m in got] == list(range(1, 11))
    np.testing.assert_allclose([m["distance"] for m in got], [r[1] for r in expected], rtol=1e-4)
    assert [(m["query_start"], m["candidate_start"]) for m in got] == [(r[2], r[3]) for r in expected]
    assert {got[0]["track"], got[1]["track"], got[2]["track"]} == {"T003", "T017", "T029"}

    assert main(["search", str(index), str(query), "--top", "3"]) == 0  # the table
    table = capsys.readouterr().out
    assert all(name in table for name in (got[0]["track"], got[1]["track"], got[2]["track"]))
    assert "candidate time" in table


@pytest.mark.parametrize("seed", [2, 3, 4])
@pytest.mark.parametrize("k_start", [1, 3, None])
def test_widening_k_stays_exact(tmp_path, seed, k_start):
    emb = _random_set(seed, n_tracks=60)
    save_embeddings(tmp_path / "e.npz", emb)
    seg_index = build_segment_index(tmp_path / "e.npz", tmp_path / "i.faiss", hop=HOP)
    rng = np.random.default_rng(seed + 100)
    q = rng.normal(size=(4, 16)).astype(np.float32)  # pure noise: no planted matches, many near-ties
    starts = np.arange(4) * 5.0
    for top in (1, 7, 60, 100):
        got = search_tracks(seg_index, q, starts, top=top, k_start=k_start)
        expected = _brute_force_rmin(emb, q, starts, HOP)[:top]
        assert [m.track for m in got] == [r[0] for r in expected]
        assert [(m.query_start, m.candidate_start) for m in got] == [(r[2], r[3]) for r in expected]
    excluded = search_tracks(seg_index, q, starts, top=5, exclude=[expected[0][0]], k_start=k_start)
    assert [m.track for m in excluded] == [r[0] for r in expected[1:6]]


def test_index_over_folder_of_embed_outputs(tmp_path, capsys):
    rng = np.random.default_rng(5)
    folder = tmp_path / "emb"
    per_file = {"x/a": 3, "x/y/b": 1, "c": 4}
    store = {}
    for name, n in per_file.items():
        z = rng.normal(size=(n, 8)).astype(np.float32)
        starts = np.arange(n) * 5.0
        store[name] = z
        save_file_embedding(folder / f"{name}.npz", FileEmbedding(source=Path(f"{name}.mp3"), z=z, starts=starts,
                                                                  duration=20.0 + 5 * n, shingle_len=20.0,
                                                                  shingle_hop=5.0))
    index = tmp_path / "folder.faiss"
    assert main(["index", "build", str(folder), "--out", str(index)]) == 0
    loaded = load_segment_index(index)
    assert sorted(loaded.tracks.tolist()) == ["c", "x/a", "x/y/b"] and loaded.n_segments == 8
    capsys.readouterr()
    query = tmp_path / "q.npz"
    save_file_embedding(query, FileEmbedding(source=Path("q"), z=store["x/a"][2:3], starts=np.array([0.0]),
                                             duration=20.0, shingle_len=20.0, shingle_hop=5.0))
    assert main(["search", str(index), str(query), "--json", "--top", "3"]) == 0
    first = json.loads(capsys.readouterr().out)["matches"][0]
    assert first["track"] == "x/a" and first["distance"] == pytest.approx(0.0, abs=1e-6)
    assert first["candidate_start"] == 10.0


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    emb = _random_set(6, n_tracks=5)
    save_embeddings(tmp_path / "e.npz", emb)
    index = tmp_path / "i.faiss"
    assert main(["index", "build", str(tmp_path / "e.npz"), "--out", str(index)]) == 0
    capsys.readouterr()
    audio = tmp_path / "song.wav"
    audio.write_bytes(b"RIFF")
    assert main(["search", str(index), str(audio)]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs --checkpoint" in err and "\n" not in err
    wrong_dim = tmp_path / "q.npz"
    save_file_embedding(wrong_dim, FileEmbedding(source=Path("q"), z=np.zeros((2, 9), np.float32),
                                                 starts=np.zeros(2), duration=1.0, shingle_len=20.0, shingle_hop=5.0))
    assert main(["search", str(index), str(wrong_dim)]) == 2
    assert "D=9" in capsys.readouterr().err
    mapping_path(index).unlink()
    assert main(["search", str(index), str(wrong_dim)]) == 2
    assert "mapping" in capsys.readouterr().err
    assert main(["index", "build", str(tmp_path / "nothing.npz"), "--out", str(index)]) == 2


def test_audio_query_with_checkpoint_finds_itself(official_tiny, tmp_path, capsys):
    FIXTURE = official_tiny
    rng = np.random.default_rng(7)
    folder = tmp_path / "emb"
    expected = np.load(FIXTURE / "embedding.npy")  # the published embeddings of input.flac
    save_file_embedding(folder / "tune.npz", FileEmbedding(source=Path("tune.flac"), z=expected,
                                                           starts=np.arange(7) * 5.0, duration=47.0,
                                                           shingle_len=20.0, shingle_hop=5.0))
    for i in range(4):
        save_file_embedding(folder / f"other{i}.npz", FileEmbedding(
            source=Path("o"), z=expected[rng.permutation(7)[:3]] + 0.05 * rng.normal(size=(3, 48)).astype(np.float32),
            starts=np.arange(3) * 5.0, duration=30.0, shingle_len=20.0, shingle_hop=5.0))
    index = tmp_path / "i.faiss"
    assert main(["index", "build", str(folder), "--out", str(index)]) == 0
    capsys.readouterr()
    code = main(["search", str(index), str(FIXTURE / "input.flac"), "--checkpoint", str(FIXTURE / "checkpoint_best.ckpt"),
                 "--json", "--top", "5"])
    assert code == 0
    matches = json.loads(capsys.readouterr().out)["matches"]
    assert matches[0]["track"] == "tune" and matches[0]["distance"] < 1e-9
    assert matches[0]["query_start"] == matches[0]["candidate_start"]
    assert len(matches) == 5


@pytest.mark.parametrize("kind", ["ivf-flat", "ivf-pq", "hnsw"])
def test_approximate_kinds_rerank_exactly(tmp_path, capsys, kind):
    """Approximate kinds through the CLI: every returned distance is the exact R_min of that
    track (brute-force loop), the order is by exact R_min, and with clear planted matches the
    top tracks equal the brute-force ones."""
    emb = _random_set(11, n_tracks=300, max_segments=6, dim=16)
    save_embeddings(tmp_path / "e.npz", emb)
    index = tmp_path / f"{kind}.faiss"
    extra = ["--nlist", "8", "--nprobe", "4", "--pq-m", "4"] if kind != "hnsw" else ["--hnsw-m", "8"]
    assert main(["index", "build", str(tmp_path / "e.npz"), "--out", str(index), "--kind", kind, *extra]) == 0
    assert kind in capsys.readouterr().out
    loaded = load_segment_index(index)
    assert loaded.params.kind == kind and loaded.vectors.shape == (int((~emb.mask).sum()), 16)
    q, q_starts = _query_near(emb, 12)
    query = tmp_path / "q.npz"
    save_file_embedding(query, FileEmbedding(source=Path("q.wav"), z=q, starts=q_starts, duration=12.0,
                                             shingle_len=20.0, shingle_hop=2.5))
    assert main(["search", str(index), str(query), "--top", "10", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["kind"] == kind
    brute = {r[0]: r for r in _brute_force_rmin(emb, q, q_starts, HOP)}
    matches = got["matches"]
    for m in matches:  # exact values and the exact best pair of every returned track
        assert m["distance"] == pytest.approx(brute[m["track"]][1], rel=1e-9, abs=1e-12)
        assert (m["query_start"], m["candidate_start"]) == (brute[m["track"]][2], brute[m["track"]][3])
    assert [m["distance"] for m in matches] == sorted(m["distance"] for m in matches)
    expected = _brute_force_rmin(emb, q, q_starts, HOP)
    assert [m["track"] for m in matches[:2]] == [r[0] for r in expected[:2]] == ["T003", "T029"]  # planted
    # exhaustive search parameters reach every cell / node: the ranking equals brute force
    wide = load_segment_index(index, {"nprobe": 8} if kind != "hnsw" else {"ef_search": 4096})
    full = search_tracks(wide, q, q_starts, top=10, k_start=wide.n_segments)
    assert [m.track for m in full] == [r[0] for r in expected[:10]]


def test_bad_index_kind_and_params(tmp_path, capsys):
    emb = _random_set(6, n_tracks=5)
    save_embeddings(tmp_path / "e.npz", emb)
    assert main(["index", "build", str(tmp_path / "e.npz"), "--out", str(tmp_path / "i"), "--kind", "lsh"]) == 2
    assert "--kind must be one of flat, ivf-flat, ivf-pq, hnsw" in capsys.readouterr().err
    assert main(["index", "build", str(tmp_path / "e.npz"), "--out", str(tmp_path / "i"), "--kind", "ivf-pq",
                 "--pq-m", "5"]) == 2
    assert "pq_m=5 must divide" in capsys.readouterr().err


def test_matches_named_by_the_store_with_four_significant_digits(tmp_path, capsys, extracted_demo_store, demo_corpus):
    """--store adds each match's clique, title and artist (read here from the corpus' own split and
    .meta files, not from the store); the table prints distances with 4 significant digits."""
    from clews_pipe.store import open_store

    track_ids = sorted(open_store(extracted_demo_store).tracks().index.astype(str))
    rng = np.random.default_rng(3)
    z = rng.normal(size=(len(track_ids), 2, 8)).astype(np.float32)
    emb = Embeddings(z=z, mask=np.zeros((len(track_ids), 2), dtype=bool), clique=np.arange(len(track_ids)),
                     track=np.asarray(track_ids))
    save_embeddings(tmp_path / "e.npz", emb)
    index = tmp_path / "i.faiss"
    assert main(["index", "build", str(tmp_path / "e.npz"), "--out", str(index)]) == 0
    query = tmp_path / "q.npz"
    save_file_embedding(query, FileEmbedding(source=Path("q.wav"), z=z[4] + 0.01, starts=np.array([0.0, 5.0]),
                                             duration=25.0, shingle_len=20.0, shingle_hop=5.0))
    capsys.readouterr()
    assert main(["search", str(index), str(query), "--top", "3", "--json", "--store", str(extracted_demo_store)]) == 0
    best = json.loads(capsys.readouterr().out)["matches"][0]
    assert best["track"] == track_ids[4]
    truth = {}  # youtube_id -> clique from the split files, title/artist from the .meta beside the audio
    for split_file in demo_corpus.meta.glob("DiscogsVI-YT-20240701-light.json.*"):
        for clique, versions in json.loads(split_file.read_text()).items():
            for version in versions:
                truth[version["youtube_id"]] = clique
    meta = json.loads(next(demo_corpus.audio.rglob(f"{track_ids[4]}.meta")).read_text())
    assert (best["clique"], best["title"], best["artist"]) == (truth[track_ids[4]], meta["title"], meta["artist"])
    assert main(["search", str(index), str(query), "--top", "3", "--store", str(extracted_demo_store)]) == 0
    table = capsys.readouterr().out
    assert meta["title"][:10] in table and truth[track_ids[4]] in table
    assert f"{best['distance']:.4g}" in table


def test_index_build_skips_and_reports_empty_embed_outputs(tmp_path, capsys):
    """An empty (0, D) output, as older versions of embed wrote for an undecodable file, is reported
    and skipped; the other files are indexed."""
    folder = tmp_path / "emb"
    folder.mkdir()
    rng = np.random.default_rng(5)
    for name, n in (("a.wav", 3), ("b.mp3", 2)):
        save_file_embedding(folder / f"{name}.npz", FileEmbedding(source=Path(name), z=rng.normal(size=(n, 8)).astype(np.float32),
                                                                 starts=np.arange(n) * 5.0, duration=20.0, shingle_len=20.0, shingle_hop=5.0))
    np.savez(folder / "broken.mp3.npz", z=np.zeros((0, 8), np.float32), starts=np.zeros(0))
    index = tmp_path / "i.faiss"
    assert main(["index", "build", str(folder), "--out", str(index)]) == 0
    captured = capsys.readouterr()
    assert f"skipped {folder / 'broken.mp3.npz'}: no segments" in captured.err
    assert "5 segments of 2 tracks" in captured.out
    assert sorted(load_segment_index(index).tracks.tolist()) == ["a.wav", "b.mp3"]
