"""``clews-pipe evaluate`` / ``fuse`` end to end on small embeddings files."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from clews_pipe.cli.app import main
from clews_pipe.embeddings.formats import read_embeddings
from clews_pipe.embeddings.npz_format import Embeddings, load_embeddings, save_embeddings


def make_embeddings(path, n_cliques=6, per_clique=3, s=6, d=16, seed=0, taus=()):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_cliques, d)).astype(np.float32)
    clique = np.repeat(np.arange(n_cliques), per_clique)
    clique = np.append(clique, n_cliques)  # one track alone in its clique: skipped
    centers = np.vstack([centers, rng.standard_normal((1, d)).astype(np.float32)])
    n = len(clique)
    z = centers[clique][:, None, :] + 0.9 * rng.standard_normal((n, s, d)).astype(np.float32)
    mask = np.zeros((n, s), dtype=bool)
    mask[::4, s // 2 :] = True
    z[mask] = 0.0
    queries = {}
    for tau in taus:
        st = max(1, s - int(tau) // 10)
        zq = centers[clique][:, None, :] + 1.2 * rng.standard_normal((n, st, d)).astype(np.float32)
        queries[float(tau)] = (zq, np.zeros((n, st), dtype=bool))
    emb = Embeddings(z=z, mask=mask, clique=clique, track=np.array([f"trk{i:02d}" for i in range(n)]), queries=queries)
    save_embeddings(path, emb)
    return emb


def test_track_level_and_exports(tmp_path, capsys):
    emb_file = tmp_path / "emb.npz"
    make_embeddings(emb_file)
    out = tmp_path / "out"
    code = main(["evaluate", "--embeddings", str(emb_file), "--out", str(out), "--tile", "5", "--quiet",
                 "--protocol", "clews-pipe", "--export-wealy", str(tmp_path / "w.pkl")])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["redux"] == "bpwr-10" and metrics["level"] == "track"
    assert metrics["queries"] == 18 and metrics["skipped"] == 1
    assert metrics["MAP"] > 0.5
    assert (out / "metrics.md").read_text().startswith("| NAR")
    assert "MAP" in capsys.readouterr().out
    payload = pickle.load(open(tmp_path / "w.pkl", "rb"))
    assert payload["distance_matrix"].shape == (19, 19)
    assert payload["query_references"][3]["matrix_row"] == 3
    assert {"clique", "version", "matrix_col"} <= set(payload["candidate_references"][0])
    # fuse ours with the WEALY pickle of the same matrix: alpha only rescales -> same metrics
    csv_path = tmp_path / "fusion.csv"
    assert main(["fuse", str(out / "distances.zarr"), str(tmp_path / "w.pkl"), "--alphas", "0,1", "--out", str(csv_path)]) == 0
    lines = csv_path.read_text().splitlines()
    assert len(lines) == 3
    m0 = lines[1].split(",")[1:4]
    m1 = lines[2].split(",")[1:4]
    np.testing.assert_allclose([float(x) for x in m0], [metrics["MAP"], metrics["MR1"], metrics["NAR"]], rtol=1e-9)
    np.testing.assert_allclose([float(x) for x in m1], [float(x) for x in m0], rtol=1e-9)


def test_segment_level_tiny(tmp_path):
    emb_file = tmp_path / "emb.npz"
    make_embeddings(emb_file, taus=(10, 20))
    out = tmp_path / "seg"
    assert main(["evaluate", "--embeddings", str(emb_file), "--level", "segment", "--taus", "10,20", "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert [r["tau"] for r in result["per_tau"]] == [10.0, 20.0]
    assert result["redux"] == "min"
    assert (out / "segment_level.png").stat().st_size > 1000
    assert json.loads((out / "tau_10" / "metrics.json").read_text())["level"] == "segment"


def test_segment_level_hand_made(tmp_path):
    # 3 tracks, D=1. Query segments of track 0: [0.0]; candidates' shingles: t0 [0, 5], t1 [2, 9], t2 [1, 7]
    # R_min from t0's query: to t1 -> (0-2)^2 = 4, to t2 -> 1 => t2 (other clique) ranks first, t1 second.
    z = np.array([[[0.0], [5.0]], [[2.0], [9.0]], [[1.0], [7.0]]], dtype=np.float32)
    zq = np.array([[[0.0]], [[9.5]], [[6.5]]], dtype=np.float32)
    emb = Embeddings(z=z, mask=np.zeros((3, 2), bool), clique=np.array([0, 0, 1]), track=np.array(["a", "b", "c"]),
                     queries={5.0: (zq, np.zeros((3, 1), bool))})
    save_embeddings(tmp_path / "e.npz", emb)
    assert main(["evaluate", "--embeddings", str(tmp_path / "e.npz"), "--level", "segment", "--taus", "5", "--out", str(tmp_path / "o"), "--quiet",
                 "--protocol", "clews-pipe"]) == 0
    row = json.loads((tmp_path / "o" / "metrics.json").read_text())["per_tau"][0]
    # query a: match b at rank 2 of 2 -> AP 0.5, R1 2, NAR 100; query b (9.5): a best 5->20.25, c 7->6.25: match at rank 2
    # query c: no other version -> skipped
    assert row["queries"] == 2 and row["skipped"] == 1
    assert row["MAP"] == pytest.approx(0.5) and row["MR1"] == pytest.approx(2.0) and row["NAR"] == pytest.approx(100.0)


@pytest.mark.parametrize("layout,redux", [("npz", "meanmin"), ("zarr", "bpwr-3")])
def test_two_ranks_match_one(tmp_path, layout, redux):
    emb_file = tmp_path / "emb.npz"
    emb = make_embeddings(emb_file, n_cliques=8)
    if layout == "zarr":  # the chunked store: each rank reads its rows and streams candidates
        from clews_pipe.embeddings.zarr_format import write_embeddings_store

        emb_file = write_embeddings_store(tmp_path / "emb.zarr", emb, block=4)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    args = ["evaluate", "--embeddings", str(emb_file), "--accelerator", "cpu", "--tile", "4", "--redux", redux, "--quiet"]
    outs = {1: tmp_path / "d1", 2: tmp_path / "d2"}
    assert main([*args, "--out", str(outs[1])]) == 0
    proc = subprocess.run(
        [sys.executable, "-m", "clews_pipe.cli.app", *args, "--out", str(outs[2]), "--devices", "2"],
        capture_output=True, text=True, env=env, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    import zarr

    d1 = zarr.open_group(str(outs[1] / "distances.zarr"), mode="r")["distances"][:]
    d2 = zarr.open_group(str(outs[2] / "distances.zarr"), mode="r")["distances"][:]
    np.testing.assert_allclose(d1, d2, rtol=1e-6)
    m1 = json.loads((outs[1] / "metrics.json").read_text())
    m2 = json.loads((outs[2] / "metrics.json").read_text())
    p1, p2 = m1.pop("provenance"), m2.pop("provenance")
    assert m1 == m2
    assert (p1["world_size"], p2["world_size"]) == (1, 2)
    assert {k: v for k, v in p1.items() if k not in ("world_size", "created")} == {
        k: v for k, v in p2.items() if k not in ("world_size", "created")}


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--redux", "median"], "unknown reduction"),
        (["--redux", "bpwr-0"], "r must be >= 1"),
        (["--level", "bar"], "--level"),
        (["--level", "segment", "--taus", "5"], "zq_<tau>"),
        (["--level", "segment", "--export-wealy", "x.pkl"], "--export-wealy"),
    ],
)
def test_bad_arguments(tmp_path, capsys, args, needle):
    emb_file = tmp_path / "emb.npz"
    make_embeddings(emb_file)
    code = main(["evaluate", "--embeddings", str(emb_file), "--out", str(tmp_path / "o"), "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_bad_embeddings_files(tmp_path, capsys):
    emb = make_embeddings(tmp_path / "ok.npz")
    bad_nan = emb.z.copy()
    bad_nan[2, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", z=bad_nan, mask=emb.mask, clique=emb.clique, track=emb.track)
    np.savez(tmp_path / "shape.npz", z=emb.z, mask=emb.mask[:, :2], clique=emb.clique, track=emb.track)
    for name, needle in (("nan.npz", "NaN"), ("shape.npz", "mask shape"), ("missing.npz", "not found")):
        code = main(["evaluate", "--embeddings", str(tmp_path / name), "--out", str(tmp_path / "o"), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and needle in err, err
    assert load_embeddings(tmp_path / "ok.npz").n_tracks == 19


def test_fuse_rejects_different_tracks(tmp_path, capsys):
    make_embeddings(tmp_path / "a.npz")
    make_embeddings(tmp_path / "b.npz", n_cliques=5)
    for name in ("a", "b"):
        assert main(["evaluate", "--embeddings", str(tmp_path / f"{name}.npz"), "--out", str(tmp_path / name), "--quiet", "--redux", "min"]) == 0
    code = main(["fuse", str(tmp_path / "a" / "distances.zarr"), str(tmp_path / "b" / "distances.zarr"), "--out", str(tmp_path / "f.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "tracks differ" in err


def _tiny_checkpoint_and_store(tmp_path, store_params=None):
    import torch

    from clews_pipe.features.cqt_params import CQTParams
    from clews_pipe.store import create_store
    from clews_pipe.model.checkpoint import save_checkpoint
    from clews_pipe.model.run_config import load_train_config, to_plain_dict
    from clews_pipe.model.network import CLEWS

    from omegaconf import OmegaConf

    conf = load_train_config(base=OmegaConf.to_container(OmegaConf.load("configs/tiny-cpu.yaml")))
    torch.manual_seed(0)
    model = CLEWS(conf.model, samplerate=16000).eval()
    ckpt = tmp_path / "tiny.ckpt"
    save_checkpoint(ckpt, {"model": model.state_dict(), "config": to_plain_dict(conf), "epoch": 0})
    rng = np.random.default_rng(0)
    writer = create_store(tmp_path / "store", cqt_params=store_params or CQTParams().to_dict())
    lengths = [150, 260, 420, 90, 300]  # frames (10/s): one shorter than a 20 s shingle
    cliques = ["C1", "C1", "C2", "C2", "C3"]
    records, feats = [], []
    for i, (n, c) in enumerate(zip(lengths, cliques)):
        records.append({"track_id": f"tr{i}", "clique": c, "version": f"V{i}", "split": "test", "status": "ok",
                        "duration": n / 10.0})
        feats.append(rng.random((n, 84)).astype(np.float16))
    writer.write_part("p0", records, feats)
    writer.consolidate()
    return ckpt, tmp_path / "store", model, feats


def test_checkpoint_and_store_path(tmp_path):
    import torch

    from clews_pipe.embeddings.from_store import cut_windows

    ckpt, store, model, feats = _tiny_checkpoint_and_store(tmp_path)
    out = tmp_path / "out"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--store", str(store), "--out", str(out), "--quiet",
                 "--level", "segment", "--taus", "5,20", "--protocol", "clews-pipe"]) == 0
    emb = read_embeddings(out / "embeddings.zarr")  # written in place by the ranks, chunked
    assert not (out / "embeddings.npz").exists() and not list(out.glob("embeddings.rank*"))  # no shards, no merge
    assert emb.track.tolist() == [f"tr{i}" for i in range(5)]
    assert emb.clique.tolist() == [0, 0, 1, 1, 2]
    # track 2: 420 frames -> shingles of 200 every 50: starts 0..250 (last repeat-padded) = 6 shingles
    assert (~emb.mask).sum(1).tolist() == [1, 3, 6, 1, 3]
    # independent check of one track's shingle embeddings: slice frames by hand, run the model
    frames = feats[2].astype(np.float32)
    by_hand = np.stack([np.take(frames, np.arange(s, s + 200) % 420, axis=0).T for s in range(0, 300, 50)])
    with torch.no_grad():
        want = model.embed(torch.from_numpy(by_hand)[None])[0].numpy()
    assert emb.z.dtype == np.float16  # stored in half precision, as the published evaluation does
    np.testing.assert_allclose(emb.z[2, :6].astype(np.float32), want, rtol=2e-3, atol=2e-3 * np.abs(want).max())
    # 5 s queries are 50-frame windows repeated to the model's 200-frame shingle
    short = cut_windows(frames, 50, 50, 200)
    assert short.shape == (9, 84, 200)  # starts 0..400; the last runs past 420 and wraps around
    np.testing.assert_array_equal(short[8], np.take(frames, (400 + np.arange(200) % 50) % 420, axis=0).T)
    assert set(emb.queries) == {5.0, 20.0}
    result = json.loads((out / "metrics.json").read_text())
    assert [r["tau"] for r in result["per_tau"]] == [5.0, 20.0] and result["per_tau"][0]["skipped"] == 1


def test_checkpoint_store_cqt_mismatch(tmp_path, capsys):
    from clews_pipe.features.cqt_params import CQTParams

    params = CQTParams().to_dict()
    params["fscale"] = 2.0
    ckpt, store, _, _ = _tiny_checkpoint_and_store(tmp_path, store_params=params)
    code = main(["evaluate", "--checkpoint", str(ckpt), "--store", str(store), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "fscale" in err and "differs" in err, err


def test_checkpoint_eval_section_gives_the_defaults(tmp_path):
    """eval.maxlen / shingle_hop / redux of the checkpoint's config are what evaluate uses unless the
    command line says otherwise (they used to be validated and read by nothing)."""
    import torch

    from clews_pipe.evaluation.job import EvaluateJob, eval_defaults
    from clews_pipe.retrieval.redux import Redux

    ckpt, store, _, _ = _tiny_checkpoint_and_store(tmp_path)
    payload = torch.load(ckpt, weights_only=True)
    payload["config"]["eval"].update(maxlen=30.0, shingle_hop=10.0, redux="meanmin")
    torch.save(payload, ckpt)
    assert eval_defaults(ckpt).maxlen == 30.0 and eval_defaults(ckpt).redux == Redux("meanmin")
    job = EvaluateJob.resolve(checkpoint=ckpt, store=store, out=tmp_path / "o", split="test", level="track")
    assert (job.maxlen, job.cshop, job.qshop, job.redux) == (30.0, 10.0, 10.0, Redux("meanmin"))
    forced = EvaluateJob.resolve(checkpoint=ckpt, store=store, out=tmp_path / "o", split="test", level="track",
                                 maxlen=60.0, redux="min")
    assert (forced.maxlen, forced.redux) == (60.0, Redux("min"))
    out = tmp_path / "out"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--store", str(store), "--out", str(out), "--quiet",
                 "--protocol", "clews-pipe"]) == 0
    emb = read_embeddings(out / "embeddings.zarr")
    # 30 s = 300 frames at most; shingles of 200 frames every 100: track 2 (420 frames) -> starts 0, 100
    assert (~emb.mask).sum(1).tolist() == [1, 2, 2, 1, 2]
    assert json.loads((out / "metrics.json").read_text())["redux"] == "meanmin"
    # the published protocol: at most int((30 - 20) / 10) = 1 shingle, the 1-version clique C3 dropped
    published = tmp_path / "published"
    assert main(["evaluate", "--checkpoint", str(ckpt), "--store", str(store), "--out", str(published), "--quiet"]) == 0
    assert (~read_embeddings(published / "embeddings.zarr").mask).sum(1).tolist() == [1, 1, 1, 1]
