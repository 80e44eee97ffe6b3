"""Evaluation: the published protocols over an embeddings set, and the matrix they rank.

``evaluate`` runs the track- and segment-level protocols (which tracks query, which NAR is reported,
writing the evaluation folder through :mod:`clews_pipe.reporting`); ``distances`` computes the
tiled, resumable, rank-sharded distance matrix (``distances.zarr``); ``rank_rows`` has every rank
count the per-query results of its own rows of that matrix (``row_metrics``: counting, not
sorting) for rank 0 to gather; ``job`` is what ``clews-pipe
evaluate`` runs (checkpoint or embeddings in, evaluation folder out); ``wealy`` exports a matrix
in the layout lyrics-matching tools fuse and reads theirs (restricted unpickler); ``fuse``
evaluates A + alpha * B per alpha.
"""
