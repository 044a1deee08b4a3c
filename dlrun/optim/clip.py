"""Gradient clipping by global norm and by value, in tensor ops (no host sync, compilable)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from dlrun import functional as F
from dlrun.engine.autograd import no_grad
from dlrun.engine.creation import zeros
from dlrun.engine.prims.reduce import sum_squares
from dlrun.engine.tensor import Tensor


def _with_grads(parameters: Tensor | Iterable[Tensor]) -> list[Tensor]:
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    return [p for p in params if p.grad is not None]


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float,
                    norm_type: float = 2.0) -> Tensor:
    """Scale all gradients by min(1, max_norm / (total_norm + 1e-6)); return total_norm.

    total_norm is the norm of all gradients together (as if concatenated), a 0-d tensor in the
    first gradient's dtype; the 2-norm sums in a fixed order, the one `optimizer.step(max_norm=)`
    uses over its flat gradients, so both give the same bits. Gradients are replaced by scaled
    copies (`p.grad = p.grad * c`).
    """
    params = _with_grads(parameters)
    if not params:
        return zeros(())
    norm_type = float(norm_type)
    dtype = params[0].grad.dtype
    with no_grad():
        grads = [p.grad if p.grad.dtype == dtype else p.grad.to_dtype(dtype) for p in params]
        if math.isinf(norm_type):
            total = F.amax(F.stack([F.amax(F.abs(g)) for g in grads]))
        elif norm_type == 2.0:
            total = F.sqrt(sum_squares(*grads))  # a fixed order: see sum_squares
        else:
            total = F.pow(F.stack([F.sum(F.pow(F.abs(g), norm_type)) for g in grads]).sum(),
                          1.0 / norm_type)
        coef = F.minimum(float(max_norm) / (total + 1e-6), 1.0)
        for p in params:
            c = coef if p.grad.dtype == dtype else coef.to_dtype(p.grad.dtype)
            p.grad = p.grad * c
    return total


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float) -> None:
    """Clamp every gradient element to [-clip_value, clip_value]."""
    v = float(clip_value)
    with no_grad():
        for p in _with_grads(parameters):
            p.grad = F.clamp(p.grad, -v, v)
