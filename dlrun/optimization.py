"""What a config's `optimizer`, `schedule` and `loss` names mean: three registries (OPTIMIZERS,
SCHEDULES, LOSSES), each name with what builds it from its config section.

The config schema takes its choices from here and the README's tables are checked against
`markdown()`. OPTIMIZERS holds the optimizer classes themselves (dlrun/optim/hyperparameters.py):
a new optimizer is one decorated class in dlrun/optim whose signature is its config section.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dlrun import functional as F
from dlrun import optim
from dlrun.engine.tensor import Tensor
from dlrun.errors import ConfigError
from dlrun.optim.hyperparameters import OPTIMIZERS
from dlrun.registry import Registry

if TYPE_CHECKING:
    from dlrun.config.schema import ScheduleConfig

__all__ = ["OPTIMIZERS", "SCHEDULES", "LOSSES", "LossFn"]

LossFn = Callable[[Tensor, Tensor], Tensor]

# (the schedule section, the optimizer, the number of schedule steps) -> a scheduler or None
SCHEDULES: Registry[Callable[[ScheduleConfig, optim.Optimizer, int], Any]] = Registry("schedule")
# (the task, label smoothing) -> (outputs, targets) -> scalar loss
LOSSES: Registry[Callable[[str, float], LossFn]] = Registry("loss")


# --------------------------------------------------------------------------- schedules


def _after_warmup(s: ScheduleConfig, opt: optim.Optimizer, main: Any) -> Any:
    """`main` after nanoGPT's warm-up, lr * (k + 1) / (warmup_steps + 1) at step k."""
    if s.warmup_steps:
        return optim.LinearWarmup(opt, s.warmup_steps, after=main,
                                  start_factor=1.0 / (s.warmup_steps + 1))
    return main


@SCHEDULES.register("constant", doc="the optimizer's `lr` throughout (after any warm-up)")
def _constant(s: ScheduleConfig, opt: optim.Optimizer, total: int) -> Any:
    return _after_warmup(s, opt, None)


@SCHEDULES.register("step", doc="lr x `gamma` every `step_size` epochs or steps (StepLR)")
def _step(s: ScheduleConfig, opt: optim.Optimizer, total: int) -> Any:
    return _after_warmup(s, opt, optim.StepLR(opt, step_size=s.step_size, gamma=s.gamma))


@SCHEDULES.register("multistep", doc="lr x `gamma` at each of `milestones` (MultiStepLR)")
def _multistep(s: ScheduleConfig, opt: optim.Optimizer, total: int) -> Any:
    return _after_warmup(s, opt, optim.MultiStepLR(opt, milestones=list(s.milestones),
                                                   gamma=s.gamma))


@SCHEDULES.register("exponential", doc="lr x `gamma` every epoch or step (ExponentialLR)")
def _exponential(s: ScheduleConfig, opt: optim.Optimizer, total: int) -> Any:
    return _after_warmup(s, opt, optim.ExponentialLR(opt, gamma=s.gamma))


@SCHEDULES.register("cosine", doc="nanoGPT's: warm-up, cosine to `min_lr` at `decay_steps` "
                                  "(default: the end), then flat")
def _cosine(s: ScheduleConfig, opt: optim.Optimizer, total: int) -> Any:
    end = s.decay_steps or (s.warmup_steps + s.t_max if s.t_max else total)
    return optim.WarmupCosineLR(opt, s.warmup_steps, max(end, s.warmup_steps + 1),
                                min_lr=s.min_lr)


@SCHEDULES.register("plateau", doc="lr x `factor` when val_loss has not improved for `patience` "
                                   "epochs (ReduceLROnPlateau)")
def _plateau(s: ScheduleConfig, opt: optim.Optimizer, total: int) -> Any:
    if s.warmup_steps:
        raise ConfigError("schedule.warmup_steps: cannot be combined with 'plateau'")
    return optim.ReduceLROnPlateau(opt, mode="min", factor=s.factor, patience=s.patience,
                                   min_lr=s.min_lr)


# --------------------------------------------------------------------------- losses


@LOSSES.register("cross_entropy", doc="softmax cross-entropy on logits, with "
                                      "`label_smoothing` (classification, language models)")
def _cross_entropy(task: str, label_smoothing: float) -> LossFn:
    def ce(out: Tensor, y: Tensor) -> Tensor:
        if out.ndim == 3:  # language model: (B, T, V) logits, (B, T) targets
            out, y = out.reshape(-1, out.shape[-1]), y.reshape(-1)
        return F.cross_entropy(out, y, label_smoothing=label_smoothing)
    return ce


@LOSSES.register("mse", doc="mean squared error (regression)")
def _mse(task: str, label_smoothing: float) -> LossFn:
    return lambda out, y: F.mse_loss(out, y.reshape(*out.shape))


@LOSSES.register("l1", doc="mean absolute error (regression)")
def _l1(task: str, label_smoothing: float) -> LossFn:
    return lambda out, y: F.l1_loss(out, y.reshape(*out.shape))


@LOSSES.register("bce_with_logits", doc="binary cross-entropy on logits")
def _bce_with_logits(task: str, label_smoothing: float) -> LossFn:
    return lambda out, y: F.binary_cross_entropy_with_logits(out, y.reshape(*out.shape))


@LOSSES.register("nll", doc="negative log-likelihood of log_softmax(logits)")
def _nll(task: str, label_smoothing: float) -> LossFn:
    return lambda out, y: F.nll_loss(F.log_softmax(out, 1), y)
