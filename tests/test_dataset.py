"""Memmap shingle dataset + epoch batch sampler, on a small real store of hand-made frames.

Every frame encodes where it came from: bin 0 = track number, bin 1 = frame // 64,
bin 2 = frame % 64 (all exact in float16), so each output frame can be traced back and checked
against an independent computation.
"""

import pickle

import numpy as np
import pytest
import torch

from clews_pipe.errors import ClewsError
from clews_pipe.features.cqt_params import CQTParams
from clews_pipe.training.dataset import (
    EpochBatchSampler,
    ShingleDataset,
    ShingleLayout,
    make_train_loader,
)
from clews_pipe.store import create_store, open_store

# track name -> (clique, n_frames, status); 10 frames/s
TRACKS = {
    "a0": ("CA", 3000, "ok"),
    "a1": ("CA", 8000, "truncated"),  # 800 s: blocks must stay within the first 600 s
    "a2": ("CA", 1500, "ok"),
    "b0": ("CB", 70, "ok"),  # 7 s: repeat-padded
    "b1": ("CB", 2000, "ok"),
    "c0": ("CC", 1600, "ok"),
    "c1": ("CC", 1700, "ok"),
    "c2": ("CC", 1501, "ok"),
    "c3": ("CC", 2500, "ok"),
    "c4": ("CC", 900, "ok"),
    "d0": ("CD", 2000, "ok"),  # only ok track of its clique: dropped
    "d1": ("CD", 0, "failed"),
    "e0": ("CE", 1800, "ok"),
    "e1": ("CE", 1900, "ok"),
    "v0": ("CV", 1800, "ok"),  # val split, single track
}
TRACK_NO = {tid: i + 1 for i, tid in enumerate(TRACKS)}


def frames_of(tid, n):
    f = np.zeros((n, 84), dtype=np.float16)
    idx = np.arange(n)
    f[:, 0] = TRACK_NO[tid]
    f[:, 1] = idx // 64
    f[:, 2] = idx % 64
    f[:, 3:] = 0.5
    return f


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("dsstore") / "store"
    writer = create_store(path, backend="zarr")
    records, feats = [], []
    for tid, (clique, n, status) in TRACKS.items():
        records.append(
            dict(track_id=tid, clique=clique, version=f"V-{tid}", split="val" if tid == "v0" else "train",
                 title="t", artist="a", path=f"/x/{tid}.mp3", duration=n / 10.0, status=status,
                 error="" if status != "failed" else "decode error")
        )
        feats.append(frames_of(tid, n) if status != "failed" else None)
    writer.write_part("p0", records[:7], feats[:7])
    writer.write_part("p1", records[7:], feats[7:])
    writer.consolidate()
    return path


@pytest.fixture(scope="module")
def store(store_path):
    return open_store(store_path)


def decode(x):
    """(…, 84, T) item frames → track numbers and frame indices (…, T)."""
    x = x.float().numpy()
    return x[..., 0, :].astype(int), (x[..., 1, :] * 64 + x[..., 2, :]).astype(int)


def test_layout_frames_from_seconds():
    lay = ShingleLayout.from_seconds(CQTParams(), 150, 20, 20, 600)  # 10 frames/s
    assert (lay.block_frames, lay.shingle_frames, lay.hop_frames, lay.maxlen_frames) == (1500, 200, 200, 6000)
    assert lay.n_shingles == 8
    pos = lay.block_positions()
    assert pos.shape == (8, 200)
    assert list(pos[7, :100]) == list(range(1400, 1500)) and list(pos[7, 100:]) == list(range(100))


def test_items_shapes_and_clique_structure(store):
    ds = ShingleDataset(store, "train", seed=3)
    assert sorted(ds.track_ids) == sorted(t for t in TRACKS if t[0] in "abce")  # d dropped
    by_name = {name: i for i, name in enumerate(ds.clique_names)}
    for anchor in range(len(ds)):
        for epoch in range(3):
            x, clique, track = ds[(epoch, anchor + 5, anchor)]
            assert x.shape == (4, 8, 84, 200) and x.dtype == torch.float16
            assert clique.dtype == torch.int64 and track.dtype == torch.int64
            assert int(track[0]) == anchor
            names = [ds.track_ids[t] for t in track.tolist()]
            want = by_name["C" + names[0][0].upper()]
            assert clique.tolist() == [want] * 4
            assert all(n[0] == names[0][0] for n in names)  # same clique
            assert all(n != names[0] for n in names[1:])  # positives are never the anchor
            tno, _ = decode(x)
            assert all((tno[i] == TRACK_NO[n]).all() for i, n in enumerate(names))


def test_block_offsets_within_maxlen_and_contiguous(store):
    ds = ShingleDataset(store, "train", seed=0)
    a1 = int(np.flatnonzero(ds.track_ids == "a1")[0])
    a0 = int(np.flatnonzero(ds.track_ids == "a0")[0])
    starts = []
    for pos in range(60):
        x, _, track = ds[(0, pos, a1)]
        _, fidx = decode(x[0])
        block = np.concatenate(list(fidx))[:1500]  # shingles 0..6 + first half of 7
        start = block[0]
        assert np.array_equal(block, start + np.arange(1500))
        assert 0 <= start and start + 1500 <= 6000  # first 600 s only, though the track has 800 s
        assert np.array_equal(fidx[7, 100:], start + np.arange(100))  # last shingle repeat-padded
        starts.append(start)
        # positives of a1 (a0: 3000 frames, a2: 1500 frames) also stay within their tracks
        for i, t in enumerate(track.tolist()[1:], start=1):
            n = TRACKS[ds.track_ids[t]][1]
            _, f = decode(x[i])
            assert f.min() >= 0 and f.max() < min(n, 6000)
    assert max(starts) > 3000 and min(starts) < 1500  # spread over the allowed range
    assert a0 >= 0


def test_short_track_repeat_padded(store):
    ds = ShingleDataset(store, "train", seed=1)
    b1 = int(np.flatnonzero(ds.track_ids == "b1")[0])
    x, _, track = ds[(0, 0, b1)]
    assert [ds.track_ids[t] for t in track.tolist()[1:]] == ["b0"] * 3  # clique of two
    rotations = set()
    for i in range(1, 4):
        tno, fidx = decode(x[i])
        assert (tno == TRACK_NO["b0"]).all()
        # hand-worked: the 7 s track is tiled 22 times (1540 frames) and cropped at r in [0, 40];
        # block frame j = track frame (r + j) mod 70; shingle s covers block frames s*200.. (mod 1500)
        r = int(fidx[0, 0])
        assert 0 <= r <= 22 * 70 - 1500
        rotations.add(r)
        for s in range(8):
            for t in range(0, 200, 7):
                assert fidx[s, t] == (r + (s * 200 + t) % 1500) % 70
    values = x[1, 0].float().numpy()
    assert np.all(values[3:] == 0.5)
    more = {int(decode(ds[(0, p, b1)][0][1])[1][0, 0]) for p in range(1, 30)}
    assert len(rotations | more) > 5  # random crop offsets, not always 0


def test_validation_mode_blocks_from_start(store):
    ds = ShingleDataset(store, "train", seed=1, random_blocks=False)
    for anchor in range(len(ds)):
        x, _, _ = ds[(0, anchor, anchor)]
        _, fidx = decode(x[:, 0])
        assert (fidx[:, 0] == 0).all()


def test_same_seed_same_batches_any_worker_count(store_path):
    store = open_store(store_path)
    kw = dict(batch_size=3, seed=11, rank=0, world_size=1)
    conf = {"train_split": "train", "n_per_class": 4}
    runs = []
    for workers in (0, 2):
        loader = make_train_loader(store, conf, workers=workers, **kw)
        loader.batch_sampler.set_epoch(2)
        runs.append([tuple(t.clone() for t in batch) for batch in loader])
    assert len(runs[0]) == len(runs[1]) == 12 // 3
    for (xa, ca, ta), (xb, cb, tb) in zip(*runs):
        assert xa.shape == (12, 8, 84, 200)
        assert torch.equal(xa, xb) and torch.equal(ca, cb) and torch.equal(ta, tb)
    other = make_train_loader(store, conf, workers=0, **kw)
    other.batch_sampler.set_epoch(3)
    assert not all(torch.equal(a[2], b[2]) for a, b in zip(runs[0], other))


def test_dataset_pickles_and_spawn_worker(store_path):
    ds = ShingleDataset(open_store(store_path), "train", seed=5)
    x0 = ds[(1, 2, 3)][0]
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[(1, 2, 3)][0], x0)
    loader = make_train_loader(
        store_path, {"n_per_class": 4}, 2, 5, workers=1, multiprocessing_context="spawn"
    )
    ref = make_train_loader(store_path, {"n_per_class": 4}, 2, 5, workers=0)
    for (xa, _, ta), (xb, _, tb) in zip(loader, ref):
        assert torch.equal(xa, xb) and torch.equal(ta, tb)


@pytest.mark.parametrize("n,bs,world", [(13, 2, 3), (12, 3, 2), (5, 4, 2)])
def test_distributed_sampler_no_duplicates_and_coverage(n, bs, world):
    for drop_last in (True, False):
        per_rank = []
        for rank in range(world):
            s = EpochBatchSampler(n, bs, seed=4, rank=rank, world_size=world, drop_last=drop_last)
            s.set_epoch(7)
            batches = list(s)
            assert len(batches) == len(s) >= 1 and all(len(b) == bs for b in batches)
            per_rank.append([k for b in batches for k in b])
        assert len({len(r) for r in per_rank}) == 1  # same number of batches on every rank
        keys = [k for r in per_rank for k in r]
        positions = [k[1] for k in keys]
        anchors = [k[2] for k in keys]
        assert len(set(positions)) == len(positions)  # each position once: distinct RNG streams
        if drop_last and n >= bs * world:
            assert len(set(anchors)) == len(anchors) == (n // (bs * world)) * bs * world
        else:
            assert set(anchors) == set(range(n))  # padded: covers every track
        if n % (bs * world) == 0:
            assert sorted(anchors) == list(range(n))


def test_sampler_epochs_reshuffle_deterministically():
    a = EpochBatchSampler(50, 5, seed=1)
    b = EpochBatchSampler(50, 5, seed=1)
    a.set_epoch(1), b.set_epoch(1)
    assert list(a) == list(b)
    b.set_epoch(2)
    assert [k[2] for x in a for k in x] != [k[2] for x in b for k in x]


def test_split_without_cliques_is_an_error(store):
    with pytest.raises(ClewsError, match="split val has no clique with ≥ 2 versions"):
        ShingleDataset(store, "val")
    with pytest.raises(ClewsError, match="n_per_class"):
        ShingleDataset(store, "train", n_per_class=1)


def test_seconds_to_frames_is_the_models_cqt_frame_count():
    """One conversion for dataset, embedder and segment protocol: the frames nnAudio's centred CQT
    gives for a waveform of that length, pooled x5 with floor (hand-worked at 16 kHz, hop 320)."""
    cqt = CQTParams()
    # 20 s: 320000 samples -> 320000 // 320 + 1 = 1001 CQT frames -> 1001 // 5 = 200
    assert cqt.seconds_to_frames(20) == 200
    assert cqt.seconds_to_frames(150) == 1500
    assert cqt.seconds_to_frames(5) == 50  # 80000 // 320 + 1 = 251 -> 50
    assert cqt.seconds_to_frames(0.05) == 0  # 800 // 320 + 1 = 3 -> 0: less than one frame
