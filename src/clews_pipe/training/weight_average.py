"""An exponential moving average of the network's weights (``training.ema_decay``).

Every optimiser step moves the average ``a ← d·a + (1 − d)·w`` towards the trained weights ``w``
(parameters and BatchNorm statistics alike), with torch's own
:class:`torch.optim.swa_utils.AveragedModel` and its EMA update: nothing here is hand-written
maths. The average is what validation scores and what ``checkpoint_best`` / ``checkpoint_last``
hold as ``"model"`` (so ``evaluate`` and ``embed`` use it unchanged); the trained weights travel
beside it as ``"training_model"`` so that a resume continues both (docs/clews-method.md,
"Training batches, schedule and augmentations").
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

#: checkpoint keys: the trained (not averaged) weights and how many steps the average has seen
TRAINED_KEY = "training_model"
STEPS_KEY = "ema_steps"


def make_average(model: torch.nn.Module, decay: float, device) -> AveragedModel | None:
    """The running average of ``model`` (a copy, on ``device``), or None when ``decay`` is 0."""
    if float(decay) <= 0:
        return None
    return AveragedModel(model, device=device, multi_avg_fn=get_ema_multi_avg_fn(float(decay)), use_buffers=True)


def evaluated_network(model, average: AveragedModel | None):
    """The network that validation scores and checkpoints store as ``"model"``."""
    return model if average is None else average.module


def checkpoint_entries(trained_state: dict, average: AveragedModel | None) -> dict:
    """The checkpoint's weight entries: ``model`` (the average when there is one), and with an
    average also the trained weights and the step count."""
    if average is None:
        return {"model": trained_state}
    averaged = {k: v.detach().cpu() for k, v in average.module.state_dict().items()}
    return {"model": averaged, TRAINED_KEY: trained_state, STEPS_KEY: int(average.n_averaged)}


def restore(model: torch.nn.Module, average: AveragedModel | None, state: dict) -> None:
    """Load a checkpoint's weights into the trained network and, when averaging, the average."""
    if average is None:
        model.load_state_dict(state.get(TRAINED_KEY, state["model"]))
        return
    if TRAINED_KEY in state:
        model.load_state_dict(state[TRAINED_KEY])
        average.module.load_state_dict(state["model"])
        average.n_averaged.fill_(int(state.get(STEPS_KEY, 1)))
    else:  # a checkpoint written without an average: start averaging from its weights
        model.load_state_dict(state["model"])
        average.module.load_state_dict(state["model"])
        average.n_averaged.fill_(1)
