"""Matrix multiplication (batched, with NumPy broadcasting of the batch dims)."""

from __future__ import annotations

import functools

import numpy as np

from dlrun.engine.prims.movement import permute, reshape
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


@primitive("matmul", Kind.LINALG, _matmul_rule)
def matmul(xp, a, b, out=None):
    if a.shape[-1] == 1:  # an outer product: a broadcast multiply (BLAS is slow at K=1)
        return xp.multiply(a, b, out=out)
    if a.ndim > 2 and b.ndim == 2 and (out is None or out.flags.c_contiguous):
        return _matmul_rows(xp, a, b, out)
    y = xp.matmul(a, b, out=out)
    # NumPy's bfloat16 (ml_dtypes, kind 'V') matmul returns float32: keep the rule's dtype
    return y if out is not None or a.dtype.kind != "V" else y.astype(a.dtype)


def _matmul_rows(xp, a, b, out):
    """(..., K) @ (K, M) as one (rows, K) @ (K, M) GEMM: NumPy runs one small GEMM per leading
    index otherwise. A non-contiguous `a` is
    copied once by the reshape, still far cheaper than the per-index loop."""
    m = b.shape[1]
    rows = xp.matmul(a.reshape(-1, a.shape[-1]), b,
                     out=None if out is None else out.reshape(-1, m))
    return rows.reshape(a.shape[:-1] + (m,)) if out is None else out


@matmul.defspecialize
def _matmul_specialize(xp, avals):
    shapes = None if avals is None else [a.shape for a in avals]
    if shapes is not None and shapes[0][-1] != 1 and not (len(shapes[0]) > 2
                                                        and len(shapes[1]) == 2):
        return xp.matmul  # the common case: the ufunc itself, one Python call less per node
    return functools.partial(matmul.forward, xp)


def _swap_last(t):
    n = len(t.shape)
    return permute(t, axes=tuple(range(n - 2)) + (n - 1, n - 2))


@matmul.defvjp
def _matmul_vjp(g, y, a, b, needs):
    ga = matmul(g, _swap_last(b)) if needs[0] else None
    gb = None
    if needs[1]:
        if len(a.shape) > 2 and len(b.shape) == 2:  # sum over the leading dims: one GEMM
            k, m = a.shape[-1], g.shape[-1]
            rows = int(np.prod(a.shape[:-1]))
            gb = matmul(_swap_last(reshape(a, shape=(rows, k))), reshape(g, shape=(rows, m)))
        else:
            gb = matmul(_swap_last(a), g)
    return ga, gb


matmul.onnx = lambda g, a, b: g.op("MatMul", a, b)  # ONNX lowering (dlrun export)
