"""Config -> the parts of a run: optimizer, schedule, loss function."""

from __future__ import annotations

from typing import Any

from dlrun import functional as F
from dlrun import optim
from dlrun.config import ExperimentConfig
from dlrun.engine.tensor import Tensor
from dlrun.errors import ConfigError

DEFAULT_LOSS = {"classification": "cross_entropy", "language_model": "cross_entropy",
                "regression": "mse"}


def build_optimizer(cfg: ExperimentConfig, params: list[Tensor]) -> optim.Optimizer:
    """The optimizer of cfg.optimizer; with `decay: matrices` (and weight decay), two groups:
    parameters with >= 2 dimensions decay, the others do not (see optim.decay_groups)."""
    o = cfg.optimizer
    groups: list[Any] = list({id(p): p for p in params}.values())  # tied weights once
    if o.decay == "matrices" and o.weight_decay > 0:
        groups = optim.decay_groups(groups, o.weight_decay)
    if o.name == "sgd":
        return optim.SGD(groups, lr=o.lr, momentum=o.momentum, dampening=o.dampening,
                         weight_decay=o.weight_decay, nesterov=o.nesterov)
    if o.name in ("adam", "adamw"):
        cls = optim.Adam if o.name == "adam" else optim.AdamW
        return cls(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    if o.name == "rmsprop":
        return optim.RMSprop(groups, lr=o.lr, alpha=o.alpha, eps=o.eps,
                             weight_decay=o.weight_decay, momentum=o.momentum)
    raise ConfigError(f"optimizer.name: unknown optimizer {o.name!r}")


def build_scheduler(cfg: ExperimentConfig, opt: optim.Optimizer, total: int) -> Any:
    """The schedule; `total` is the number of schedule steps (epochs or steps by interval).

    Warm-up is nanoGPT's, lr * (k + 1) / (warmup_steps + 1) at step k; `cosine` is nanoGPT's
    get_lr (optim.WarmupCosineLR) down to min_lr at decay_steps (default: `total`).
    """
    s = cfg.schedule
    main: Any
    if s.name == "cosine":
        end = s.decay_steps or (s.warmup_steps + s.t_max if s.t_max else total)
        return optim.WarmupCosineLR(opt, s.warmup_steps, max(end, s.warmup_steps + 1),
                                    min_lr=s.min_lr)
    if s.name == "constant":
        main = None
    elif s.name == "step":
        main = optim.StepLR(opt, step_size=s.step_size, gamma=s.gamma)
    elif s.name == "multistep":
        main = optim.MultiStepLR(opt, milestones=list(s.milestones), gamma=s.gamma)
    elif s.name == "exponential":
        main = optim.ExponentialLR(opt, gamma=s.gamma)
    elif s.name == "plateau":
        if s.warmup_steps:
            raise ConfigError("schedule.warmup_steps: cannot be combined with 'plateau'")
        return optim.ReduceLROnPlateau(opt, mode="min", factor=s.factor, patience=s.patience,
                                       min_lr=s.min_lr)
    else:
        raise ConfigError(f"schedule.name: unknown schedule {s.name!r}")
    if s.warmup_steps:
        return optim.LinearWarmup(opt, s.warmup_steps, after=main,
                                  start_factor=1.0 / (s.warmup_steps + 1))
    return main


def loss_function(name: str, task: str, label_smoothing: float) -> Any:
    """(outputs, targets) -> scalar loss tensor, for the loss name and task."""
    if name == "cross_entropy":
        def ce(out: Tensor, y: Tensor) -> Tensor:
            if out.ndim == 3:  # language model: (B, T, V) logits, (B, T) targets
                out, y = out.reshape(-1, out.shape[-1]), y.reshape(-1)
            return F.cross_entropy(out, y, label_smoothing=label_smoothing)
        return ce
    if name == "nll":
        return lambda out, y: F.nll_loss(F.log_softmax(out, 1), y)
    if name in ("mse", "l1"):
        fn = F.mse_loss if name == "mse" else F.l1_loss
        return lambda out, y: fn(out, y.reshape(*out.shape))
    if name == "bce_with_logits":
        return lambda out, y: F.binary_cross_entropy_with_logits(out, y.reshape(*out.shape))
    raise ConfigError(f"loss.name: unknown loss {name!r}")
