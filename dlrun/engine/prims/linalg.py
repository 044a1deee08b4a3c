"""Matrix multiplication (batched, with NumPy broadcasting of the batch dims)."""

from __future__ import annotations

import numpy as np

from dlrun.engine.prims.registry import Kind, broadcast_shapes, primitive


def _matmul_rule(a, b):
    if len(a.shape) < 2 or len(b.shape) < 2:
        raise ValueError("matmul primitive needs operands of 2 or more dims")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(
            f"matmul: shapes {a.shape} and {b.shape} do not fit ({a.shape[-1]} != {b.shape[-2]})"
        )
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return batch + (a.shape[-2], b.shape[-1]), np.result_type(a.dtype, b.dtype)


@primitive("matmul", Kind.LINALG, _matmul_rule, ufunc="matmul")
def matmul(xp, a, b, out=None):
    return xp.matmul(a, b, out=out)


def _swap_last(t):
    from dlrun.engine.prims.movement import permute

    n = len(t.shape)
    return permute(t, axes=tuple(range(n - 2)) + (n - 1, n - 2))


@matmul.defvjp
def _matmul_vjp(g, y, a, b, needs):
    ga = matmul(g, _swap_last(b)) if needs[0] else None
    gb = matmul(_swap_last(a), g) if needs[1] else None
    return ga, gb
