"""Training: ``clews-pipe train``. ``loop`` is the Lightning Fabric loop (DDP, resume, stop
signals, checkpoints, metrics); ``dataset`` the memory-mapped shingle dataset, its epoch batch
sampler and the DataLoader; ``loss`` the CLEWS loss; ``validate`` the per-epoch validation and its
monitor; ``stop`` the stop-signal handling (SIGUSR1 / SIGTERM at a step boundary);
``weight_average`` the optional moving average of the weights (``training.ema_decay``).
"""
