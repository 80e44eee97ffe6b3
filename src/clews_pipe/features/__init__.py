"""Features: the exact CQT of the published model and the CQ-domain augmentations.

``cqt`` builds nnAudio's CQT1992v2 + pooling; ``cqt_params`` is its parameter record (checked
between a store and a checkpoint); ``cqt_trimmed`` computes it over a whole track in one pass;
``augment`` applies SpecAugment, time stretch and pitch roll to a batch on its device, with
``augment_config`` their settings.
"""
