"""RMSprop (Hinton), with PyTorch's options: alpha, eps, weight decay, momentum, centered."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dlrun import functional as F
from dlrun.engine.tensor import Tensor
from dlrun.optim.hyperparameters import OPTIMIZERS, NonNegative
from dlrun.optim.optimizer import Optimizer


@OPTIMIZERS.register("rmsprop", doc="RMSprop with `alpha`, `eps`, `momentum` "
                                    "(torch.optim.RMSprop)")
class RMSprop(Optimizer):
    """PyTorch's RMSprop.

    g = grad + weight_decay * p;  s = alpha s + (1 - alpha) g^2;  centered: a = alpha a +
    (1 - alpha) g and d = sqrt(s - a^2) + eps, else d = sqrt(s) + eps;  with momentum:
    b = momentum b + g / d and p = p - lr b, else p = p - lr g / d.
    """

    def __init__(self, params: Iterable[Any], lr: NonNegative = 1e-2, alpha: NonNegative = 0.99,
                 eps: NonNegative = 1e-8, weight_decay: NonNegative = 0.0,
                 momentum: NonNegative = 0.0, centered: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered, maximize=maximize))

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        momentum = ("momentum_buffer",) if group["momentum"] > 0.0 else ()
        centered = ("grad_avg",) if group["centered"] else ()
        return ("step", "square_avg", *momentum, *centered)

    def _flat_update(self, p: Tensor, g: Tensor, group: dict[str, Any],
                     state: dict[str, Tensor], step: Tensor | None
                     ) -> tuple[Tensor, dict[str, Tensor]]:
        alpha, wd, lr = group["alpha"], group["weight_decay"], self._lr(group, p)
        if wd != 0.0:
            g = g + p * wd
        sq = state["square_avg"] * alpha + g * g * (1.0 - alpha)
        new = {"square_avg": sq}
        if group["centered"]:
            ga = new["grad_avg"] = state["grad_avg"] * alpha + g * (1.0 - alpha)
            avg = F.sqrt(sq - ga * ga) + group["eps"]
        else:
            avg = F.sqrt(sq) + group["eps"]
        if group["momentum"] > 0.0:
            buf = new["momentum_buffer"] = state["momentum_buffer"] * group["momentum"] + g / avg
            return p - lr * buf, new
        return p - lr * g / avg, new
