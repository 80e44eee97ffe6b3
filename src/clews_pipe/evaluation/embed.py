"""Embeddings of a store split from a checkpoint, sharded over ranks, written as ``embeddings.npz``.

Every track: its first ``maxlen`` seconds of stored CQT frames, cut into shingles of ``cslen``
seconds (the model's shingle length by default: 20 s = 200 frames) every ``cshop`` seconds
(5 s = 50 frames); a track shorter than one shingle (or whose last shingle runs past its end) is
repeat-padded. Tracks are padded to a common shingle count with a mask. For the segment level,
query windows of tau seconds every ``qshop`` seconds are embedded too (``zq_<tau>``); windows
shorter than the model's training shingle are repeated up to its length, as the model does on
waveforms. Rank ``r`` embeds tracks ``r, r + world, ...``; rank 0 merges the shards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clews_pipe.errors import ClewsError
from clews_pipe.evaluation.embeddings import Embeddings, load_embeddings, save_embeddings


TRACKS_PER_READ = 8  # tracks whose windows are cut and embedded together


@dataclass
class EmbedSettings:
    maxlen: float = 600.0
    cslen: float | None = None  # None: the model's shingle length
    cshop: float = 5.0
    qslen: float | None = None  # track-level queries; None: same as candidates
    qshop: float = 5.0
    taus: tuple[float, ...] = ()
    batch_size: int = 32


def window_starts(n_frames: int, length: int, hop: int) -> np.ndarray:
    """Start frames of windows of ``length`` every ``hop`` covering ``n_frames`` (at least one)."""
    n_windows = max(math.ceil((n_frames - length) / hop), 0) + 1
    return np.arange(n_windows) * hop


def cut_windows(frames: np.ndarray, length: int, hop: int, min_length: int) -> np.ndarray:
    """(n, F) frames → (W, F, max(length, min_length)) windows, repeat-padded, vectorised."""
    n = frames.shape[0]
    starts = window_starts(n, length, hop)
    index = (starts[:, None] + np.arange(length)[None, :]) % n  # repeat-pad past the end
    out_len = max(length, min_length)
    if out_len > length:  # short window: repeat it up to the model's shingle length
        index = index[:, np.arange(out_len) % length]
    return np.ascontiguousarray(frames[index].transpose(0, 2, 1))


def _embed_windows(model, windows: list[np.ndarray], batch_size: int, device) -> list[np.ndarray]:
    """Embed a list of (W_i, F, T) arrays (same T) in batches of ``batch_size`` windows."""
    import torch

    counts = [w.shape[0] for w in windows]
    flat = np.concatenate(windows, axis=0)
    out = []
    with torch.inference_mode():
        for start in range(0, flat.shape[0], batch_size):
            x = torch.from_numpy(flat[start : start + batch_size]).to(device=device, dtype=torch.float32)
            out.append(model.embed(x.unsqueeze(0))[0].float().cpu().numpy())
    z = np.concatenate(out, axis=0)
    return np.split(z, np.cumsum(counts)[:-1])


def _pad(per_track: list[np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack per-track (S_i, D) embeddings into (N, max S_i, D) float16 (as the published
    evaluation stores them: half the memory at Discogs-VI scale) with a padding mask."""
    n_max = max(z.shape[0] for z in per_track)
    z = np.zeros((len(per_track), n_max, dim), dtype=np.float16)
    mask = np.ones((len(per_track), n_max), dtype=bool)
    for i, zi in enumerate(per_track):
        z[i, : zi.shape[0]] = zi
        mask[i, : zi.shape[0]] = False
    return z, mask


def embed_store(ckpt, store_path, split: str, out_file, settings: EmbedSettings, ctx=None, trust: bool = False,
                progress: bool = True) -> Embeddings:
    """Compute (on every rank, each its share) and return the merged embeddings of ``split``."""
    from clews_pipe.evaluation.protocols import RankContext
    from clews_pipe.features.store import open_store
    from clews_pipe.model.checkpoint import load_model

    ctx = ctx or RankContext()
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    store = open_store(store_path)
    model, _ = load_model(ckpt, trust=trust, device=ctx.device)
    model.cqt_params.require_equal(store.cqt, f"checkpoint {ckpt}", f"store {store_path}")
    tracks = store.tracks(split)
    if len(tracks) == 0:
        raise ClewsError(f"store {store_path}: no usable tracks in split {split!r}")
    track_ids = np.asarray(tracks.index.astype(str))
    clique_names = np.asarray(tracks["clique"].astype(str))
    _, clique_ids = np.unique(clique_names, return_inverse=True)
    rate = float(store.frame_rate)
    max_frames = int(round(settings.maxlen * rate))
    cslen = settings.cslen or model.shingle_len
    qslen = settings.qslen or cslen
    c_len, c_hop = model.shingle_frames(cslen), max(1, int(round(settings.cshop * rate)))
    q_len, q_hop = model.shingle_frames(qslen), max(1, int(round(settings.qshop * rate)))
    min_len = model.shingle_frames(model.min_shingle_len)
    mine = list(range(ctx.rank, len(track_ids), ctx.world_size))
    per_kind: dict[str, list[np.ndarray]] = {"z": []}
    if (q_len, q_hop) != (c_len, c_hop):
        per_kind["zq_track"] = []
    for tau in settings.taus:
        per_kind[f"tau_{tau}"] = []
    iterator = mine
    if progress and ctx.rank == 0:
        from clews_pipe.progress import progress_bar

        iterator = progress_bar(mine, desc=f"embed {split} (rank 0 of {ctx.world_size})", unit="track")
    chunk: list[int] = []
    for pos, i in enumerate(iterator):
        chunk.append(i)
        if len(chunk) == TRACKS_PER_READ or pos == len(mine) - 1:
            frames = [store.read(track_ids[j], 0, max_frames).astype(np.float32) for j in chunk]
            if any(f.shape[0] == 0 for f in frames):
                raise ClewsError(f"store {store_path}: a track of split {split!r} has no frames")
            per_kind["z"] += _embed_windows(model, [cut_windows(f, c_len, c_hop, min_len) for f in frames], settings.batch_size, ctx.device)
            if "zq_track" in per_kind:
                per_kind["zq_track"] += _embed_windows(model, [cut_windows(f, q_len, q_hop, min_len) for f in frames], settings.batch_size, ctx.device)
            for tau in settings.taus:
                t_len = max(1, int(round(tau * rate)))
                per_kind[f"tau_{tau}"] += _embed_windows(model, [cut_windows(f, t_len, q_hop, min_len) for f in frames], settings.batch_size, ctx.device)
            chunk = []
    shard = out_file.with_name(f"{out_file.stem}.rank{ctx.rank}.npz")
    np.savez(shard, order=np.asarray(mine, dtype=np.int64),
             **{f"{k}__{n}": v for k, vs in per_kind.items() for n, v in enumerate(vs)})
    ctx.barrier()
    if ctx.rank == 0:
        merged: dict[str, list] = {k: [None] * len(track_ids) for k in per_kind}
        for r in range(ctx.world_size):
            part = np.load(out_file.with_name(f"{out_file.stem}.rank{r}.npz"))
            order = part["order"]
            for k in per_kind:
                for n, idx in enumerate(order):
                    merged[k][idx] = part[f"{k}__{n}"]
        dim = merged["z"][0].shape[-1]
        z, mask = _pad(merged["z"], dim)
        queries = {float(tau): _pad(merged[f"tau_{tau}"], dim) for tau in settings.taus}
        emb = Embeddings(z=z, mask=mask, clique=clique_ids.astype(np.int64), track=track_ids, queries=queries,
                         clique_name=clique_names)
        if "zq_track" in merged:  # track-level queries with their own shingling
            emb.track_queries = _pad(merged["zq_track"], dim)
        save_embeddings(out_file, emb)
        for r in range(ctx.world_size):
            out_file.with_name(f"{out_file.stem}.rank{r}.npz").unlink(missing_ok=True)
    ctx.barrier()
    return load_embeddings(out_file)
