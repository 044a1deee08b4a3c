"""Config -> the parts of a run: optimizer, schedule, loss function (from the registries of
dlrun.optimization)."""

from __future__ import annotations

from typing import Any

from dlrun import optim
from dlrun.config import ExperimentConfig
from dlrun.engine.tensor import Tensor
from dlrun.optimization import LOSSES, OPTIMIZERS, SCHEDULES, LossFn

DEFAULT_LOSS = {"classification": "cross_entropy", "language_model": "cross_entropy",
                "regression": "mse"}


def build_optimizer(cfg: ExperimentConfig, params: list[Tensor]) -> optim.Optimizer:
    """The optimizer of cfg.optimizer; with `decay: matrices` (and weight decay), two groups:
    parameters with >= 2 dimensions decay, the others do not (see optim.decay_groups)."""
    o = cfg.optimizer
    groups: list[Any] = list({id(p): p for p in params}.values())  # tied weights once
    if o.decay == "matrices" and o.weight_decay > 0:
        groups = optim.decay_groups(groups, o.weight_decay)
    return OPTIMIZERS[o.name](groups, **o.hyperparameters())


def build_scheduler(cfg: ExperimentConfig, opt: optim.Optimizer, total: int) -> Any:
    """The schedule (see dlrun.optimization.SCHEDULES); `total` is the number of schedule steps
    (epochs or steps by interval)."""
    return SCHEDULES[cfg.schedule.name](cfg.schedule, opt, total)


def loss_function(name: str, task: str, label_smoothing: float) -> LossFn:
    """(outputs, targets) -> scalar loss tensor, for the loss name and task."""
    return LOSSES[name](task, label_smoothing)
