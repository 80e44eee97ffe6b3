"""Reduced distances between a block of query tracks and a block of candidate tracks, in memory-bounded blocks.

The segment distances of (query block x candidate block) come from one matmul and are reduced
together; the block size follows a memory budget, so peak memory is set by the budget, not by the
number of tracks. Used by validation during training and by the persisted evaluation matrix.

Blocks are moved to the device in their stored dtype (float16 halves the host→device traffic) and
cast to float32 there. ``precision`` picks the arithmetic of the segment-distance matmul:
``fp32`` (exact float32, the default), ``tf32`` (CUDA TensorFloat-32 tensor cores) or ``bf16``
(bfloat16 inputs, float32 accumulation). The low-precision kinds compute only the dot products
``q.c`` in low precision; the squared norms and the sum stay float32. Their reduced values are
approximate: :func:`exact_pair_distances` recomputes chosen (query, candidate) pairs in float32,
which the evaluator uses for every value that decides a rank.

:class:`CandidateFeed` serves candidate blocks to the tiles: on a CUDA device the whole candidate
set stays resident in device memory (float16 as stored) when it fits, else each block is staged
in pinned host memory and copied asynchronously.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable

import numpy as np
import torch

from clews_pipe.retrieval.reductions import reduce_distances
from clews_pipe.retrieval.redux import Redux
from clews_pipe.retrieval.segment_distances import cross_segment_distances, pair_mask

BYTES_PER_SEGMENT_PAIR = 16  # distances, the masked copy, masks and top-k workspace
PRECISIONS = ("fp32", "tf32", "bf16")
RESIDENT_FRACTION = 0.5  # candidates stay on the device when they take at most this much of its free memory


def check_precision(precision: str) -> str:
    from clews_pipe.errors import ClewsError

    if precision not in PRECISIONS:
        raise ClewsError(f"--matmul-precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return precision


@contextlib.contextmanager
def _matmul_mode(precision: str):
    """TF32 on for the ``tf32`` kind only, restored afterwards (fp32 stays IEEE float32)."""
    if precision != "tf32" or not torch.cuda.is_available():
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def lowp_segment_distances(zq: torch.Tensor, zc: torch.Tensor, mask_q, mask_c, precision: str) -> torch.Tensor:
    """``cross_segment_distances`` with the dot products in ``precision`` (tf32 / bf16) and the
    norms in float32: ``(Q, u, D)``, ``(C, v, D)`` float32 → ``(Q, C, u, v)``; padding → +inf."""
    n_q, u, dim = zq.shape
    n_c, v, _ = zc.shape
    flat_q, flat_c = zq.reshape(n_q * u, dim), zc.reshape(n_c * v, dim)
    sq_q = flat_q.pow(2).sum(-1, keepdim=True)
    sq_c = flat_c.pow(2).sum(-1, keepdim=True).t()
    if mask_q is not None:
        sq_q = sq_q.masked_fill(mask_q.reshape(-1, 1), float("inf"))
    if mask_c is not None:
        sq_c = sq_c.masked_fill(mask_c.reshape(1, -1), float("inf"))
    if precision == "bf16":
        a, b = flat_q.to(torch.bfloat16), flat_c.to(torch.bfloat16).t()
        dot = None
        if a.is_cuda:  # float32 output of the bf16 GEMM (no rounding of the dot products to bf16)
            try:
                dot = torch.mm(a, b, out_dtype=torch.float32)
            except (RuntimeError, TypeError):
                dot = None
        if dot is None:
            dot = torch.mm(a, b).float()
    else:
        dot = flat_q @ flat_c.t()
    dist = (sq_q + sq_c).sub_(dot, alpha=2.0).div_(dim).clamp_min_(0.0)
    return dist.view(n_q, u, n_c, v).permute(0, 2, 1, 3)


class CandidateFeed:
    """Candidate rows ``[c0, c1)`` as device tensors ``(z, mask)``, z in its stored dtype.

    ``read(c0, c1) -> (z ndarray/tensor, mask ndarray/tensor)`` reads host rows (from memory or a
    chunked store). On CUDA, when the candidates (``n_rows × row_bytes``) fit in
    RESIDENT_FRACTION of the free device memory, they are uploaded once (block by block) and
    served as views; otherwise each block is copied into one of two reusable pinned host buffers
    and sent with an asynchronous copy (a buffer is refilled only after its previous copy has
    finished). On the CPU blocks are served as read.
    """

    def __init__(self, read: Callable, n_rows: int, row_bytes: int, device: str = "cpu", block_rows: int = 4096,
                 resident: bool | None = None, lazy_rows: "LazySource | None" = None):
        self.read = read
        self.lazy_rows = lazy_rows  # host mode only: blocks served as RowReaders
        self.n_rows = int(n_rows)
        self.device = torch.device(device)
        self.block_rows = max(1, int(block_rows))
        self._z = self._mask = None
        self._pinned: list = []  # [(z buffer, mask buffer, cuda event or None)] x 2
        self._turn = 0
        self.mode = "host"
        if self.device.type == "cuda":
            if resident is None:
                free, _total = torch.cuda.mem_get_info(self.device)
                resident = self.n_rows * row_bytes <= RESIDENT_FRACTION * free
            self.mode = "resident" if resident else "pinned"
            if resident:
                self._upload_all()

    def _host(self, c0: int, c1: int):
        z, mask = self.read(c0, c1)
        return torch.as_tensor(np.asarray(z)), torch.as_tensor(np.asarray(mask, dtype=bool))

    def _upload_all(self) -> None:
        z_parts, m_parts = [], []
        for c0 in range(0, self.n_rows, self.block_rows):
            z, m = self._to_device(*self._host(c0, min(self.n_rows, c0 + self.block_rows)))
            z_parts.append(z)
            m_parts.append(m)
        self._z, self._mask = torch.cat(z_parts), torch.cat(m_parts)
        torch.cuda.synchronize(self.device)
        self._pinned = []  # staging buffers are not needed any more

    def _to_device(self, z: torch.Tensor, m: torch.Tensor):
        """Stage ``z``/``m`` in the next pinned buffer pair and copy them to the device asynchronously."""
        rows = z.shape[0]
        if len(self._pinned) < 2 or self._pinned[0][0].shape[0] < rows or self._pinned[0][0].shape[1:] != z.shape[1:] \
                or self._pinned[0][0].dtype != z.dtype:
            size = max(rows, self.block_rows)
            self._pinned = [(torch.empty((size, *z.shape[1:]), dtype=z.dtype).pin_memory(),
                             torch.empty((size, *m.shape[1:]), dtype=m.dtype).pin_memory(), None) for _ in range(2)]
        zbuf, mbuf, event = self._pinned[self._turn]
        if event is not None:
            event.synchronize()  # the previous copy out of this buffer has finished
        zbuf[:rows].copy_(z)
        mbuf[:rows].copy_(m)
        z_dev = zbuf[:rows].to(self.device, non_blocking=True)
        m_dev = mbuf[:rows].to(self.device, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        self._pinned[self._turn] = (zbuf, mbuf, done)
        self._turn = 1 - self._turn
        return z_dev, m_dev

    def get(self, c0: int, c1: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "resident":
            return self._z[c0:c1], self._mask[c0:c1]
        if self.mode == "host" and self.lazy_rows is not None:  # wide rows: read block by block in the tile
            return self.lazy_rows.rows(c0, c1), torch.as_tensor(np.asarray(self.lazy_rows.read_mask(c0, c1), dtype=bool))
        z, m = self._host(c0, c1)
        if self.mode == "pinned":
            return self._to_device(z, m)
        return z, m


COPY_BYTES_PER_VALUE = 8  # float32 copy of a block's rows and its augmented matmul operand


def _block_shape(tile_q: int, tile_c: int, u: int, v: int, memory_mb: float, dim: int = 0) -> tuple[int, int]:
    """Query and candidate tracks per block: segment-pair workspace within ``memory_mb``, and (with
    ``dim``) the blocks' float32 copies within half of it (they dominate for wide embeddings)."""
    pairs = max(1, int(memory_mb * 2**20 // (u * v * BYTES_PER_SEGMENT_PAIR)))
    bq = max(1, min(tile_q, int(math.sqrt(pairs))))
    bc = max(1, min(tile_c, pairs // bq))
    if dim:
        copies = max(1, int(memory_mb * 2**20 / 2 // ((u + v) * (dim + 2) * COPY_BYTES_PER_VALUE)))
        bq, bc = min(bq, copies), min(bc, copies)
    return bq, bc


class LazySource:
    """An embeddings source read by rows: ``rows(a, b)`` → :class:`RowReader`, ``read_mask(a, b)``."""

    def __init__(self, z, mask):
        self.z, self.mask = z, mask

    def rows(self, start: int, stop: int) -> "RowReader":
        return RowReader(lambda a, b: self.z[a:b], start, stop, tuple(self.z.shape[1:]), self.z.dtype)

    def read_mask(self, start: int, stop: int):
        return self.mask[start:stop]


class RowReader:
    """Rows ``[start, stop)`` of a host array read only when sliced (``reader[a:b]`` → tensor):
    a tile of wide embeddings is then never held whole, only the block being computed."""

    def __init__(self, read: Callable[[int, int], np.ndarray], start: int, stop: int, row_shape: tuple, dtype):
        self.read, self.start = read, int(start)
        self.shape = (int(stop) - int(start), *row_shape)
        self.dtype = dtype

    def __getitem__(self, key: slice) -> torch.Tensor:
        a, b, _ = key.indices(self.shape[0])
        return torch.as_tensor(np.ascontiguousarray(self.read(self.start + a, self.start + b)))


def tile_distances(
    zq: torch.Tensor, mask_q: torch.Tensor, zc: torch.Tensor, mask_c: torch.Tensor, redux: Redux | str, memory_mb: float,
    device: str = "cpu", diagonal: bool = False, precision: str = "fp32",
) -> np.ndarray:
    """Reduced distances between every query and candidate track of one tile → (Q, C) float32.

    ``diagonal``: the tile's queries are its candidates and the reduction is symmetric, so only
    blocks on and above the diagonal are computed and the others mirrored. Inputs may already
    sit on ``device`` (no copy then); they are cast to float32 on the device. ``precision``:
    fp32 | tf32 | bf16 for the segment-distance matmul (see the module notes).
    """
    check_precision(precision)
    n_q, u, dim = zq.shape
    n_c, v, _ = zc.shape
    bq, bc = _block_shape(n_q, n_c, u, v, memory_mb, dim)
    if diagonal:
        bq = bc = max(1, int(math.sqrt(bq * bc)))
    redux = Redux.parse(redux)
    out = torch.empty(n_q, n_c, dtype=torch.float32)
    lowp = precision != "fp32"
    with torch.inference_mode(), _matmul_mode(precision):
        for q0 in range(0, n_q, bq):
            q_block = zq[q0 : q0 + bq].to(device, non_blocking=True).float()
            mq_block = mask_q[q0 : q0 + bq].to(device)
            for c0 in range(0, n_c, bc):
                if diagonal and c0 < q0:
                    continue
                c_block = zc[c0 : c0 + bc].to(device, non_blocking=True).float()
                mc_block = mask_c[c0 : c0 + bc].to(device)
                if lowp:
                    seg = lowp_segment_distances(q_block, c_block, mq_block, mc_block, precision)
                    red = reduce_distances(seg, redux) if redux.excludes_inf else reduce_distances(
                        seg.nan_to_num(posinf=0.0), redux, pair_mask(mq_block, mc_block))
                elif redux.excludes_inf:  # padding folded into the matmul as +inf distances
                    seg = cross_segment_distances(q_block, c_block, mq_block, mc_block)
                    red = reduce_distances(seg, redux)
                else:
                    seg = cross_segment_distances(q_block, c_block)
                    red = reduce_distances(seg, redux, pair_mask(mq_block, mc_block))
                out[q0 : q0 + bq, c0 : c0 + bc] = red.float().cpu()
    if diagonal:
        for q0 in range(0, n_q, bq):
            for c0 in range(0, q0, bc):
                out[q0 : q0 + bq, c0 : c0 + bc] = out[c0 : c0 + bc, q0 : q0 + bq].T
    return out.numpy()


def exact_pair_distances(
    zq: torch.Tensor, mask_q: torch.Tensor, zc: torch.Tensor, mask_c: torch.Tensor, redux: Redux | str,
    memory_mb: float = 256.0, device: str = "cpu",
) -> torch.Tensor:
    """Float32 reduced distance of each pair ``(zq[i], zc[i])`` → ``(P,)``: the augmented
    float32 matmul of :func:`cross_segment_distances` (``[-2q, |q|², 1]·[c, 1, |c|²] / D``) done
    as one batched matmul per batch of pairs (bounded by ``memory_mb``), then the reduction."""
    redux = Redux.parse(redux)
    n, u, dim = zq.shape
    v = zc.shape[1]
    batch = max(1, int(memory_mb * 2**20 // (u * v * BYTES_PER_SEGMENT_PAIR)))
    out = torch.empty(n, dtype=torch.float32)
    inf = float("inf")
    with torch.inference_mode():
        for p0 in range(0, n, batch):
            q = zq[p0 : p0 + batch].to(device).float()
            c = zc[p0 : p0 + batch].to(device).float()
            mq, mc = mask_q[p0 : p0 + batch].to(device), mask_c[p0 : p0 + batch].to(device)
            sq_q, sq_c = q.pow(2).sum(-1, keepdim=True), c.pow(2).sum(-1, keepdim=True)
            if redux.excludes_inf:
                sq_q, sq_c = sq_q.masked_fill(mq[..., None], inf), sq_c.masked_fill(mc[..., None], inf)
            aug_q = torch.cat([q * (-2.0 / dim), sq_q / dim, torch.ones_like(sq_q) / dim], dim=-1)
            aug_c = torch.cat([c, torch.ones_like(sq_c), sq_c], dim=-1)
            seg = torch.bmm(aug_q, aug_c.transpose(1, 2)).clamp_min_(0.0)  # (b, u, v)
            if redux.excludes_inf:
                red = reduce_distances(seg, redux)
            else:
                red = reduce_distances(seg, redux, (mq[:, :, None] | mc[:, None, :]))
            out[p0 : p0 + len(red)] = red.float().cpu()
    return out
