"""Adam and AdamW (decoupled weight decay), with optional AMSGrad, as PyTorch computes them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dlrun import functional as F
from dlrun.engine.tensor import Tensor
from dlrun.optim.hyperparameters import OPTIMIZERS, Betas, NonNegative
from dlrun.optim.optimizer import Optimizer


@OPTIMIZERS.register("adam", doc="Adam with `betas`, `eps`; L2 `weight_decay` (torch.optim.Adam)")
class Adam(Optimizer):
    """Adam (Kingma & Ba), PyTorch's form.

    g = grad + weight_decay * p (L2; AdamW decays p instead);  m = b1 m + (1 - b1) g;
    v = b2 v + (1 - b2) g^2;  v_max = max(v_max, v) with amsgrad;
    p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).

    The step count t is a 0-d tensor in the state and the bias corrections are tensor ops, so a
    compiled step computes them from the current t instead of baking in the first one.
    """

    _decoupled = False

    def __init__(self, params: Iterable[Any], lr: NonNegative = 1e-3,
                 betas: Betas = (0.9, 0.999), eps: NonNegative = 1e-8,
                 weight_decay: NonNegative = 0.0, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize))

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        amsgrad = ("max_exp_avg_sq",) if group["amsgrad"] else ()
        return ("step", "exp_avg", "exp_avg_sq", *amsgrad)

    def _flat_update(self, p: Tensor, g: Tensor, group: dict[str, Any],
                     state: dict[str, Tensor], step: Tensor | None
                     ) -> tuple[Tensor, dict[str, Tensor]]:
        beta1, beta2 = group["betas"]
        wd, lr = group["weight_decay"], self._lr(group, p)
        base = p
        if wd != 0.0:
            if self._decoupled:
                base = p * (1.0 - lr * wd)
            else:
                g = g + p * wd
        m = state["exp_avg"] * beta1 + g * (1.0 - beta1)
        v = state["exp_avg_sq"] * beta2 + g * g * (1.0 - beta2)
        new = {"exp_avg": m, "exp_avg_sq": v}
        if group["amsgrad"]:
            v = new["max_exp_avg_sq"] = F.maximum(state["max_exp_avg_sq"], v)
        bias1 = 1.0 - F.pow(beta1, step)
        bias2 = 1.0 - F.pow(beta2, step)
        denom = F.sqrt(v) / F.sqrt(bias2) + group["eps"]
        return base - (m / denom) * (lr / bias1), new


@OPTIMIZERS.register("adamw", doc="Adam with decoupled `weight_decay` (torch.optim.AdamW)")
class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p = p * (1 - lr * wd) first."""

    _decoupled = True

    def __init__(self, params: Iterable[Any], lr: NonNegative = 1e-3,
                 betas: Betas = (0.9, 0.999), eps: NonNegative = 1e-8,
                 weight_decay: NonNegative = 1e-2, amsgrad: bool = False,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)
