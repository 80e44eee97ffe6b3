"""The config section ``augment:`` of a training run: the one declaration of the CQ augmentation defaults.

Defaults are the published Discogs-VI probabilities (docs/clews-method.md, "Training batches": 0.1 each; SHS100K uses 0.4 / 0.3 /
0.5, set in ``configs/shs-clews.yaml``). Torch-free so configs load without importing torch;
:class:`clews_pipe.features.augment.AugmentParams` is built from this section and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SpecAugmentConfig:
    p: float = 0.1
    max_freq: float = 0.15  # fraction of the bins set to 0 at most
    max_time: float = 0.15  # fraction of the frames set to 0 at most


@dataclass
class TimeStretchConfig:
    p: float = 0.1
    min: float = 0.6
    max: float = 1.8


@dataclass
class PitchRollConfig:
    p: float = 0.1
    max: int = 12  # bins


@dataclass
class AugmentConfig:
    specaugment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    timestretch: TimeStretchConfig = field(default_factory=TimeStretchConfig)
    pitchroll: PitchRollConfig = field(default_factory=PitchRollConfig)
