"""Embeddings of a store split from a checkpoint, written by the ranks in place into a chunked
embeddings store (``OUT/embeddings.zarr``, :mod:`~clews_pipe.embeddings.zarr_format`).

Every track: its first ``maxlen`` seconds of stored CQT frames, cut into shingles of ``cslen``
seconds (the model's shingle length by default: 20 s = 200 frames) every ``cshop`` seconds
(5 s = 50 frames); a track shorter than one shingle (or whose last shingle runs past its end) is
repeat-padded. Tracks are padded to a common shingle count with a mask. For the segment level,
query windows of tau seconds every ``qshop`` seconds are embedded too (``zq_<tau>``); windows
shorter than the model's training shingle are repeated up to its length, as the model does on
waveforms. Tracks are taken in groups of ``TRACKS_PER_READ`` inside blocks of ``EMBED_BLOCK``
tracks (the store's chunks); rank ``r`` embeds blocks ``r, r + world, ...`` and writes each in
place: no shard files, no merge, a rank holds one block at a time.

Protocol (:class:`~clews_pipe.retrieval.protocol_options.Protocol`): under the published ``clews`` one,
cliques with fewer than two available versions in the split are left out and each track has at
most int((maxlen − len) / hop) shingles; ``clews-pipe`` keeps them and covers the whole track.

Deterministic: the model's 1e-6 input noise is drawn per track from a generator seeded by the
track id (and the kind of window), and the grouping of windows into model calls does not depend
on the number of ranks, so the same checkpoint, store, split and settings give bit-identical
embeddings on any number of ranks and on every rerun (on one kind of device).
"""

from __future__ import annotations

import math
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clews_pipe.digests import text_seed
from clews_pipe.errors import ClewsError
from clews_pipe.embeddings.formats import open_embeddings
from clews_pipe.embeddings.zarr_format import DEFAULT_BLOCK, EmbeddingStoreWriter, content_sha256
from clews_pipe.embeddings.npz_format import Embeddings, tau_key
from clews_pipe.retrieval.protocol_options import MIN_VERSIONS, Protocol


TRACKS_PER_READ = 8  # tracks whose windows are cut and embedded together
EMBED_BLOCK = DEFAULT_BLOCK  # tracks per chunk of OUT/embeddings.zarr (a multiple of TRACKS_PER_READ)
NOISE_SCHEME = "sha256(track|kind)->torch.Generator U(0,1)"  # how the input noise is seeded (fingerprinted)


@dataclass
class EmbedSettings:
    maxlen: float = 600.0
    cslen: float | None = None  # None: the model's shingle length
    cshop: float = 5.0
    qslen: float | None = None  # track-level queries; None: same as candidates
    qshop: float = 5.0
    taus: tuple[float, ...] = ()
    batch_size: int = 32
    protocol: Protocol = field(default_factory=Protocol)

    def fingerprint_fields(self) -> dict:
        """What the embeddings depend on besides the checkpoint, the store and the split."""
        return {
            "maxlen": float(self.maxlen), "cslen": self.cslen, "cshop": float(self.cshop), "qslen": self.qslen,
            "qshop": float(self.qshop), "taus": [float(t) for t in self.taus], "batch_size": int(self.batch_size),
            "distractors": bool(self.protocol.distractors), "shingles": self.protocol.shingles,
            "noise": NOISE_SCHEME, "tracks_per_read": TRACKS_PER_READ, "store_block": int(EMBED_BLOCK),
        }


def window_starts(n_frames: int, length: int, hop: int) -> np.ndarray:
    """Start frames of windows of ``length`` every ``hop`` covering ``n_frames`` (at least one)."""
    n_windows = max(math.ceil((n_frames - length) / hop), 0) + 1
    return np.arange(n_windows) * hop


def cut_windows(frames: np.ndarray, length: int, hop: int, min_length: int, max_windows: int | None = None) -> np.ndarray:
    """(n, F) frames → (W, F, max(length, min_length)) windows, repeat-padded, vectorised;
    at most ``max_windows`` (the first ones) when given."""
    n = frames.shape[0]
    starts = window_starts(n, length, hop)
    if max_windows is not None:
        starts = starts[: max(1, int(max_windows))]
    index = (starts[:, None] + np.arange(length)[None, :]) % n  # repeat-pad past the end
    out_len = max(length, min_length)
    if out_len > length:  # short window: repeat it up to the model's shingle length
        index = index[:, np.arange(out_len) % length]
    return np.ascontiguousarray(frames[index].transpose(0, 2, 1))


def noise_seed(track_id: str, kind: str) -> int:
    """Seed of one track's input-noise draws for one kind of window (64 bits of sha256)."""
    return text_seed(f"{track_id}\x1f{kind}")


def track_noise(track_id: str, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    """U(0,1) float32 draws of ``shape`` from the track's own generator (CPU: same on every device)."""
    import torch

    generator = torch.Generator().manual_seed(noise_seed(track_id, kind))
    return torch.rand(shape, generator=generator, dtype=torch.float32).numpy()


@contextlib.contextmanager
def _deterministic_cudnn():
    """cuDNN's deterministic algorithms while embedding (no effect on the CPU), restored afterwards."""
    import torch

    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def _embed_windows(model, windows: list[np.ndarray], batch_size: int, device, noise: list[np.ndarray]) -> list[np.ndarray]:
    """Embed a list of (W_i, F, T) arrays (same T) in batches of ``batch_size`` windows, with the
    input noise ``noise[i]`` (shaped like ``windows[i]``)."""
    import torch

    counts = [w.shape[0] for w in windows]
    flat = np.concatenate(windows, axis=0)
    flat_noise = np.concatenate(noise, axis=0)
    out = []
    with torch.inference_mode(), _deterministic_cudnn():
        for start in range(0, flat.shape[0], batch_size):
            x = torch.from_numpy(flat[start : start + batch_size]).to(device=device, dtype=torch.float32)
            r = torch.from_numpy(flat_noise[start : start + batch_size]).to(device=device, dtype=torch.float32)
            out.append(model.embed(x.unsqueeze(0), noise=r.unsqueeze(0))[0].float().cpu().numpy())
    z = np.concatenate(out, axis=0)
    return np.split(z, np.cumsum(counts)[:-1])


def evaluated_tracks(tracks, protocol: Protocol):
    """The split's index rows the protocol evaluates: all of them, or (published) only cliques with
    at least ``MIN_VERSIONS`` available versions."""
    if protocol.distractors or len(tracks) == 0:
        return tracks
    cliques = tracks["clique"].astype(str)
    sizes = cliques.map(cliques.value_counts()).to_numpy()
    return tracks[sizes >= MIN_VERSIONS]


def _n_windows(n_frames: np.ndarray, length: int, hop: int, cap: int | None) -> np.ndarray:
    """Windows per track as :func:`cut_windows` cuts them (at least one, at most ``cap``)."""
    counts = np.asarray([len(window_starts(int(n), length, hop)) for n in n_frames], dtype=np.int64)
    return counts if cap is None else np.minimum(counts, max(1, int(cap)))


def _store_name(kind: str) -> tuple[str, str]:
    """The embeddings-store arrays ``(z, mask)`` of a kind of window (the kind seeds the noise)."""
    if kind == "z":
        return "z", "mask"
    if kind == "zq_track":
        return "zqt", "maskqt"
    tau = tau_key(float(kind[len("tau_"):]))
    return f"zq_{tau}", f"maskq_{tau}"


@dataclass(frozen=True)
class WindowKind:
    """How one kind of window is cut from a track's frames (the kind's name seeds its noise)."""

    length: int  # frames per window
    hop: int  # frames between window starts
    cap: int | None  # at most this many windows (None: no cap)


@dataclass
class _Tracks:
    """The evaluated tracks of a split, in row order."""

    ids: np.ndarray  # (N,) str
    clique_names: np.ndarray  # (N,) str
    clique_ids: np.ndarray  # (N,) int
    n_frames: np.ndarray  # (N,) frames used (capped at maxlen)
    max_frames: int


def _evaluated_split(store, store_path, split: str, settings: EmbedSettings) -> _Tracks:
    """The split's usable tracks the protocol evaluates; one error line when there are none."""
    available = store.tracks(split)
    if len(available) == 0:
        raise ClewsError(f"store {store_path}: no usable tracks in split {split!r}")
    protocol = settings.protocol
    tracks = evaluated_tracks(available, protocol)
    if len(tracks) == 0:
        raise ClewsError(
            f"store {store_path}: split {split!r} has no clique with >= {MIN_VERSIONS} available versions "
            f"(protocol {protocol.name} drops smaller cliques; --protocol clews-pipe keeps them as distractors)"
        )
    track_ids = np.asarray(tracks.index.astype(str))
    stored_frames = tracks["n_frames"].to_numpy().astype(np.int64)
    if (stored_frames <= 0).any():
        empty = track_ids[np.flatnonzero(stored_frames <= 0)[0]]
        raise ClewsError(f"store {store_path}: track {empty} of split {split!r} has no frames")
    clique_names = np.asarray(tracks["clique"].astype(str))
    _, clique_ids = np.unique(clique_names, return_inverse=True)
    max_frames = int(round(settings.maxlen * float(store.frame_rate)))
    return _Tracks(track_ids, clique_names, clique_ids, np.minimum(stored_frames, max_frames), max_frames)


def _window_kinds(model, settings: EmbedSettings, rate: float) -> dict[str, WindowKind]:
    """Candidate windows (``z``), track-level query windows when shingled differently
    (``zq_track``) and one kind per segment-level query length (``tau_<seconds>``)."""
    protocol = settings.protocol
    cslen = settings.cslen or model.shingle_len
    qslen = settings.qslen or cslen
    candidates = WindowKind(model.shingle_frames(cslen), max(1, int(round(settings.cshop * rate))),
                            protocol.max_shingles(settings.maxlen, cslen, settings.cshop, model.samplerate))
    queries = WindowKind(model.shingle_frames(qslen), max(1, int(round(settings.qshop * rate))),
                         protocol.max_shingles(settings.maxlen, qslen, settings.qshop, model.samplerate))
    kinds = {"z": candidates}
    if queries != candidates:
        kinds["zq_track"] = queries
    for tau in settings.taus:
        kinds[f"tau_{tau}"] = WindowKind(max(1, int(round(tau * rate))), queries.hop, None)
    return kinds


def embed_store(ckpt, store_path, split: str, out_dir, settings: EmbedSettings, ctx=None, trust: bool = False,
                progress: bool = True, block: int | None = None) -> Embeddings:
    """Embed ``split`` with the checkpoint straight into the chunked embeddings store ``out_dir``
    (``OUT/embeddings.zarr``, :mod:`~clews_pipe.embeddings.zarr_format`): rank 0 creates it
    (shapes from the store's frame counts), every rank embeds its blocks of ``block`` tracks
    (blocks ``r, r + world, ...``) and writes each block in place when it is done; no shard
    files, no merge, nothing read back whole. Returns the store opened lazily, on every rank.

    Blocks (``block``, default :data:`EMBED_BLOCK`) are whole groups of ``TRACKS_PER_READ``
    consecutive rows, so windows are batched the same way whatever the number of ranks and the
    block size: the values are bit-identical on any number of ranks."""
    from clews_pipe.model.checkpoint import load_model
    from clews_pipe.ranks import RankContext
    from clews_pipe.store import open_store

    block = int(EMBED_BLOCK if block is None else block)
    if block < 1 or block % TRACKS_PER_READ:
        raise ClewsError(f"embeddings block must be a positive multiple of {TRACKS_PER_READ} tracks, not {block}")
    ctx = ctx or RankContext()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    store = open_store(store_path)
    model, _ = load_model(ckpt, trust=trust, device=ctx.device)
    model.cqt_params.require_equal(store.cqt, f"checkpoint {ckpt}", f"store {store_path}")
    tracks = _evaluated_split(store, store_path, split, settings)
    kinds = _window_kinds(model, settings, float(store.frame_rate))
    widths = {kind: int(_n_windows(tracks.n_frames, w.length, w.hop, w.cap).max()) for kind, w in kinds.items()}
    if ctx.rank == 0:
        EmbeddingStoreWriter.create(
            out_dir, len(tracks.ids), widths["z"], int(model.zdim), track=tracks.ids,
            clique=tracks.clique_ids.astype(np.int64), dtype="float16", clique_name=tracks.clique_names, block=block,
            query_segments={float(tau): widths[f"tau_{tau}"] for tau in settings.taus},
            track_query_segments=widths.get("zq_track"),
        )
    ctx.barrier()
    writer = EmbeddingStoreWriter(out_dir)
    my_blocks = writer.blocks_for_rank(ctx.rank, ctx.world_size)
    bar = None
    if progress and ctx.rank == 0:
        from clews_pipe.progress import progress_bar

        bar = progress_bar(total=sum(min(len(tracks.ids), (b + 1) * block) - b * block for b in my_blocks),
                           desc=f"embed {split} (rank 0 of {ctx.world_size})", unit="track")
    source = _BlockSource(store, f"store {store_path}", split, model, settings, ctx.device, kinds, widths)
    for b in my_blocks:
        t0, t1 = b * block, min(len(tracks.ids), (b + 1) * block)
        values = source.embed_rows(tracks, t0, t1, bar)
        writer.write_rows(t0, values.pop("z"), values.pop("mask"), values)
    if bar is not None:
        bar.close()
    ctx.barrier()
    return open_embeddings(out_dir)


@dataclass
class _BlockSource:
    """Embeds the rows of one block of tracks, every window kind, in groups of ``TRACKS_PER_READ``."""

    store: object
    where: str
    split: str
    model: object
    settings: EmbedSettings
    device: str
    kinds: dict[str, WindowKind]
    widths: dict[str, int]

    def embed_rows(self, tracks: _Tracks, t0: int, t1: int, bar=None) -> dict[str, np.ndarray]:
        """``{z, mask, zqt, maskqt, zq_<tau>, maskq_<tau>}`` of rows ``t0:t1`` (float16; True = padding)."""
        dim, min_len = int(self.model.zdim), self.model.shingle_frames(self.model.min_shingle_len)
        values = {}
        for kind in self.kinds:  # float16 as the published evaluation stores them; True = padding
            zname, mname = _store_name(kind)
            values[zname] = np.zeros((t1 - t0, self.widths[kind], dim), dtype=np.float16)
            values[mname] = np.ones((t1 - t0, self.widths[kind]), dtype=bool)
        for g0 in range(t0, t1, TRACKS_PER_READ):  # one global group of TRACKS_PER_READ rows
            rows = range(g0, min(t1, g0 + TRACKS_PER_READ))
            frames = [self.store.read(tracks.ids[j], 0, tracks.max_frames).astype(np.float32) for j in rows]
            for j, f in zip(rows, frames):
                if f.shape[0] == 0:
                    raise ClewsError(f"{self.where}: track {tracks.ids[j]} of split {self.split!r} has no frames")
            for kind, window in self.kinds.items():
                windows = [cut_windows(f, window.length, window.hop, min_len, window.cap) for f in frames]
                noise = [track_noise(tracks.ids[j], kind, w.shape) for j, w in zip(rows, windows)]
                embedded = _embed_windows(self.model, windows, self.settings.batch_size, self.device, noise)
                zname, mname = _store_name(kind)
                for j, z in zip(rows, embedded):
                    values[zname][j - t0, : z.shape[0]] = z
                    values[mname][j - t0, : z.shape[0]] = False
            if bar is not None:
                bar.update(len(rows))
        return values


def sidecar_path(out_file) -> Path:
    """``embeddings.json`` beside ``embeddings.zarr`` (or an ``.npz``): the fingerprint and provenance
    of the embeddings."""
    return Path(out_file).with_suffix(".json")


def embedding_inputs(ckpt, store_path, split: str, settings: EmbedSettings) -> dict:
    """What the embeddings depend on, with digests (the fingerprint is computed over it)."""
    from clews_pipe.embeddings.provenance import base_provenance, file_sha256, store_index_sha256
    from clews_pipe.store import open_store

    if not Path(ckpt).is_file():
        raise ClewsError(f"{ckpt}: checkpoint file not found")
    inputs = base_provenance()
    inputs.update({
        "checkpoint": str(Path(ckpt).resolve()),
        "checkpoint_sha256": file_sha256(ckpt),
        "store": str(Path(store_path).resolve()),
        "store_index_sha256": store_index_sha256(open_store(store_path)),
        "split": str(split),
        "embed_settings": settings.fingerprint_fields(),
    })
    return inputs


def embeddings_fingerprint(inputs: dict) -> str:
    from clews_pipe.embeddings.provenance import digest_of

    return digest_of({k: inputs[k] for k in ("checkpoint_sha256", "store_index_sha256", "split", "embed_settings")})


def reusable_embeddings(out_file, fingerprint: str) -> tuple[Embeddings, dict] | None:
    """The embeddings at ``out_file`` (opened lazily) with their provenance when their sidecar
    carries ``fingerprint`` and the store is complete (every block written)."""
    import json

    out_file, sidecar = Path(out_file), sidecar_path(out_file)
    if not (out_file.exists() and sidecar.is_file()):
        return None
    try:
        saved = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("fingerprint") != fingerprint:
        return None
    try:
        return open_embeddings(out_file), dict(saved.get("provenance") or {})
    except ClewsError:  # unreadable or incomplete (a run killed while embedding)
        return None


def embed_or_reuse(ckpt, store_path, split: str, out_file, settings: EmbedSettings, ctx=None, trust: bool = False,
                   progress: bool = True, log=None) -> tuple[Embeddings, dict, bool]:
    """``(embeddings, provenance of the inputs, reused)``: ``out_file`` as it is when its fingerprint
    (checkpoint sha256, store index sha256, split, settings) matches and it is complete, else
    :func:`embed_store` into ``out_file`` (the chunked ``OUT/embeddings.zarr``; the sidecar
    ``embeddings.json`` is written only once every block is)."""
    from clews_pipe.atomic import write_json_atomic
    from clews_pipe.ranks import RankContext
    from clews_pipe.embeddings.provenance import checkpoint_epoch

    ctx = ctx or RankContext()
    inputs = embedding_inputs(ckpt, store_path, split, settings)
    fingerprint = embeddings_fingerprint(inputs)
    found = reusable_embeddings(out_file, fingerprint)
    if found is not None:
        if log is not None and ctx.rank == 0:
            log(f"reusing {out_file} (same checkpoint, store index, split and settings)")
        return found[0], found[1], True
    ctx.barrier()  # every rank has looked before rank 0 removes a stale sidecar
    if ctx.rank == 0:
        sidecar_path(out_file).unlink(missing_ok=True)
    emb = embed_store(ckpt, store_path, split, out_file, settings, ctx=ctx, trust=trust, progress=progress)
    if ctx.rank == 0:
        inputs["checkpoint_epoch"] = checkpoint_epoch(ckpt, trust=trust)
        write_json_atomic(sidecar_path(out_file), {"fingerprint": fingerprint, "provenance": inputs})
    return emb, inputs, False


def embeddings_file_provenance(path) -> tuple[Embeddings, dict]:
    """Embeddings given as they are (an ``.npz`` file or a chunked store), with the provenance of
    their sidecar when they have one; ``embeddings_sha256``: the file's sha256, or for a store
    :func:`~clews_pipe.embeddings.zarr_format.content_sha256`."""
    import json

    from clews_pipe.embeddings.provenance import base_provenance, file_sha256

    emb = open_embeddings(path)
    inputs = base_provenance()
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        try:
            saved = json.loads(sidecar.read_text())
            inputs.update({k: v for k, v in dict(saved.get("provenance") or {}).items() if k in inputs or k == "embed_settings"})
        except (OSError, ValueError, AttributeError):
            pass
    inputs["embeddings"] = str(Path(path).resolve())
    inputs["embeddings_sha256"] = file_sha256(path) if Path(path).is_file() else content_sha256(path)
    return emb, inputs
