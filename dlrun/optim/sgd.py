"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (PyTorch's)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dlrun import functional as F
from dlrun.engine.tensor import Tensor
from dlrun.optim.optimizer import Optimizer


class SGD(Optimizer):
    """PyTorch's SGD.

    g = grad + weight_decay * p;  with momentum: b = momentum * b + (1 - dampening) * g (b = g on
    the first step), g = g + momentum * b if nesterov else b;  p = p - lr * g.

    The momentum buffer starts at zero, so `momentum * b` vanishes on the first step and b = g
    exactly; with dampening a per-parameter step count turns (1 - dampening) into 1 on step one.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 maximize: bool = False) -> None:
        if momentum < 0.0:
            raise ValueError(f"invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        if group["momentum"] == 0.0:
            return ()
        return ("momentum_buffer", "step") if group["dampening"] != 0.0 else ("momentum_buffer",)

    def _flat_update(self, p: Tensor, g: Tensor, group: dict[str, Any],
                     state: dict[str, Tensor], step: Tensor | None
                     ) -> tuple[Tensor, dict[str, Tensor]]:
        wd, momentum, dampening = group["weight_decay"], group["momentum"], group["dampening"]
        if wd != 0.0:
            g = g + p * wd
        new = {}
        if momentum != 0.0:
            buf = state["momentum_buffer"]
            if dampening != 0.0:
                # 1 - dampening from the second step on, 1 on the first (PyTorch: buf = grad);
                # step is the count after this step
                new_buf = buf * momentum + g * (1.0 - F.minimum(step - 1.0, 1.0) * dampening)
            else:
                new_buf = buf * momentum + g
            new["momentum_buffer"] = new_buf
            g = g + new_buf * momentum if group["nesterov"] else new_buf
        return p - self._lr(group, p) * g, new
