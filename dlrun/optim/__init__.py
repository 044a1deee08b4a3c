"""Optimizers, learning-rate schedules and gradient clipping, with PyTorch's names and formulas.

Every optimizer keeps its state as tensors created in `__init__` and updates parameters with
`copy_` under no_grad, so `optimizer.step()` inside `dlrun.compile` becomes state writes.

>>> import dlrun
>>> from dlrun import nn, optim
>>> model = nn.Linear(3, 1)
>>> opt = optim.Adam(model.parameters(), lr=1e-2)
>>> model(dlrun.randn(4, 3)).pow(2).mean().backward()
>>> opt.step(); opt.zero_grad()
"""

from dlrun.optim import schedule as lr_scheduler  # PyTorch's module name
from dlrun.optim.adam import Adam, AdamW
from dlrun.optim.clip import clip_grad_norm_, clip_grad_value_
from dlrun.optim.groups import decay_groups
from dlrun.optim.optimizer import Optimizer, ParamGroup
from dlrun.optim.rmsprop import RMSprop
from dlrun.optim.schedule import (
    ConstantLR,
    CosineAnnealingLR,
    ExponentialLR,
    LambdaLR,
    LinearWarmup,
    LRScheduler,
    MultiStepLR,
    ReduceLROnPlateau,
    StepLR,
    WarmupCosineLR,
)
from dlrun.optim.sgd import SGD

__all__ = [
    "Optimizer", "ParamGroup", "SGD", "Adam", "AdamW", "RMSprop", "LRScheduler", "ConstantLR",
    "LambdaLR", "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "WarmupCosineLR",
    "LinearWarmup", "ReduceLROnPlateau", "clip_grad_norm_", "clip_grad_value_", "decay_groups",
    "lr_scheduler",
]
