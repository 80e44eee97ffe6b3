"""Memory-mapped shingle dataset, distributed epoch batch sampler and the training DataLoader.

One item is an anchor track plus ``n_per_class - 1`` positives drawn *with replacement* from the
anchor's clique, the anchor excluded. From each track a uniformly random block of ``block_len``
seconds (150 s) is taken within its first ``maxlen`` seconds (600 s); a shorter track is tiled
and cropped at a random offset (the published ``force_length(repeat, random)``); then cut into shingles of ``shingle_len`` s every ``shingle_hop`` s (20/20 →
8 shingles, the last half-empty one completed by repeating the block from its start, as the
published ``get_frames(..., pad_mode="repeat")``). Frame counts derive from the store's
``frame_rate`` (10 frames/s): 1500-frame blocks, 8 shingles of 200 frames.

Item: ``(x, clique, track)`` with ``x`` a ``(n_per_class, shingles, bins, frames)`` tensor in the
store's float16 (convert on the device: it halves host→device traffic), ``clique`` and ``track``
``(n_per_class,)`` int64 indices into :attr:`ShingleDataset.clique_names` /
:attr:`ShingleDataset.track_ids`. Only cliques with ≥ 2 ok/truncated tracks in the split count.

Determinism: the batch sampler yields keys ``(epoch, position, anchor)``; the item's positives
and block offsets come from a generator seeded by ``(seed, epoch, position)``, so the batches
depend only on the seed and epoch, never on the number of DataLoader workers. The dataset holds
no epoch state (persistent workers keep working copies of it).

Reads go only through the store's memory map (``store.read(track_id, start, stop)``); the
dataset pickles with the store, which reopens its memmaps lazily in each worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from clews_pipe.errors import ClewsError
from clews_pipe.features.cqt_params import CQTParams

ItemKey = tuple[int, int, int]  # (epoch, position in the epoch order, anchor index)


@dataclass(frozen=True)
class ShingleLayout:
    """Frame counts of a training block and its shingles."""

    block_frames: int
    shingle_frames: int
    hop_frames: int
    maxlen_frames: int

    @classmethod
    def from_seconds(
        cls, cqt: CQTParams, block_len: float, shingle_len: float, shingle_hop: float,
        maxlen: float,
    ) -> "ShingleLayout":
        def frames(seconds: float, what: str) -> int:
            n = cqt.seconds_to_frames(seconds)
            if n < 1:
                raise ClewsError(f"data.{what}={seconds} s is less than one frame at {cqt.frame_rate} frames/s")
            return n

        layout = cls(
            block_frames=frames(block_len, "block_len"),
            shingle_frames=frames(shingle_len, "shingle_len"),
            hop_frames=frames(shingle_hop, "shingle_hop"),
            maxlen_frames=frames(maxlen, "maxlen"),
        )
        if layout.maxlen_frames < layout.block_frames:
            raise ClewsError(f"data.maxlen={maxlen} s is shorter than data.block_len={block_len} s")
        return layout

    @property
    def n_shingles(self) -> int:
        extra = max(self.block_frames - self.shingle_frames, 0)
        return int(math.ceil(extra / self.hop_frames)) + 1

    def block_positions(self) -> np.ndarray:
        """``(n_shingles, shingle_frames)`` positions within the block (repeat-padded past its end)."""
        starts = np.arange(self.n_shingles, dtype=np.int64) * self.hop_frames
        pos = starts[:, None] + np.arange(self.shingle_frames, dtype=np.int64)[None, :]
        return pos % self.block_frames


class ShingleDataset(torch.utils.data.Dataset):
    """Anchor + positives, each a repeat-padded random block cut into shingles, from a store."""

    def __init__(
        self,
        store,
        split: str = "train",
        n_per_class: int = 4,
        block_len: float = 150.0,
        shingle_len: float = 20.0,
        shingle_hop: float = 20.0,
        maxlen: float = 600.0,
        seed: int = 0,
        random_blocks: bool = True,
        out_dtype: torch.dtype = torch.float16,
    ):
        if n_per_class < 2:
            raise ClewsError(f"data.n_per_class={n_per_class}: need the anchor and at least one positive")
        self.store = store
        self.split = split
        self.n_per_class = int(n_per_class)
        self.seed = int(seed)
        self.random_blocks = bool(random_blocks)
        self.out_dtype = out_dtype
        self.n_bins = int(store.n_bins)
        self.layout = ShingleLayout.from_seconds(store.cqt, block_len, shingle_len, shingle_hop, maxlen)
        self._positions = self.layout.block_positions().reshape(-1)
        self._build_tables(store.tracks(split=split))

    def _build_tables(self, tracks) -> None:
        tracks = tracks[tracks["n_frames"].astype(np.int64) > 0]
        cliques = tracks["clique"].astype(str)
        sizes = cliques.value_counts()
        kept = tracks[cliques.map(sizes).to_numpy() >= 2]
        if len(kept) == 0:
            raise ClewsError(f"split {self.split} has no clique with ≥ 2 versions")
        kept = kept.assign(_clique=kept["clique"].astype(str)).sort_values(
            ["_clique"], kind="stable"
        )
        self.track_ids = np.asarray(kept.index.astype(str))
        self.clique_names, self.track_clique = np.unique(
            kept["_clique"].to_numpy(), return_inverse=True
        )
        self.track_clique = self.track_clique.astype(np.int64)
        self.n_frames = kept["n_frames"].to_numpy().astype(np.int64)
        # tracks are sorted by clique: clique c owns rows clique_start[c] : clique_start[c + 1]
        counts = np.bincount(self.track_clique, minlength=len(self.clique_names))
        self.clique_start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.track_ids)

    @property
    def item_shape(self) -> tuple[int, int, int, int]:
        lay = self.layout
        return (self.n_per_class, lay.n_shingles, self.n_bins, lay.shingle_frames)

    def draw(self, key: ItemKey | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Track rows (anchor first), block start frames and short-track rotations of one item.

        All from the item's generator seeded by ``(seed, epoch, position)``.
        """
        epoch, position, anchor = (0, int(key), int(key)) if np.isscalar(key) else map(int, key)
        rng = np.random.default_rng([self.seed, epoch, position])
        c = self.track_clique[anchor]
        first, size = self.clique_start[c], self.clique_start[c + 1] - self.clique_start[c]
        # positives: uniform over the other size-1 members, with replacement (skip the anchor row)
        pick = first + rng.integers(0, size - 1, self.n_per_class - 1)
        pick = pick + (pick >= anchor)
        rows = np.concatenate([[anchor], pick]).astype(np.int64)
        block = self.layout.block_frames
        available = np.minimum(self.n_frames[rows], self.layout.maxlen_frames)
        slack = np.maximum(available - block, 0)
        # a track shorter than the block is tiled (k copies ≥ block) and cropped at a random
        # offset, as the published force_length(pad_mode="repeat", cut_mode="random")
        copies = -(-block // available)
        rot_slack = np.where(available < block, copies * available - block, 0)
        if self.random_blocks:
            u = rng.random((2, len(rows)))
            starts = np.minimum((u[0] * (slack + 1)).astype(np.int64), slack)
            rotations = np.minimum((u[1] * (rot_slack + 1)).astype(np.int64), rot_slack)
        else:
            starts = np.zeros(len(rows), dtype=np.int64)
            rotations = np.zeros(len(rows), dtype=np.int64)
        return rows, starts, rotations

    def __getitem__(self, key: ItemKey | int):
        rows, starts, rotations = self.draw(key)
        lay = self.layout
        out = np.empty(self.item_shape, dtype=np.float16)
        for i, (row, start, rot) in enumerate(zip(rows.tolist(), starts.tolist(), rotations.tolist())):
            length = min(int(self.n_frames[row]), lay.maxlen_frames, lay.block_frames)
            window = self.store.read(self.track_ids[row], start, start + length)
            # block position p -> window frame (rot + p) mod length (identity for full blocks)
            frames = window[(self._positions + rot) % length]  # (n_shingles * shingle_frames, bins)
            out[i] = frames.reshape(lay.n_shingles, lay.shingle_frames, -1).transpose(0, 2, 1)
        x = torch.from_numpy(out)
        if self.out_dtype != torch.float16:
            x = x.to(self.out_dtype)
        return x, torch.from_numpy(self.track_clique[rows]), torch.from_numpy(rows)


class EpochBatchSampler(torch.utils.data.Sampler):
    """Per-rank batches of item keys ``(epoch, position, anchor)`` for one epoch.

    The epoch order is a permutation of all anchors seeded by ``(seed, epoch)`` (or the identity
    when ``shuffle`` is off). Every rank gets the same number of batches:
    ``drop_last=True`` (default) drops the tail of the permutation beyond a multiple of
    ``batch_size × world_size`` (no track twice in an epoch; which tracks are dropped changes with
    the epoch); ``drop_last=False`` pads by repeating the order from its start. An epoch with
    fewer anchors than one batch per rank is always padded, never empty. Rank ``r`` takes
    positions ``r, r + world_size, ...``.
    """

    def __init__(
        self, n_anchors: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
        shuffle: bool = True, drop_last: bool = True,
    ):
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ClewsError(f"bad sampler setup: batch_size={batch_size} rank={rank} world_size={world_size}")
        self.n_anchors = int(n_anchors)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _global_length(self) -> int:
        step = self.batch_size * self.world_size
        if self.drop_last and self.n_anchors >= step:
            return (self.n_anchors // step) * step
        return int(math.ceil(self.n_anchors / step)) * step

    def __len__(self) -> int:
        return self._global_length() // (self.batch_size * self.world_size)

    def epoch_order(self) -> np.ndarray:
        if self.shuffle:
            return np.random.default_rng([self.seed, self.epoch]).permutation(self.n_anchors)
        return np.arange(self.n_anchors)

    def __iter__(self) -> Iterator[list[ItemKey]]:
        order = np.resize(self.epoch_order(), self._global_length())  # np.resize repeats
        positions = np.arange(self.rank, len(order), self.world_size)
        anchors = order[positions]
        for b in range(len(positions) // self.batch_size):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield [(self.epoch, int(p), int(a)) for p, a in zip(positions[sl], anchors[sl])]


def collate_items(items: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Stack items into ``(B·n_per_class, shingles, bins, frames)`` + clique + track ``(B·n,)``."""
    xs, cliques, tracks = zip(*items)
    return torch.cat(xs), torch.cat(cliques), torch.cat(tracks)


def _conf_get(conf, key, default):
    if conf is None:
        return default
    value = conf.get(key, default) if hasattr(conf, "get") else getattr(conf, key, default)
    return default if value is None else value


def make_train_loader(
    store,
    data_conf,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    workers: int | None = None,
    *,
    split: str | None = None,
    shuffle: bool = True,
    drop_last: bool = True,
    out_dtype: torch.dtype = torch.float16,
    multiprocessing_context: str | None = None,
) -> torch.utils.data.DataLoader:
    """DataLoader of training batches ``(x, clique, track)`` for one rank.

    ``store``: an open FeatureStore or its path. ``data_conf``: the config's ``data`` section
    (n_per_class, block_len, shingle_len, shingle_hop, maxlen, train_split, workers).
    ``shuffle=False`` (validation) keeps the anchors in order and takes every block from the
    track start; positives are still drawn from the seeded generator. Call
    ``loader.batch_sampler.set_epoch(epoch)`` before each epoch. When using Lightning Fabric,
    pass ``use_distributed_sampler=False`` to ``setup_dataloaders`` (this sampler already
    splits across ranks).
    """
    if isinstance(store, (str, Path)):
        from clews_pipe.store import open_store

        store = open_store(store)
    dataset = ShingleDataset(
        store,
        split=split if split is not None else _conf_get(data_conf, "train_split", "train"),
        n_per_class=int(_conf_get(data_conf, "n_per_class", 4)),
        block_len=float(_conf_get(data_conf, "block_len", 150.0)),
        shingle_len=float(_conf_get(data_conf, "shingle_len", 20.0)),
        shingle_hop=float(_conf_get(data_conf, "shingle_hop", 20.0)),
        maxlen=float(_conf_get(data_conf, "maxlen", 600.0)),
        seed=seed,
        random_blocks=shuffle,
        out_dtype=out_dtype,
    )
    sampler = EpochBatchSampler(
        len(dataset), batch_size, seed=seed, rank=rank, world_size=world_size,
        shuffle=shuffle, drop_last=drop_last,
    )
    n_workers = int(workers if workers is not None else _conf_get(data_conf, "workers", 2))
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate_items,
        num_workers=n_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=n_workers > 0,
        multiprocessing_context=multiprocessing_context if n_workers > 0 else None,
    )
