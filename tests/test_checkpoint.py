"""Checkpoints: safe loading of published files, refusal of unknown classes, import, atomic save."""

import fractions

import numpy as np
import pytest
import torch
from omegaconf import DictConfig

from clews_pipe.errors import ClewsError
from clews_pipe.model.checkpoint import import_official, load_checkpoint, load_model, save_checkpoint



def test_official_checkpoint_needs_our_safe_set(official_tiny):
    OFFICIAL = official_tiny / "checkpoint_best.ckpt"
    with pytest.raises(Exception):
        torch.load(OFFICIAL, map_location="cpu", weights_only=True)
    payload = load_checkpoint(OFFICIAL)
    assert set(payload) >= {"model", "optim", "sched", "conf", "epoch"}
    assert isinstance(payload["conf"], DictConfig) and payload["conf"].model.zdim == 48
    assert tuple(payload["model"]["proj.1.weight"].shape) == (48, 128)


def test_extra_class_is_refused_without_trust(tmp_path):
    path = tmp_path / "odd.ckpt"
    torch.save({"model": {"w": torch.zeros(2)}, "extra": fractions.Fraction(1, 3)}, path)
    with pytest.raises(ClewsError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "--trust-checkpoint" in msg and "fractions.Fraction" in msg and "\n" not in msg
    assert load_checkpoint(path, trust=True)["extra"] == fractions.Fraction(1, 3)


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(ClewsError, match="not found"):
        load_checkpoint(tmp_path / "nope.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(ClewsError) as err:
        load_checkpoint(junk)
    assert str(junk) in str(err.value) and "\n" not in str(err.value)
    not_ours = tmp_path / "list.ckpt"
    torch.save([1, 2, 3], not_ours)
    with pytest.raises(ClewsError, match="not a CLEWS checkpoint"):
        load_checkpoint(not_ours)


def test_save_is_atomic_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "run" / "last.ckpt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "epoch": 1})
    with pytest.raises(Exception):
        save_checkpoint(path, {"model": {}, "bad": lambda x: x})  # unpicklable: the old file survives
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "epoch": 2})
    assert torch.load(path, weights_only=True)["epoch"] == 2


def test_import_official_and_load_model(official_tiny, tmp_path):
    FIXTURE = official_tiny
    OFFICIAL = official_tiny / "checkpoint_best.ckpt"
    out = tmp_path / "imported.ckpt"
    import_official(OFFICIAL, FIXTURE / "configuration.yaml", out)
    payload = torch.load(out, map_location="cpu", weights_only=True)  # plain weights-only: no OmegaConf inside
    assert payload["epoch"] == 3 and isinstance(payload["config"], dict)
    assert payload["config"]["model"]["zdim"] == 48 and payload["config"]["model"]["backbone"]["blocks"] == [2, 1, 2, 1]
    assert payload["config"]["training"]["lr"] == pytest.approx(2e-4)  # defaults fill the rest

    expected = np.load(FIXTURE / "embedding.npy")
    prepared = torch.from_numpy(np.load(FIXTURE / "prepared.npy"))[None]
    for source in (out, OFFICIAL):  # ours and the published file directly
        model, conf = load_model(source)
        assert not model.training and conf.model.zdim == 48
        with torch.no_grad():
            got = model.embed(prepared)[0].numpy()
        assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_weights_that_do_not_fit_the_config(official_tiny, tmp_path):
    FIXTURE = official_tiny
    OFFICIAL = official_tiny / "checkpoint_best.ckpt"
    payload = load_checkpoint(OFFICIAL)
    conf_path = tmp_path / "configuration.yaml"
    conf_path.write_text((FIXTURE / "configuration.yaml").read_text().replace("zdim: 48", "zdim: 64"))
    with pytest.raises(ClewsError) as err:
        import_official(OFFICIAL, conf_path, tmp_path / "x.ckpt")
    assert "proj.1.weight" in str(err.value) and "\n" not in str(err.value)
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text((FIXTURE / "configuration.yaml").read_text().replace("zdim: 48", "zdim: 48\n  zdimm: 3"))
    with pytest.raises(ClewsError, match="zdimm"):
        import_official(OFFICIAL, bad_key, tmp_path / "y.ckpt")
    assert payload["epoch"] == 3
