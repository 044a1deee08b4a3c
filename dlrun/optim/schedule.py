"""Learning-rate schedules that set `group['lr']` of an optimizer (PyTorch's names and formulas).

Schedulers run in eager code, outside a compiled step, once per epoch or per step (the caller
decides). Setting `group['lr']` also writes the group's 0-d tensor `lr_t`, which a compiled
`optimizer.step()` reads as state, so a new learning rate never causes a retrace.

Closed-form schedules implement `lr_at(epoch)`; `LinearWarmup` composes with any of them.

>>> import dlrun
>>> from dlrun import nn, optim
>>> opt = optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
>>> sched = optim.StepLR(opt, step_size=2, gamma=0.5)
>>> for epoch in range(4):
...     # train one epoch with opt ...
...     sched.step()
>>> sched.get_last_lr()
[0.025]
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from typing import Any

from dlrun.optim.optimizer import Optimizer


class LRScheduler:
    """Base of the closed-form schedules: lr of group i at `epoch` is `lr_at(epoch)[i]`."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            if "initial_lr" not in group:
                if last_epoch != -1:
                    raise KeyError("param 'initial_lr' is not specified in param_groups when "
                                   "resuming a scheduler (last_epoch != -1)")
                dict.__setitem__(group, "initial_lr", group["lr"])
        self.base_lrs = [float(g["initial_lr"]) for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._last_lr: list[float] = [float(g["lr"]) for g in optimizer.param_groups]
        self.step()

    def lr_at(self, epoch: int) -> list[float]:
        """The learning rate of every group at `epoch` (closed form)."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch (or step) and set the optimizer's learning rates."""
        self.last_epoch += 1
        self._set(self.lr_at(self.last_epoch))

    def _set(self, lrs: Sequence[float]) -> None:
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = float(lr)
        self._last_lr = [float(x) for x in lrs]

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able attributes (not the optimizer); nested schedulers as their own state_dict."""
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            if k == "optimizer" or callable(v):
                continue
            out[k] = v.state_dict() if isinstance(v, LRScheduler) else v
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for k, v in state_dict.items():
            cur = self.__dict__.get(k)
            if isinstance(cur, LRScheduler):
                cur.load_state_dict(v)
            else:
                self.__dict__[k] = list(v) if isinstance(v, tuple) else v


class ConstantLR(LRScheduler):
    """lr = base * factor for the first total_iters epochs, then base (factor=1: constant)."""

    def __init__(self, optimizer: Optimizer, factor: float = 1.0 / 3, total_iters: int = 5,
                 last_epoch: int = -1) -> None:
        if not 0.0 <= factor <= 1.0:
            raise ValueError("ConstantLR: factor must be between 0 and 1")
        self.factor, self.total_iters = float(factor), int(total_iters)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        f = self.factor if epoch < self.total_iters else 1.0
        return [b * f for b in self.base_lrs]


class LambdaLR(LRScheduler):
    """lr = base * lr_lambda(epoch)."""

    def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float],
                 last_epoch: int = -1) -> None:
        self.lr_lambda = lr_lambda
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        return [b * float(self.lr_lambda(epoch)) for b in self.base_lrs]


class StepLR(LRScheduler):
    """lr = base * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        if int(step_size) <= 0:
            raise ValueError(f"StepLR: step_size must be positive, got {step_size}")
        self.step_size, self.gamma = int(step_size), float(gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        return [b * self.gamma ** (epoch // self.step_size) for b in self.base_lrs]


class MultiStepLR(LRScheduler):
    """lr = base * gamma ** (number of milestones <= epoch)."""

    def __init__(self, optimizer: Optimizer, milestones: Sequence[int], gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        self.milestones, self.gamma = sorted(int(m) for m in milestones), float(gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        k = bisect.bisect_right(self.milestones, epoch)
        return [b * self.gamma**k for b in self.base_lrs]


class ExponentialLR(LRScheduler):
    """lr = base * gamma ** epoch."""

    def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        return [b * self.gamma**epoch for b in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base - eta_min) * (1 + cos(pi * epoch / T_max)) / 2 (SGDR, no restarts)."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0,  # noqa: N803
                 last_epoch: int = -1) -> None:
        if int(T_max) <= 0:
            raise ValueError(f"CosineAnnealingLR: T_max must be positive, got {T_max}")
        self.T_max, self.eta_min = int(T_max), float(eta_min)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        c = (1.0 + math.cos(math.pi * epoch / self.T_max)) / 2.0
        return [self.eta_min + (b - self.eta_min) * c for b in self.base_lrs]


class WarmupCosineLR(LRScheduler):
    """nanoGPT's get_lr: linear warm-up, cosine decay to `min_lr` at `decay_steps`, then flat.

    lr(e) = base * (e + 1) / (warmup_steps + 1)                                 e < warmup_steps
    lr(e) = min_lr + (base - min_lr) * (1 + cos(pi * (e - W) / (D - W))) / 2   W <= e <= D
    lr(e) = min_lr                                                              e > D

    with W = warmup_steps and D = decay_steps (nanoGPT's warmup_iters and lr_decay_iters).
    Without warm-up this is CosineAnnealingLR(T_max=D) up to D, but it stays at min_lr after
    D instead of rising again.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, decay_steps: int,
                 min_lr: float = 0.0, last_epoch: int = -1) -> None:
        if int(warmup_steps) < 0:
            raise ValueError(f"WarmupCosineLR: warmup_steps must be >= 0, got {warmup_steps}")
        if int(decay_steps) <= int(warmup_steps):
            raise ValueError(f"WarmupCosineLR: decay_steps ({decay_steps}) must be greater than "
                             f"warmup_steps ({warmup_steps})")
        if float(min_lr) < 0.0:
            raise ValueError(f"WarmupCosineLR: min_lr must be >= 0, got {min_lr}")
        self.warmup_steps, self.decay_steps = int(warmup_steps), int(decay_steps)
        self.min_lr = float(min_lr)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        w, d, lo = self.warmup_steps, self.decay_steps, self.min_lr
        if epoch < w:
            return [b * (epoch + 1) / (w + 1) for b in self.base_lrs]
        if epoch > d:
            return [lo for _ in self.base_lrs]
        coeff = 0.5 * (1.0 + math.cos(math.pi * (epoch - w) / (d - w)))
        return [lo + coeff * (b - lo) for b in self.base_lrs]


class LinearWarmup(LRScheduler):
    """Linear warm-up over `warmup_steps`, then another closed-form schedule (or constant).

    lr(e) = base * (start_factor + (1 - start_factor) * e / warmup_steps) for e < warmup_steps,
    then `after.lr_at(e - warmup_steps)` (or base when `after` is None). Build `after` on the same
    optimizer first, then wrap it: `LinearWarmup(opt, 5, after=CosineAnnealingLR(opt, 50))`, and
    call only the wrapper's step().
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int,
                 after: LRScheduler | None = None, start_factor: float = 0.1,
                 last_epoch: int = -1) -> None:
        if int(warmup_steps) < 0:
            raise ValueError(f"LinearWarmup: warmup_steps must be >= 0, got {warmup_steps}")
        if not 0.0 <= start_factor <= 1.0:
            raise ValueError("LinearWarmup: start_factor must be between 0 and 1")
        if after is not None and (not isinstance(after, LRScheduler)
                                  or after.optimizer is not optimizer):
            raise ValueError("LinearWarmup: `after` must be a closed-form scheduler of the same "
                             "optimizer")
        self.warmup_steps, self.start_factor, self.after = int(warmup_steps), float(
            start_factor), after
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch: int) -> list[float]:
        if epoch < self.warmup_steps:
            f = self.start_factor + (1.0 - self.start_factor) * epoch / self.warmup_steps
            return [b * f for b in self.base_lrs]
        if self.after is None:
            return list(self.base_lrs)
        return self.after.lr_at(epoch - self.warmup_steps)

    def step(self) -> None:
        super().step()
        if self.after is not None:
            self.after.last_epoch = max(self.last_epoch - self.warmup_steps, 0)
            self.after._last_lr = list(self._last_lr)


class ReduceLROnPlateau:
    """Multiply the lr by `factor` when a metric has not improved for `patience` epochs.

    `step(metric)` takes the metric as a float (or a concrete 0-d tensor), in eager code.
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float | Sequence[float] = 0.0,
                 eps: float = 1e-8) -> None:
        if factor >= 1.0:
            raise ValueError("ReduceLROnPlateau: factor should be < 1.0")
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau: mode {mode!r} is unknown (min or max)")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceLROnPlateau: threshold_mode {threshold_mode!r} is unknown")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.optimizer = optimizer
        n = len(optimizer.param_groups)
        if isinstance(min_lr, Sequence):
            if len(min_lr) != n:
                raise ValueError(f"ReduceLROnPlateau: expected {n} min_lrs, got {len(min_lr)}")
            self.min_lrs = [float(x) for x in min_lr]
        else:
            self.min_lrs = [float(min_lr)] * n
        self.mode, self.factor, self.patience = mode, float(factor), int(patience)
        self.threshold, self.threshold_mode = float(threshold), threshold_mode
        self.cooldown, self.eps = int(cooldown), float(eps)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0
        self._last_lr = [float(g["lr"]) for g in optimizer.param_groups]

    def _is_better(self, a: float, best: float) -> bool:
        if self.mode == "min":
            limit = best * (1.0 - self.threshold) if self.threshold_mode == "rel" else (
                best - self.threshold)
            return a < limit
        limit = best * (1.0 + self.threshold) if self.threshold_mode == "rel" else (
            best + self.threshold)
        return a > limit

    def step(self, metrics: Any) -> None:
        current = float(metrics)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs, strict=True):
                old = float(group["lr"])
                new = max(old * self.factor, min_lr)
                if old - new > self.eps:
                    group["lr"] = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [float(g["lr"]) for g in self.optimizer.param_groups]

    @property
    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.__dict__.update(state_dict)


__all__ = [
    "LRScheduler", "ConstantLR", "LambdaLR", "StepLR", "MultiStepLR", "ExponentialLR",
    "CosineAnnealingLR", "WarmupCosineLR", "LinearWarmup", "ReduceLROnPlateau",
]
