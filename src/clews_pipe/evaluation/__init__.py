"""Reductions, tiled distance matrices, metrics, track- and segment-level protocols."""
