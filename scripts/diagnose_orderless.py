"""Measure how much a matcher that ignores temporal order can reach on a store split: each track
becomes one orderless vector, the median over its chroma patches of the 2-D Fourier transform
magnitude (Bertin-Mahieux & Ellis 2012, "Large-scale cover song recognition using the 2D Fourier
transform magnitude": invariant to key and to time shifts inside a patch), written as an
embeddings file that ``clews-pipe evaluate --embeddings`` ranks like a model's.

    PYTHONPATH=src python scripts/diagnose_orderless.py STORE --split test --out eval-orderless

CLEWS pools each 20 s shingle into one vector (GeM over time and frequency) and compares shingle
sets; this puts a number on what orderless summaries of such length can do on a corpus, beside
the sequence-aligning Qmax baseline (``clews-pipe baseline``; ``--m 1`` removes its local order).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def orderless_vector(chroma: np.ndarray, patch: int) -> np.ndarray:
    if chroma.shape[0] < patch:
        chroma = np.tile(chroma, (-(-patch // chroma.shape[0]), 1))
    starts = range(0, chroma.shape[0] - patch + 1, max(1, patch // 4))
    mags = [np.abs(np.fft.fft2(chroma[s:s + patch].T)).ravel() for s in starts]
    v = np.sqrt(np.median(np.stack(mags), axis=0))
    return v / (np.linalg.norm(v) + 1e-12)


def main(argv=None) -> int:
    from clews_pipe.baseline.chroma import chroma_from_cqt
    from clews_pipe.embeddings.from_store import evaluated_tracks
    from clews_pipe.embeddings.npz_format import Embeddings, save_embeddings
    from clews_pipe.store import open_store
    from clews_pipe.retrieval.protocol_options import Protocol

    parser = argparse.ArgumentParser()
    parser.add_argument("store")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", default="eval-orderless")
    parser.add_argument("--patch", type=int, default=40, help="chroma frames per patch (2 frames/s: 40 = 20 s)")
    args = parser.parse_args(argv)
    store = open_store(args.store)
    rows = evaluated_tracks(store.tracks(args.split), Protocol.parse("clews"))
    tracks = np.asarray(rows.index.astype(str))
    names = np.asarray(rows["clique"].astype(str))
    z = np.stack([orderless_vector(chroma_from_cqt(store.read(t), 5), args.patch) for t in tracks])[:, None, :]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _, clique = np.unique(names, return_inverse=True)
    save_embeddings(out / "orderless.npz", Embeddings(z=z.astype(np.float32), mask=np.zeros(z.shape[:2], bool),
                                                      clique=clique.astype(np.int64), track=tracks, clique_name=names))
    print(f"clews-pipe evaluate --embeddings {out / 'orderless.npz'} --redux min --out {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
