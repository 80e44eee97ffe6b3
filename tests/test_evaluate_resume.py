"""Reproducible ``evaluate --checkpoint``: bit-identical embeddings on every rerun and any number of
ranks; a killed run reuses the chunked ``OUT/embeddings.zarr`` (same fingerprint, every block
written) and resumes the matrix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import zarr

from clews_pipe.cli.app import main
from clews_pipe.embeddings.from_store import EmbedSettings, embed_store
from clews_pipe.embeddings.formats import read_embeddings

from test_evaluate_cli import _tiny_checkpoint_and_store

def _same_embeddings(a, b) -> bool:
    """Every array of two embeddings sets (chunked stores or .npz) bit-identical."""
    ea, eb = read_embeddings(a), read_embeddings(b)
    same = all(np.array_equal(getattr(ea, k), getattr(eb, k)) for k in ("z", "mask", "clique", "track"))
    same &= sorted(ea.queries) == sorted(eb.queries)
    same &= all(np.array_equal(ea.queries[t][i], eb.queries[t][i]) for t in ea.queries for i in (0, 1))
    return bool(same) and (ea.track_queries is None) == (eb.track_queries is None)


def _snapshot(folder) -> dict:
    """Every file of a folder: (mtime_ns, bytes)."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


TWO_RANKS_SMALL_BLOCKS = textwrap.dedent(
    """
    import sys
    import clews_pipe.embeddings.from_store as embed
    from clews_pipe.cli.app import main

    embed.EMBED_BLOCK = 8  # blocks of one group: both ranks embed and write blocks of the store
    sys.exit(main(sys.argv[1:]))
    """
)


def _more_tracks(store, n=20, seed=1):
    """Add ``n`` tracks (2-3 per clique, 6-40 s) to the test split of ``store``: more than one group
    of TRACKS_PER_READ, so that two ranks both embed."""
    from clews_pipe.store import open_store
    from clews_pipe.store import create_store

    rng = np.random.default_rng(seed)
    records, feats = [], []
    for i in range(n):
        frames = int(rng.integers(60, 400))
        records.append({"track_id": f"extra{i:02d}", "clique": f"X{i // 3}", "version": f"W{i}", "split": "test",
                        "status": "ok", "duration": frames / 10.0})
        feats.append(rng.random((frames, 84)).astype(np.float16))
    writer = create_store(store)
    writer.write_part("p1", records, feats)
    writer.consolidate()
    return len(open_store(store).tracks("test"))


def test_embeddings_bit_identical_on_rerun_and_two_ranks(tmp_path):
    from clews_pipe.embeddings.from_store import TRACKS_PER_READ

    ckpt, store, _, _ = _tiny_checkpoint_and_store(tmp_path)
    assert _more_tracks(store) == 25 > 2 * TRACKS_PER_READ
    settings = EmbedSettings(maxlen=60.0, taus=(10.0,), batch_size=4)
    first = embed_store(ckpt, store, "test", tmp_path / "a" / "embeddings.zarr", settings, progress=False)
    second = embed_store(ckpt, store, "test", tmp_path / "b" / "embeddings.zarr", settings, progress=False,
                         block=TRACKS_PER_READ)  # other chunks, same groups of tracks: same values
    assert first.z.dtype == np.float16 and first.n_tracks == 24  # the lone C3 track is not evaluated
    assert _same_embeddings(tmp_path / "a" / "embeddings.zarr", tmp_path / "b" / "embeddings.zarr")
    assert np.array_equal(first.queries[10.0][0][:], second.queries[10.0][0][:])
    # two CPU ranks (gloo), each writing its blocks of the store in place: bit-identical values
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    out2 = tmp_path / "two"
    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS_SMALL_BLOCKS)
    proc = subprocess.run(
        [sys.executable, str(script), "evaluate", "--checkpoint", str(ckpt), "--store", str(store),
         "--out", str(out2), "--maxlen", "60", "--batch-size", "4", "--level", "segment", "--taus", "10",
         "--devices", "2", "--quiet"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = zarr.open_group(str(out2 / "embeddings.zarr"), mode="r")
    assert written["block_done"][:].tolist() == [1, 1, 1]  # 24 tracks in blocks of 8: rank 0 wrote 0 and 2, rank 1 wrote 1
    assert not list(out2.glob("embeddings.rank*")) and not (out2 / "embeddings.npz").exists()  # no shards, no merge
    assert _same_embeddings(out2 / "embeddings.zarr", tmp_path / "a" / "embeddings.zarr")
    assert json.loads((out2 / "metrics.json").read_text())["provenance"]["world_size"] == 2


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import clews_pipe.evaluation.distances as distances
    from clews_pipe.cli.app import main

    real, calls = distances.tile_distances, [0]

    def killing(*args, **kwargs):
        calls[0] += 1
        if calls[0] > int(os.environ["KILL_AFTER_TILES"]):
            os.kill(os.getpid(), signal.SIGKILL)  # a real kill: no cleanup, no exception handlers
        return real(*args, **kwargs)

    distances.tile_distances = killing
    sys.exit(main(sys.argv[1:]))
    """
)


def test_killed_checkpoint_evaluation_resumes_without_reembedding(tmp_path, monkeypatch, capsys):
    ckpt, store, _, _ = _tiny_checkpoint_and_store(tmp_path)
    args = ["evaluate", "--checkpoint", str(ckpt), "--store", str(store), "--maxlen", "60", "--tile", "1",
            "--batch-size", "4", "--quiet"]
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONWARNINGS="ignore", KILL_AFTER_TILES="3")
    proc = subprocess.run([sys.executable, "-c", KILLER, *args, "--out", str(out)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (out / "metrics.json").exists()
    done = zarr.open_group(str(out / "distances.zarr"), mode="r")["tile_done"][:]
    assert done.sum() == 3  # 4 tracks (clews drops the lone C3 track), tile 1: 10 tiles on/above the diagonal
    assert zarr.open_group(str(out / "embeddings.zarr"), mode="r")["block_done"][:].all()
    emb_files = _snapshot(out / "embeddings.zarr")
    sidecar = (out / "embeddings.json").read_bytes()

    # rerun in-process: the embeddings are reused (not recomputed), only the 7 missing tiles are computed
    import clews_pipe.evaluation.distances as distances
    import clews_pipe.embeddings.from_store as embed

    calls = []
    real_tile = distances.tile_distances
    monkeypatch.setattr(distances, "tile_distances", lambda *a, **k: calls.append(1) or real_tile(*a, **k))

    def no_embedding(*a, **k):
        raise AssertionError("the rerun re-embedded the split")

    monkeypatch.setattr(embed, "embed_store", no_embedding)
    assert main([*args, "--out", str(out)]) == 0
    assert "reusing" in capsys.readouterr().err
    assert len(calls) == 7
    assert _snapshot(out / "embeddings.zarr") == emb_files  # not one chunk rewritten
    assert (out / "embeddings.json").read_bytes() == sidecar
    monkeypatch.undo()

    # an uninterrupted run from scratch (new embeddings, new matrix) gives the identical matrix
    fresh = tmp_path / "fresh"
    assert main([*args, "--out", str(fresh)]) == 0
    assert _same_embeddings(fresh / "embeddings.zarr", out / "embeddings.zarr")
    resumed = zarr.open_group(str(out / "distances.zarr"), mode="r")["distances"][:]
    straight = zarr.open_group(str(fresh / "distances.zarr"), mode="r")["distances"][:]
    assert np.array_equal(resumed, straight) and np.isfinite(resumed).all()
    m_resumed = json.loads((out / "metrics.json").read_text())
    m_fresh = json.loads((fresh / "metrics.json").read_text())
    for key in ("MAP", "MR1", "NAR", "NAR_strict", "queries"):
        assert m_resumed[key] == m_fresh[key]


def test_changed_settings_reembed(tmp_path, capsys):
    ckpt, store, _, _ = _tiny_checkpoint_and_store(tmp_path)
    out = tmp_path / "o"
    base = ["evaluate", "--checkpoint", str(ckpt), "--store", str(store), "--out", str(out), "--quiet"]
    assert main([*base, "--maxlen", "60"]) == 0
    capsys.readouterr()
    assert main([*base, "--maxlen", "30"]) == 0  # another maxlen: another fingerprint -> embedded again
    assert "reusing" not in capsys.readouterr().err
    assert read_embeddings(out / "embeddings.zarr").mask.shape[1] == 2  # int((30 - 20) / 5)
    assert main([*base, "--maxlen", "30"]) == 0
    assert "reusing" in capsys.readouterr().err


def test_incomplete_store_is_not_reused(tmp_path, capsys):
    """A store whose blocks are not all written (a run killed while embedding) is embedded again,
    even with the same fingerprint in the sidecar."""
    ckpt, store, _, _ = _tiny_checkpoint_and_store(tmp_path)
    out = tmp_path / "o"
    base = ["evaluate", "--checkpoint", str(ckpt), "--store", str(store), "--out", str(out), "--quiet", "--maxlen", "60"]
    assert main(base) == 0
    before = read_embeddings(out / "embeddings.zarr")
    zarr.open_group(str(out / "embeddings.zarr"), mode="r+")["block_done"][0] = 0
    capsys.readouterr()
    assert main(base) == 0
    assert "reusing" not in capsys.readouterr().err
    assert zarr.open_group(str(out / "embeddings.zarr"), mode="r")["block_done"][:].all()
    assert np.array_equal(read_embeddings(out / "embeddings.zarr").z, before.z)
