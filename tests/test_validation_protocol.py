"""Validation during training under ``protocol: clews`` is the published ``train.py`` one: shingles
every model hop / 2 over the first block, the model's positive reduction, the per-query monitor
``m_COMP`` (checked against the published numbers) and "plateau_N" patience N − 1."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from clews_pipe.model.run_config import load_train_config
from clews_pipe.retrieval.metrics import query_metrics, self_columns
from clews_pipe.retrieval.tiles import tile_distances
from clews_pipe.training.loop import monitor_value
from clews_pipe.training.validate import query_sums, validation_data_conf, validation_redux


def _conf(*overrides):
    return load_train_config("configs/dvi-clews.yaml", list(overrides))


def test_published_validation_settings():
    conf = _conf()
    assert conf.protocol == "clews"
    assert validation_data_conf(conf).shingle_hop == 10.0  # train.py: model hop 20 s / 2
    assert validation_redux(conf) == "bpwr-5"  # the model's positive reduction, not eval.redux (bpwr-10)
    pipe = _conf("protocol=clews-pipe")
    assert validation_data_conf(pipe).shingle_hop == 20.0 and validation_redux(pipe) == "bpwr-10"
    from clews_pipe.errors import ClewsError

    with pytest.raises(ClewsError, match="protocol"):
        _conf("protocol=paper")


def test_validation_blocks_are_shingled_every_10_s(extracted_demo_store):
    from clews_pipe.training.dataset import make_train_loader

    conf = _conf("data.workers=0")
    loader = make_train_loader(extracted_demo_store, validation_data_conf(conf), batch_size=2, seed=0, workers=0,
                               split="val", shuffle=False, drop_last=False)
    x, _, _ = next(iter(loader))
    # 150 s block, 20 s shingles every 10 s: ceil((150 - 20) / 10) + 1 = 14 shingles (published: 14)
    assert x.shape[1:] == (14, 84, 200)
    train_like = make_train_loader(extracted_demo_store, conf.data, batch_size=2, seed=0, workers=0, split="val",
                                   shuffle=False, drop_last=False)
    assert next(iter(train_like))[0].shape[1] == 8


def test_validation_monitor_matches_published_m_comp(official_eval):
    """validate()'s per-query sums on the fixture (queries = candidates = every track, own entry
    excluded, as train.py's valid_loop) give the published m_COMP, MAP and ARP to 1e-6."""
    emb = np.load(official_eval / "embeddings.npz")
    summary = json.loads((official_eval / "reference_summary.json").read_text())
    z, mask = torch.from_numpy(emb["z"]), torch.from_numpy(emb["mask"])
    track, clique = emb["track"].astype(str), emb["clique"]
    for redux in ("bpwr-5", "bpwr-10", "min", "meanmin", "best-5"):
        dist = tile_distances(z, mask, z, mask, redux, memory_mb=64.0)
        per_query = query_metrics(dist, clique, clique, self_columns(track, track))
        # two "ranks" of 100 queries each, summed as validate() all-reduces them
        halves = [query_metrics(dist[s], clique[s], clique, self_columns(track[s], track)) for s in (slice(0, 100), slice(100, 200))]
        sums = np.add(*[np.asarray(query_sums(h)) for h in halves])
        assert np.allclose(sums, query_sums(per_query))
        n = sums[4]
        assert n == 200
        assert sums[0] / n == pytest.approx(summary[redux]["MAP"], abs=1e-6)
        assert sums[2] / n == pytest.approx(summary[redux]["ARP"], abs=1e-5)
        m_comp = sums[3] / n
        assert m_comp == pytest.approx(summary[redux]["m_COMP"], abs=1e-6)
        assert monitor_value("nar_map", sums[0] / n, sums[1] / n, m_comp) == m_comp
    # the clews-pipe monitor is a different number: sqrt of the product of the means
    pooled = monitor_value("nar_map", summary["bpwr-5"]["MAP"], summary["bpwr-5"]["ARP"])
    assert abs(pooled - summary["bpwr-5"]["m_COMP"]) > 0.1


def test_plateau_patience_is_published_in_a_real_run(extracted_demo_store, tmp_path):
    from clews_pipe.cli.app import main

    quick = ["training.batch_size=2", "data.block_len=40", "data.workers=0", "training.epochs=1", "fabric.devices=1"]
    for protocol, patience in (("clews", 4), ("clews-pipe", 5)):  # tiny-cpu: plateau_patience 5
        run = tmp_path / protocol
        assert main(["train", "configs/tiny-cpu.yaml", "--store", str(extracted_demo_store), "--out", str(run),
                     *quick, f"protocol={protocol}"]) == 0
        state = torch.load(run / "checkpoint_last.ckpt", weights_only=True)
        assert state["scheduler"]["patience"] == patience
        row = (run / "metrics.csv").read_text().splitlines()
        header = row[0].split(",")
        values = dict(zip(header, row[1].split(",")))
        assert np.isfinite(float(values["val_monitor"]))
        assert OmegaConf.create(state["config"]).protocol == protocol


def test_cosine_schedule_decays_lr_per_epoch_whatever_validation_says(extracted_demo_store, tmp_path):
    """training.schedule=cosine: epoch e (0-based) of E trains at min + (lr - min)(1 + cos(pi e / E)) / 2."""
    import csv
    import math

    from clews_pipe.cli.app import main

    run = tmp_path / "cos"
    assert main(["train", "configs/tiny-cpu.yaml", "--store", str(extracted_demo_store), "--out", str(run),
                 "training.batch_size=2", "data.block_len=40", "data.workers=0", "training.epochs=3",
                 "fabric.devices=1", "training.schedule=cosine", "training.lr=0.01", "training.min_lr=0.001"]) == 0
    with open(run / "metrics.csv") as f:
        lrs = [float(row["lr"]) for row in csv.DictReader(f)]
    expected = [0.001 + 0.009 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]  # 0.01, 0.00775, 0.00325
    assert lrs == pytest.approx(expected, rel=1e-9)


def test_unknown_schedule_is_one_line(extracted_demo_store, tmp_path, capsys):
    from clews_pipe.cli.app import main

    assert main(["train", "configs/tiny-cpu.yaml", "--store", str(extracted_demo_store), "--out", str(tmp_path / "r"),
                 "training.schedule=linear"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training.schedule" in err[0] and "Traceback" not in err[0]
