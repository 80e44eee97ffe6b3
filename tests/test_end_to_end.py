"""A short end-to-end pipeline through the CLI: corpus → extract → train → evaluate → index → search."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from clews_pipe.cli.app import main

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny-cpu.yaml"


def test_pipeline_end_to_end(demo_corpus, extracted_demo_store, tmp_path, capsys):
    from clews_pipe.store import open_store

    store = open_store(extracted_demo_store)
    assert (store.index["status"] == "ok").all()
    assert set(store.index["split"]) == {"train", "val", "test"}

    run = tmp_path / "run"
    assert main(
        ["train", str(TINY), "--store", str(extracted_demo_store), "--out", str(run),
         "training.epochs=1", "training.batch_size=2", "data.block_len=40", "data.workers=0"]
    ) == 0
    ckpt = run / "checkpoint_best.ckpt"
    assert ckpt.is_file()

    out = tmp_path / "eval"
    assert main(
        ["evaluate", "--checkpoint", str(ckpt), "--store", str(extracted_demo_store), "--split", "test",
         "--redux", "bpwr-10", "--level", "track", "--out", str(out), "--quiet"]
    ) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    test_tracks = store.tracks("test")
    assert metrics["queries"] + metrics["skipped"] == len(test_tracks)
    assert 0.0 < metrics["MAP"] <= 1.0 and metrics["MR1"] >= 1.0 and 0.0 <= metrics["NAR"] <= 100.0
    assert metrics["redux"] == "bpwr-10" and metrics["level"] == "track"

    # The evaluation's embeddings feed the segment index; a test track's own audio finds itself first.
    emb = out / "embeddings.zarr"  # the chunked store the ranks wrote in place
    assert emb.is_dir()
    index = tmp_path / "test.index"
    assert main(["index", "build", str(emb), "--out", str(index)]) == 0
    query_id = str(test_tracks.index[0])
    query_audio = test_tracks.loc[query_id, "path"]
    capsys.readouterr()
    assert main(["search", str(index), query_audio, "--checkpoint", str(ckpt), "--top", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    matches = result["matches"] if isinstance(result, dict) else result
    assert matches[0]["track"] == query_id
    assert np.isfinite(matches[0]["distance"])
