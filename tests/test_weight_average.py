"""training.ema_decay: the running average of the weights, checked against a hand-written loop and
in real training runs (it must not change training, and a resume must continue it exactly)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clews_pipe.cli.app import main
from clews_pipe.training.weight_average import checkpoint_entries, evaluated_network, make_average, restore

QUICK = ["training.batch_size=2", "data.block_len=40", "data.workers=0", "fabric.devices=1"]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def test_average_follows_the_hand_written_recurrence_for_weights_and_batchnorm_statistics():
    net, decay = _net(), 0.9
    average = make_average(net, decay, "cpu")
    expected = None
    for step in range(5):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net.train()
        net(torch.randn(8, 3))  # moves the BatchNorm running statistics
        average.update_parameters(net)
        now = {k: v.clone() for k, v in net.state_dict().items() if v.is_floating_point()}
        if expected is None:
            expected = now  # the first update copies
        else:
            expected = {k: decay * expected[k] + (1 - decay) * now[k] for k in now}
    got = average.module.state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-6, atol=1e-6)
    assert "1.running_mean" in expected and int(average.n_averaged) == 5


def test_off_means_the_trained_network_and_plain_checkpoints():
    net = _net()
    assert make_average(net, 0.0, "cpu") is None
    assert evaluated_network(net, None) is net
    assert set(checkpoint_entries(net.state_dict(), None)) == {"model"}


def test_restore_puts_back_both_networks_and_the_step_count():
    net, other = _net(), nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    average = make_average(net, 0.5, "cpu")
    average.update_parameters(net)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    average.update_parameters(net)
    state = checkpoint_entries({k: v.clone() for k, v in net.state_dict().items()}, average)
    again = make_average(other, 0.5, "cpu")
    restore(other, again, state)
    torch.testing.assert_close(other[0].weight, net[0].weight)
    torch.testing.assert_close(again.module[0].weight, average.module[0].weight)
    assert int(again.n_averaged) == 2
    torch.testing.assert_close(again.module[0].weight, net[0].weight - 0.5)  # halfway between the two


def _weights(path):
    return torch.load(path, weights_only=True)


def test_training_with_an_average_trains_the_same_weights_and_resumes_exactly(extracted_demo_store, tmp_path):
    base = ["train", "configs/tiny-cpu.yaml", "--store", str(extracted_demo_store), *QUICK]
    plain, straight, resumed = tmp_path / "plain", tmp_path / "straight", tmp_path / "resumed"
    assert main([*base, "--out", str(plain), "training.epochs=2"]) == 0
    assert main([*base, "--out", str(straight), "training.epochs=2", "training.ema_decay=0.9"]) == 0
    assert main([*base, "--out", str(resumed), "training.epochs=1", "training.ema_decay=0.9"]) == 0
    assert main([*base, "--out", str(resumed), "training.epochs=2", "training.ema_decay=0.9"]) == 0
    without = _weights(plain / "checkpoint_last.ckpt")
    a, b = _weights(straight / "checkpoint_last.ckpt"), _weights(resumed / "checkpoint_last.ckpt")
    for key, value in without["model"].items():  # averaging does not touch what is trained
        assert torch.equal(a["training_model"][key], value), key
    assert a["ema_steps"] == b["ema_steps"] > 1
    for entry in ("model", "training_model"):
        for key in a[entry]:
            assert torch.equal(a[entry][key], b[entry][key]), (entry, key)
    moved = [k for k, v in a["model"].items() if v.is_floating_point() and not torch.equal(v, a["training_model"][k])]
    assert moved  # the average is not the last weights


@pytest.mark.parametrize("value", ["1.0", "-0.1"])
def test_a_decay_outside_zero_one_is_one_line(extracted_demo_store, tmp_path, capsys, value):
    assert main(["train", "configs/tiny-cpu.yaml", "--store", str(extracted_demo_store), "--out", str(tmp_path / "r"),
                 f"training.ema_decay={value}"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training.ema_decay" in err[0] and "Traceback" not in err[0]
