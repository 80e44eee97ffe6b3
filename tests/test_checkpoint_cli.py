"""``clews-pipe checkpoint import``: published fixture → our format, strict loading, safe-set refusal."""

import fractions
from pathlib import Path

import torch

from clews_pipe.cli.app import main
from clews_pipe.model.checkpoint import OFFICIAL_SAFE_GLOBALS, load_model
from clews_pipe.model.network import CLEWS



def test_import_through_cli_loads_strictly_without_trust(official_tiny, tmp_path, capsys):
    OFFICIAL = official_tiny / "checkpoint_best.ckpt"
    CONFIG = official_tiny / "configuration.yaml"
    out = tmp_path / "ours.ckpt"
    assert main(["checkpoint", "import", str(OFFICIAL), "--config", str(CONFIG), "--out", str(out)]) == 0
    assert "zdim 48" in capsys.readouterr().out
    # plain torch weights-only load, with no extra safe globals: nothing but tensors and containers
    payload = torch.load(out, map_location="cpu", weights_only=True)
    assert payload["config"]["model"]["zdim"] == 48 and payload["config"]["data"]["samplerate"] == 16000
    model = CLEWS(payload["config"]["model"], samplerate=payload["config"]["data"]["samplerate"])
    model.load_state_dict(payload["model"], strict=True)
    # same tensors as the published file
    with torch.serialization.safe_globals(OFFICIAL_SAFE_GLOBALS):
        official = torch.load(OFFICIAL, map_location="cpu", weights_only=True)["model"]
    assert set(official) == set(payload["model"])
    assert all(torch.equal(official[k], payload["model"][k]) for k in official)
    # and the library loader takes it (the path every other command uses)
    loaded, conf = load_model(out)
    assert conf.model.shingling.len == 20 and not loaded.training


def test_import_without_config_uses_checkpoint_conf(official_tiny, tmp_path):
    OFFICIAL = official_tiny / "checkpoint_best.ckpt"
    out = tmp_path / "ours.ckpt"
    assert main(["checkpoint", "import", str(OFFICIAL), "--out", str(out)]) == 0
    assert torch.load(out, weights_only=True)["config"]["model"]["zdim"] == 48


def _official_with_extra(tmp_path, OFFICIAL) -> Path:
    with torch.serialization.safe_globals(OFFICIAL_SAFE_GLOBALS):
        payload = torch.load(OFFICIAL, map_location="cpu", weights_only=True)
    payload["extra"] = fractions.Fraction(1, 3)  # a class outside the safe set
    path = tmp_path / "odd.ckpt"
    torch.save(payload, path)
    return path


def test_class_outside_safe_set_needs_trust(official_tiny, tmp_path, capsys):
    OFFICIAL = official_tiny / "checkpoint_best.ckpt"
    CONFIG = official_tiny / "configuration.yaml"
    odd = _official_with_extra(tmp_path, OFFICIAL)
    out = tmp_path / "ours.ckpt"
    code = main(["checkpoint", "import", str(odd), "--config", str(CONFIG), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and not out.exists()
    assert err.count("\n") == 0 and err.startswith("error: ")
    assert "--trust-checkpoint" in err and "fractions.Fraction" in err and str(odd) in err
    assert main(["checkpoint", "import", str(odd), "--config", str(CONFIG), "--out", str(out), "--trust-checkpoint"]) == 0
    assert out.is_file()


def test_missing_file_and_mismatched_config(official_tiny, tmp_path, capsys):
    OFFICIAL = official_tiny / "checkpoint_best.ckpt"
    CONFIG = official_tiny / "configuration.yaml"
    assert main(["checkpoint", "import", str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "o.ckpt")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "configuration.yaml"
    bad.write_text(CONFIG.read_text().replace("zdim: 48", "zdim: 64"))
    assert main(["checkpoint", "import", str(OFFICIAL), "--config", str(bad), "--out", str(tmp_path / "o.ckpt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "weights do not fit" in err and "\n" not in err
