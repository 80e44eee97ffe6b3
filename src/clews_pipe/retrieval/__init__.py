"""Retrieval maths shared by the loss, validation and evaluation: segment distances, reductions, the bpwr kernel, per-query metrics."""
