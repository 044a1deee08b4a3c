"""RMSprop (Hinton), with PyTorch's options: alpha, eps, weight decay, momentum, centered."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dlrun import functional as F
from dlrun.engine.tensor import Tensor
from dlrun.optim.optimizer import Optimizer


class RMSprop(Optimizer):
    """PyTorch's RMSprop.

    g = grad + weight_decay * p;  s = alpha s + (1 - alpha) g^2;  centered: a = alpha a +
    (1 - alpha) g and d = sqrt(s - a^2) + eps, else d = sqrt(s) + eps;  with momentum:
    b = momentum b + g / d and p = p - lr b, else p = p - lr g / d.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, maximize: bool = False) -> None:
        if not 0.0 <= alpha:
            raise ValueError(f"invalid alpha value: {alpha}")
        if not 0.0 <= eps:
            raise ValueError(f"invalid epsilon value: {eps}")
        if momentum < 0.0:
            raise ValueError(f"invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"invalid weight_decay value: {weight_decay}")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        state = {"step": self._scalar(p), "square_avg": self._zeros(p)}
        if group["momentum"] > 0.0:
            state["momentum_buffer"] = self._zeros(p)
        if group["centered"]:
            state["grad_avg"] = self._zeros(p)
        return state

    def _update(self, p: Tensor, group: dict[str, Any], state: dict[str, Tensor]) -> None:
        g = self._grad(p, group["maximize"])
        alpha, wd, lr = group["alpha"], group["weight_decay"], self._lr(group, p)
        if wd != 0.0:
            g = g + p * wd
        state["step"].copy_(state["step"] + 1.0)
        sq = state["square_avg"] * alpha + g * g * (1.0 - alpha)
        state["square_avg"].copy_(sq)
        if group["centered"]:
            ga = state["grad_avg"] * alpha + g * (1.0 - alpha)
            state["grad_avg"].copy_(ga)
            avg = F.sqrt(sq - ga * ga) + group["eps"]
        else:
            avg = F.sqrt(sq) + group["eps"]
        if group["momentum"] > 0.0:
            buf = state["momentum_buffer"] * group["momentum"] + g / avg
            state["momentum_buffer"].copy_(buf)
            p.copy_(p - lr * buf)
        else:
            p.copy_(p - lr * g / avg)
