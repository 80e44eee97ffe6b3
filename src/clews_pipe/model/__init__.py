"""The CLEWS model: network, layers, its run configuration schema and checkpoints (used by training and evaluation)."""
