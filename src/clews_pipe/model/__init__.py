"""The CLEWS model: ``network`` (the module tree of the published checkpoints), ``layers`` (its
blocks), ``run_config`` (the typed configuration schema of a run) and ``checkpoint`` (saving,
restricted loading, importing published checkpoints). Used by training and by embedding.
"""
