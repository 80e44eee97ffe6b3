"""CLEWS model, loss, batch construction, Fabric loop, checkpoints."""
