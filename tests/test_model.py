"""CLEWS model: official module tree, published outputs on the fixture, parameter count, configs."""

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from clews_pipe.errors import ClewsError
from clews_pipe.model.run_config import load_train_config
from clews_pipe.model.layers import (GeM, IBN, key_normalise, mid_channels, profile_pitch_class, scale_pitch_class,
                                     scale_triad_pitch_class)
from clews_pipe.model.network import CLEWS, count_parameters, shingle

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def official_model(official_tiny):
    FIXTURE = official_tiny
    conf = OmegaConf.load(FIXTURE / "configuration.yaml")
    model = CLEWS(conf.model, samplerate=conf.data.samplerate)
    payload = torch.load(FIXTURE / "checkpoint_best.ckpt", map_location="cpu", weights_only=False)
    model.load_state_dict(payload["model"], strict=True)  # raises on any missing/unexpected/mis-shaped key
    return model.eval()


def test_prepare_matches_published(official_tiny, official_model):
    FIXTURE = official_tiny
    wave = torch.from_numpy(np.load(FIXTURE / "waveform16k.npy")).reshape(1, -1)
    expected = np.load(FIXTURE / "prepared.npy")
    got = official_model.prepare(wave, shingle_len=20, shingle_hop=5)[0].numpy()
    assert got.shape == expected.shape == (7, 84, 200)
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def test_embedding_matches_published(official_tiny, official_model):
    FIXTURE = official_tiny
    prepared = torch.from_numpy(np.load(FIXTURE / "prepared.npy"))[None]
    expected = np.load(FIXTURE / "embedding.npy")
    with torch.no_grad():
        got = official_model.embed(prepared)[0].numpy()
    assert got.shape == expected.shape == (7, 48)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    # the waveform path gives the same embeddings
    wave = torch.from_numpy(np.load(FIXTURE / "waveform16k.npy")).reshape(1, -1)
    with torch.no_grad():
        via_wave = official_model.embed(official_model.prepare(wave, 20, 5))[0].numpy()
    assert np.abs(via_wave - expected).max() <= 1e-4 * np.abs(expected).max()


def test_shingling_by_hand():
    # 10 samples, windows of 4 every 3: ceil((10-4)/3)=2 hops → padded to 10 → starts 0,3,6
    wave = torch.arange(10.0)[None]
    got = shingle(wave, 4, 3)
    assert got[0].tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    # 11 samples: 3 hops → padded to 13 by repeating the start
    got = shingle(torch.arange(11.0)[None], 4, 3)
    assert got[0, -1].tolist() == [9, 10, 0, 1]
    # shorter than one window: repeated
    assert shingle(torch.arange(3.0)[None], 7, 7)[0].tolist() == [[0, 1, 2, 0, 1, 2, 0]]


def test_short_shingles_are_repeated_to_training_length():
    conf = load_train_config(CONFIGS / "tiny-cpu.yaml").model
    model = CLEWS(conf)
    wave = torch.randn(2, 16000 * 12, generator=torch.Generator().manual_seed(0))
    x = model.prepare(wave, shingle_len=5, shingle_hop=5)
    assert x.shape[:3] == (2, 3, 84)  # 12 s → 5 s windows at 0, 5, 10 (last one repeat-padded)
    assert x.shape[-1] == model.shingle_frames(20) == 200  # each 5 s window repeated ×4 → 20 s
    assert model.shingle_frames(150) == 1500


def test_gem_and_ibn_by_hand():
    gem = GeM()
    assert torch.allclose(gem.exponent, torch.tensor(3.0))
    h = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    expected = ((1 + 8 + 27 + 64) / 4) ** (1 / 3)
    assert torch.allclose(gem(h), torch.tensor([[expected]]))
    ibn = IBN(4).train()
    x = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(1)) * 3 + 2
    y = ibn(x)
    # second half: each (sample, channel) map normalised on its own
    inst = (x[:, 2:] - x[:, 2:].mean((2, 3), keepdim=True)) / (x[:, 2:].var((2, 3), unbiased=False, keepdim=True) + 1e-5).sqrt()
    assert torch.allclose(y[:, 2:], inst, atol=1e-5)
    # first half: normalised with the batch statistics per channel
    bn = (x[:, :2] - x[:, :2].mean((0, 2, 3), keepdim=True)) / (x[:, :2].var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5).sqrt()
    assert torch.allclose(y[:, :2], bn, atol=1e-5)
    assert mid_channels(256, 512) == 256 and mid_channels(32, 48) == 24 and mid_channels(6, 6) == 4


def test_shs_config_size_and_official_key_names():
    conf = load_train_config(CONFIGS / "shs-clews.yaml")
    with torch.device("meta"):
        model = CLEWS(conf.model, samplerate=conf.data.samplerate)
    n = count_parameters(model)
    assert abs(n - 199e6) <= 0.01 * 199e6
    keys = model.state_dict().keys()
    for key in (
        "cqt.0.cqt_kernels_real", "cqt.0.cqt_kernels_imag", "frontend.0.gain", "frontend.0.bias",
        "frontend.1.weight", "frontend.2.running_var", "frontend.4.weight", "backbone.0.gain",
        "backbone.0.convs.0.bn.weight", "backbone.0.convs.0.inst.bias", "backbone.0.convs.2.conv.weight",
        "backbone.0.convs.5.conv.weight", "backbone.3.skip.2.conv.weight", "backbone.15.convs.5.conv.weight",
        "pool.p", "proj.0.running_mean", "proj.1.weight",
    ):
        assert key in keys, key
    assert "backbone.16.gain" not in keys  # 3+4+6+3 = 16 blocks
    sd = model.state_dict()
    assert tuple(sd["proj.1.weight"].shape) == (2048, 2048) and tuple(sd["pool.p"].shape) == (1, 1, 1)
    assert tuple(sd["frontend.4.weight"].shape) == (256, 128, 12, 3)
    dvi = load_train_config(CONFIGS / "dvi-clews.yaml")
    assert dvi.model.zdim == 1024 and dvi.training.monitor == "nar_map" and dvi.eval.maxlen == 300
    assert conf.training.monitor == "map" and conf.augment.pitchroll.p == 0.5


def test_tiny_model_trains_a_step():
    conf = load_train_config(CONFIGS / "tiny-cpu.yaml")
    torch.manual_seed(0)
    model = CLEWS(conf.model).train()
    x = torch.rand(4, 2, 84, 200)
    z = model.embed(x)
    assert z.shape == (4, 2, conf.model.zdim)
    z.pow(2).mean().backward()
    assert model.proj[1].weight.grad is not None and torch.isfinite(model.proj[1].weight.grad).all()
    assert model.frontend[0].gain.grad is not None


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["model.zdmi=3"], "model.zdmi"),
        (["training.monitor=loss"], "training.monitor"),
        (["model.loss.redux.pos=bpwr-0"], "model.loss.redux.pos"),
        (["augment.specaugment.p=2"], "augment.specaugment.p"),
        (["model.backbone.blocks=[1,1]"], "model.backbone"),
        (["training.lr=fast"], "training.lr"),
        (["model.frontend.keynorm_by=energy"], "model.frontend.keynorm_by"),
    ],
)
def test_bad_train_config_is_one_line(overrides, needle):
    with pytest.raises(ClewsError) as err:
        load_train_config(CONFIGS / "tiny-cpu.yaml", overrides)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg


def test_key_normalise_by_hand():
    """Two octaves of 12 bins: class 5 moves down 5 bins, class 9 up 3 (the shorter way), and the
    vacated bins are 0."""
    h = torch.zeros(2, 1, 24, 2)
    h[0, 0, 5, :] = 1.0
    h[0, 0, 17, 0] = 0.5
    h[1, 0, 9, :] = 1.0
    h[1, 0, 22, 1] = 0.25  # class 10: weaker, does not decide
    out = key_normalise(h, 12)
    want = torch.zeros(2, 1, 24, 2)
    want[0, 0, 0, :] = 1.0
    want[0, 0, 12, 0] = 0.5
    want[1, 0, 12, :] = 1.0
    # bin 22 + 3 = 25 is off the top: dropped
    assert torch.equal(out, want)


def _segment_and_transpositions(low: int = 24) -> torch.Tensor:
    """(1, 12, 84, 60): random content in bins low..low+35 and its copies moved up 1..11 bins."""
    torch.manual_seed(0)
    x = torch.zeros(1, 1, 84, 60)
    x[0, 0, low:low + 36] = torch.rand(36, 60)
    return torch.cat([torch.roll(x, k, dims=2) for k in range(12)], dim=1)


@pytest.mark.parametrize("by, low", [("profile", 24), ("scale", 36), ("scale-triad", 36)])  # scale: content from octave 3 up
def test_key_normalised_transpositions_agree_up_to_an_octave(by, low):
    out = key_normalise(_segment_and_transpositions(low).reshape(12, 1, 84, 60), 12, by)
    for k in range(12):
        assert any(torch.equal(out[k], torch.roll(out[0], octave, dims=1)) for octave in (-12, 0, 12)), k


@pytest.mark.parametrize("by, low", [("profile", 24), ("scale", 36), ("scale-triad", 36)])
def test_key_normalised_model_embeds_a_transposition_alike(by, low):
    """A segment moved up one bin lands on the same normalised input, so with ``frontend.keynorm``
    the two embed identically; without it they do not."""
    conf = load_train_config(CONFIGS / "small-cpu.yaml").model
    conf.frontend.keynorm_by = by
    pair = _segment_and_transpositions(low)[:, :2]
    for keynorm in (True, False):
        conf.frontend.keynorm = keynorm
        model = CLEWS(conf).eval()
        with torch.no_grad():
            z = model.embed(pair, noise=torch.zeros_like(pair))[0]
        assert torch.equal(z[0], z[1]) is keynorm


def test_scale_key_by_hand():
    """Seven frames whose strongest upper notes spell G major (G A B C D E F#, bins 43..54) over a
    louder bass D (bin 14, below octave 3): the profile estimate picks the bass's class 2, the scale
    estimate G (7 votes for the G major scale, 6 at most for any other), and normalising by scale
    moves everything up 5 bins (G, class 7, to class 0 the shorter way), the lowest 5 bins 0."""
    h = torch.zeros(1, 1, 84, 7)
    for frame, bin_ in enumerate((43, 45, 47, 48, 50, 52, 54)):
        h[0, 0, bin_, frame] = 1.0
        h[0, 0, bin_ - 12, frame] = 0.5  # an octave lower and weaker: below octave 3, no vote
    h[0, 0, 14, :] = 2.0
    assert int(profile_pitch_class(h, 12)) == 2
    assert int(scale_pitch_class(h, 12)) == 7
    out = key_normalise(h, 12, "scale")
    want = torch.zeros_like(h)
    want[:, :, 5:, :] = h[:, :, :-5, :]
    assert torch.equal(out, want) and out[0, 0, 48, 0] == 1.0


def test_scale_triad_key_by_hand():
    """Nine frames of a G major pentatonic tune, G B D G A E B D G (bins 43..52, octave 3 and up):
    it fits the C, G and D major scales alike (9 votes each), so ``scale`` takes the first, C (0).
    The tonic triads break the tie: G-B-D holds 7 votes, C-E-G (or A-C-E) 4, D-F#-A (or B-D-F#) 4,
    so ``scale-triad`` gives 9 + 0.5 * 7 = 12.5 for G against 11 for C and D: 7."""
    h = torch.zeros(1, 1, 84, 9)
    for frame, bin_ in enumerate((43, 47, 50, 43, 45, 52, 47, 50, 43)):
        h[0, 0, bin_, frame] = 1.0
    assert int(scale_pitch_class(h, 12)) == 0
    assert int(scale_triad_pitch_class(h, 12)) == 7
    out = key_normalise(h, 12, "scale-triad")
    want = torch.zeros_like(h)
    want[:, :, 5:, :] = h[:, :, :-5, :]  # G (7) to 0 the shorter way: up 5 bins
    assert torch.equal(out, want)


def test_from_octave_feeds_the_network_the_upper_octaves_of_the_whole_prepared_segment():
    """``frontend.from_octave: 2`` gives the network bins 24.. of what the full preparation (min-max
    over all 84 bins, key shift) produces, and the first convolution sees 60 bins, not 84."""
    from clews_pipe.model.layers import CQTPrepare

    torch.manual_seed(0)
    h = torch.rand(3, 1, 84, 50)
    full = CQTPrepare(noise=0.0, key_bins=12, key_by="scale")(h)
    upper = CQTPrepare(noise=0.0, key_bins=12, key_by="scale", first_bin=24)(h)
    assert torch.equal(upper, full[:, :, 24:, :])
    conf = load_train_config(CONFIGS / "small-cpu.yaml").model
    conf.frontend.from_octave = 2
    model = CLEWS(conf).eval()
    seen = []
    model.frontend[1].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[2]))
    with torch.no_grad():
        z = model.embed(torch.rand(1, 2, 84, 200))
    assert seen == [60] and z.shape == (1, 2, conf.zdim)


@pytest.mark.parametrize("value", [-1, 5])
def test_from_octave_outside_the_cqt_is_one_line(tmp_path, value):
    path = tmp_path / "c.yaml"
    path.write_text((CONFIGS / "small-cpu.yaml").read_text())
    with pytest.raises(ClewsError, match="model.frontend.from_octave"):
        load_train_config(path, [f"model.frontend.from_octave={value}"])
