"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay (PyTorch's)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dlrun import functional as F
from dlrun.engine.tensor import Tensor
from dlrun.optim.hyperparameters import OPTIMIZERS, HyperparameterError, NonNegative
from dlrun.optim.optimizer import Optimizer


@OPTIMIZERS.register("sgd", doc="SGD with `momentum`, `dampening`, `nesterov` (torch.optim.SGD)")
class SGD(Optimizer):
    """PyTorch's SGD.

    g = grad + weight_decay * p;  with momentum: b = momentum * b + (1 - dampening) * g (b = g on
    the first step), g = g + momentum * b if nesterov else b;  p = p - lr * g.

    The momentum buffer starts at zero, so `momentum * b` vanishes on the first step and b = g
    exactly; with dampening a per-parameter step count turns (1 - dampening) into 1 on step one.
    """

    def __init__(self, params: Iterable[Any], lr: NonNegative = 1e-3,
                 momentum: NonNegative = 0.0, dampening: NonNegative = 0.0,
                 weight_decay: NonNegative = 0.0, nesterov: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    @staticmethod
    def _check_hyperparameters(values: Any) -> None:
        if values.get("nesterov") and (values.get("momentum", 0) <= 0
                                       or values.get("dampening", 0) != 0):
            raise HyperparameterError("nesterov", "needs momentum > 0 and dampening 0")

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
