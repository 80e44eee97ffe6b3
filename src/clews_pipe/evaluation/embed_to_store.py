"""Embeddings of a store split written by the ranks straight into a chunked embeddings store.

The same windows and model calls as :func:`clews_pipe.evaluation.embed.embed_store` (its
``cut_windows`` / ``_embed_windows`` / ``_pad``), but no shard files and no merge: the padded
shapes (N, S, D) follow from the feature store's frame counts, rank 0 creates
``embeddings.zarr`` (:class:`EmbeddingStoreWriter`), and each rank embeds whole blocks of
``block`` tracks (blocks ``r, r + world, ...``) and writes each block in place as soon as it is
done. Nothing is read back whole: the result is opened lazily (:func:`open_embeddings`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clews_pipe.errors import ClewsError
from clews_pipe.evaluation.embed import TRACKS_PER_READ, EmbedSettings, _embed_windows, cut_windows, window_starts
from clews_pipe.evaluation.embedding_store import DEFAULT_BLOCK, EmbeddingStoreWriter, open_embeddings
from clews_pipe.evaluation.embeddings import Embeddings, tau_key


def _n_windows(n_frames: np.ndarray, length: int, hop: int) -> np.ndarray:
    return np.asarray([len(window_starts(int(n), length, hop)) for n in n_frames], dtype=np.int64)


def embed_store_chunked(ckpt, store_path, split: str, out_dir, settings: EmbedSettings, ctx=None, trust: bool = False,
                        progress: bool = True, block: int = DEFAULT_BLOCK) -> Embeddings:
    """Embed ``split`` of the feature store with the checkpoint into ``out_dir`` (a chunked
    embeddings store), every rank its blocks; return the store opened lazily (on every rank)."""
    from clews_pipe.evaluation.protocols import RankContext
    from clews_pipe.features.store import open_store
    from clews_pipe.model.checkpoint import load_model

    ctx = ctx or RankContext()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    store = open_store(store_path)
    model, _ = load_model(ckpt, trust=trust, device=ctx.device)
    model.cqt_params.require_equal(store.cqt, f"checkpoint {ckpt}", f"store {store_path}")
    tracks = store.tracks(split)
    if len(tracks) == 0:
        raise ClewsError(f"store {store_path}: no usable tracks in split {split!r}")
    if (tracks["n_frames"].to_numpy() <= 0).any():
        raise ClewsError(f"store {store_path}: a track of split {split!r} has no frames")
    track_ids = np.asarray(tracks.index.astype(str))
    clique_names = np.asarray(tracks["clique"].astype(str))
    _, clique_ids = np.unique(clique_names, return_inverse=True)
    rate = float(store.frame_rate)
    max_frames = int(round(settings.maxlen * rate))
    n_frames = np.minimum(tracks["n_frames"].to_numpy().astype(np.int64), max_frames)
    cslen = settings.cslen or model.shingle_len
    qslen = settings.qslen or cslen
    c_len, c_hop = model.shingle_frames(cslen), max(1, int(round(settings.cshop * rate)))
    q_len, q_hop = model.shingle_frames(qslen), max(1, int(round(settings.qshop * rate)))
    min_len = model.shingle_frames(model.min_shingle_len)
    kinds = {"z": (c_len, c_hop)}  # array name -> (window frames, hop frames)
    if (q_len, q_hop) != (c_len, c_hop):
        kinds["zqt"] = (q_len, q_hop)
    for tau in settings.taus:
        kinds[f"zq_{tau_key(tau)}"] = (max(1, int(round(tau * rate))), q_hop)
    counts = {name: _n_windows(n_frames, *lw) for name, lw in kinds.items()}
    dim = int(model.zdim)
    if ctx.rank == 0:
        EmbeddingStoreWriter.create(
            out_dir, len(track_ids), int(counts["z"].max()), dim, track=track_ids, clique=clique_ids,
            dtype="float16", clique_name=clique_names, block=block,
            query_segments={float(t): int(counts[f"zq_{tau_key(t)}"].max()) for t in settings.taus},
            track_query_segments=int(counts["zqt"].max()) if "zqt" in counts else None,
        )
    ctx.barrier()
    writer = EmbeddingStoreWriter(out_dir)
    my_blocks = writer.blocks_for_rank(ctx.rank, ctx.world_size)
    bar = None
    if progress and ctx.rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(min(len(track_ids), (b + 1) * block) - b * block for b in my_blocks),
                   desc=f"embed {split} (rank 0 of {ctx.world_size})", unit="track")
    mask_name = {"z": "mask", "zqt": "maskqt", **{f"zq_{tau_key(t)}": f"maskq_{tau_key(t)}" for t in settings.taus}}
    for b in my_blocks:
        t0, t1 = b * block, min(len(track_ids), (b + 1) * block)
        values = {}
        for name in kinds:
            width = int(counts[name].max())
            values[name] = np.zeros((t1 - t0, width, dim), dtype=np.float16)
            values[mask_name[name]] = np.ones((t1 - t0, width), dtype=bool)
        for c0 in range(t0, t1, TRACKS_PER_READ):
            rows = range(c0, min(t1, c0 + TRACKS_PER_READ))
            frames = [store.read(track_ids[j], 0, max_frames).astype(np.float32) for j in rows]
            for name, (length, hop) in kinds.items():
                embedded = _embed_windows(model, [cut_windows(f, length, hop, min_len) for f in frames],
                                          settings.batch_size, ctx.device)
                for j, z in zip(rows, embedded):
                    values[name][j - t0, : z.shape[0]] = z
                    values[mask_name[name]][j - t0, : z.shape[0]] = False
            if bar is not None:
                bar.update(len(rows))
        extra = {k: v for k, v in values.items() if k not in ("z", "mask")}
        writer.write_rows(t0, values["z"], values["mask"], extra)
    if bar is not None:
        bar.close()
    ctx.barrier()
    return open_embeddings(out_dir)
