"""Reductions over axes (`axis`: a tuple of non-negative ints, or None for all; `keepdims`)."""

from __future__ import annotations

import functools

import numpy as np

from dlrun.engine import native
from dlrun.engine.dtypes import is_floating
from dlrun.engine.prims.elementwise import cast, eq, exp
from dlrun.engine.prims.movement import broadcast_to, reshape
from dlrun.engine.prims.registry import Kind, primitive

R = Kind.REDUCE


def _reduced_shape(shape, axis, keepdims):
    axes = range(len(shape)) if axis is None else axis
    if keepdims:
        return tuple(1 if i in axes else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in axes)


def _reduce_rule(x, *, axis, keepdims):
    dtype = x.dtype if is_floating(x.dtype) else np.dtype(np.int64)
    return _reduced_shape(x.shape, axis, keepdims), dtype


def _keep_rule(x, *, axis, keepdims):
    return _reduced_shape(x.shape, axis, keepdims), x.dtype


def expand_back(g, x_shape, axis, keepdims):
    """Broadcast a reduction's gradient back over the reduced axes."""
    if not keepdims:
        g = reshape(g, shape=_reduced_shape(x_shape, axis, True))
    return broadcast_to(g, shape=tuple(x_shape))


GEMV_MIN_SIZE = 1 << 14  # below this np.add.reduce is as fast


@primitive("sum", R, _reduce_rule, row_reduce=("0.0", "{acc} + {0}"))
def sum(xp, x, *, axis, keepdims, out=None):  # noqa: A001
    return _sum(xp, x, axis, keepdims, out)


def _sum(xp, x, axis, keepdims, out=None):
    if xp is np:  # with Numba: one fixed order, whatever the layout (engine/native.py)
        result = native.fixed_sum(x, axis, keepdims, out)
        if result is not None:
            return result
    if xp is np:
        if x.size >= GEMV_MIN_SIZE and x.dtype.kind == "f" and axis is not None:
            y = _sum_by_gemv(x, axis)
            if y is not None:
                y = y.reshape(_reduced_shape(x.shape, axis, keepdims))
                if out is None:
                    return y
                np.copyto(out, y)
                return out
        # the ufunc method directly: np.sum's Python wrapper costs more than small sums
        return np.add.reduce(x, axis=axis, keepdims=keepdims, out=out)
    return xp.sum(x, axis=axis, keepdims=keepdims, out=out)


@functools.lru_cache(maxsize=64)
def _ones(n: int, dtype: np.dtype) -> np.ndarray:
    ones = np.ones(n, dtype=dtype)
    ones.flags.writeable = False
    return ones


def _sum_by_gemv(x: np.ndarray, axis: tuple[int, ...]) -> np.ndarray | None:
    """sum(x, axis) as matrix-vector products with a ones vector, or None when x's layout does
    not allow it. NumPy reduces a short contiguous axis (rows of 65 logits) or a strided one (a
    conv bias gradient over N, H, W) several times slower than BLAS multiplies by ones. The
    axes are taken in memory order and merged into runs: [kept, reduced] is x @ 1, [reduced,
    kept] is 1 @ x, [reduced, kept, reduced] both in turn; the kept axes come back in order."""
    order = sorted(range(x.ndim), key=lambda a: -x.strides[a])
    xt = x.transpose(order)
    if not xt.flags.c_contiguous:
        return None
    runs: list[list] = []  # [reduced?, size, kept axes]
    for a in order:
        if x.shape[a] == 1:
            continue
        red = a in axis
        if runs and runs[-1][0] == red:
            runs[-1][1] *= x.shape[a]
            runs[-1][2].append(a)
        else:
            runs.append([red, x.shape[a], [a]])
    pattern = tuple(r[0] for r in runs)
    if pattern not in ((False, True), (True, False), (True, False, True)):
        return None
    y = xt.reshape([r[1] for r in runs])
    if pattern[-1]:
        y = np.matmul(y, _ones(runs[-1][1], x.dtype))
    if pattern[0]:
        y = np.matmul(_ones(runs[0][1], x.dtype), y)
    kept = next(r[2] for r in runs if not r[0])  # kept axes in memory order
    if kept != sorted(kept):  # back to their logical order
        y = y.reshape([x.shape[a] for a in kept]).transpose(np.argsort(kept))
    return y


@sum.defvjp
def _sum_vjp(g, y, x, *, axis, keepdims):
    return (expand_back(g, x.shape, axis, keepdims),)


@primitive("amax", R, _keep_rule,
           row_reduce=("-np.inf", "({0} if ({0} > {acc} or {0} != {0}) else {acc})"))
def amax(xp, x, *, axis, keepdims, out=None):
    return xp.amax(x, axis=axis, keepdims=keepdims, out=out)


@amax.defvjp
def _amax_vjp(g, y, x, *, axis, keepdims):
    # Ties share the gradient evenly (what central differences measure).
    yk = expand_back(y, x.shape, axis, keepdims)
    mask = cast(eq(x, yk), dtype=g.dtype)
    count = sum(mask, axis=axis, keepdims=True)
    return (expand_back(g, x.shape, axis, keepdims) * mask / count,)


def _arg_rule(x, *, axis, keepdims):
    shape = _reduced_shape(x.shape, None if axis is None else (axis,), keepdims)
    return shape, np.dtype(np.int64)


@primitive("argmax", R, _arg_rule, differentiable=False)
def argmax(xp, x, *, axis, keepdims):
    out = xp.argmax(x, axis=axis, keepdims=keepdims)
    return out.astype(np.int64, copy=False)


@primitive("argmin", R, _arg_rule, differentiable=False)
def argmin(xp, x, *, axis, keepdims):
    out = xp.argmin(x, axis=axis, keepdims=keepdims)
    return out.astype(np.int64, copy=False)


@primitive("logsumexp", R, _keep_rule)
def logsumexp(xp, x, *, axis, keepdims):
    m = xp.amax(x, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)
    out = xp.log(_sum(xp, xp.exp(x - m), axis, True)) + m
    if not keepdims:
        out = out.reshape(_reduced_shape(x.shape, axis, False))
    return out


@logsumexp.defvjp
def _logsumexp_vjp(g, y, x, *, axis, keepdims):
    yk = expand_back(y, x.shape, axis, keepdims)
    return (expand_back(g, x.shape, axis, keepdims) * exp(x - yk),)


def _same_rule(x, *, axis):
    return x.shape, x.dtype


@primitive("softmax", R, _same_rule)
def softmax(xp, x, *, axis, out=None):
    e = xp.subtract(x, xp.amax(x, axis=axis, keepdims=True), out=out)
    xp.exp(e, out=e)
    e /= _sum(xp, e, (axis,), True)
    return e


@softmax.defvjp
def _softmax_vjp(g, y, x, *, axis):
    return (y * (g - sum(g * y, axis=(axis,), keepdims=True)),)


@primitive("log_softmax", R, _same_rule)
def log_softmax(xp, x, *, axis, out=None):
    shifted = xp.subtract(x, xp.amax(x, axis=axis, keepdims=True), out=out)
    shifted -= xp.log(_sum(xp, xp.exp(shifted), (axis,), True))
    return shifted


@log_softmax.defvjp
def _log_softmax_vjp(g, y, x, *, axis):
    return (g - exp(y) * sum(g, axis=(axis,), keepdims=True),)


NORM_LANES = 1024  # sum_squares' order depends on these two numbers and the size only
NORM_BLOCK_ROWS = 64  # rows of lanes squared and summed at a time (256 KiB of float32)


def _sum_squares_rule(*xs):
    if not xs:
        raise ValueError("sum_squares needs at least one array")
    return (), xs[0].dtype


@primitive("sum_squares", R, _sum_squares_rule)
def sum_squares(xp, *xs):
    """The sum of the squares of all elements of xs, as if concatenated flat, in a fixed order.

    Element i of the concatenation (in xs[0]'s dtype) is row i // L, lane i % L (L =
    NORM_LANES). Each lane sums its squares row by row within blocks of NORM_BLOCK_ROWS whole
    rows, the block sums in order, then the last, partial row; the L lane sums are added in a
    halving tree (lanes[:h] + lanes[h:]). The order depends only on the total size, never on
    how the arrays are split, strided or aligned, so any kernel that keeps it (NumPy, a CPU
    kernel, CUDA) gives the same bits: clipping's global gradient norm, eager and static alike.
    """
    dtype, lanes_n = xs[0].dtype, NORM_LANES
    if len(xs) == 1 and xs[0].flags.c_contiguous:
        flat = xs[0].reshape(-1)
    else:  # one contiguous copy; the values and their order are all that count
        flat = xp.concatenate([x.reshape(-1).astype(dtype, copy=False) for x in xs])
    rows = flat.size // lanes_n
    lanes = xp.zeros(lanes_n, dtype=dtype)
    if rows:
        part = xp.empty(lanes_n, dtype=dtype)
        sq = xp.empty((min(rows, NORM_BLOCK_ROWS), lanes_n), dtype=dtype)  # stays in cache
        for r in range(0, rows, NORM_BLOCK_ROWS):
            block = flat[r * lanes_n:min(r + NORM_BLOCK_ROWS, rows) * lanes_n]
            s = sq[:block.size // lanes_n]
            xp.multiply(block.reshape(s.shape), block.reshape(s.shape), out=s)
            s.sum(axis=0, out=part)  # over the outer axis: whole rows added one after another
            lanes += part
    tail = flat[rows * lanes_n:]
    if tail.size:
        lanes[:tail.size] += tail * tail
    h = lanes_n // 2
    while h:
        lanes = lanes[:h] + lanes[h:]
        h //= 2
    return lanes.reshape(())


@sum_squares.defvjp
def _sum_squares_vjp(g, y, *xs):
    return tuple(cast(g * 2.0, dtype=x.dtype) * x for x in xs)


# ----- ONNX lowerings (dlrun export): onnx(g, *input names, **attrs) -> output name ----------


def _onnx_reduce(op_type, axes_input_since):
    """A Reduce* node: axes as an input from opset `axes_input_since`, an attribute before."""

    def lower(g, x, *, axis, keepdims):
        if op_type == "ReduceSum" and g.dtype(x).kind not in "fc":
            x = g.op("Cast", x, to=g.tensor_type(np.int64))  # dlrun sums ints/bools as int64
        if axis is None:
            return g.op(op_type, x, keepdims=int(keepdims))
        if g.opset >= axes_input_since:
            return g.op(op_type, x, g.ints(axis), keepdims=int(keepdims))
        return g.op(op_type, x, axes=list(axis), keepdims=int(keepdims))

    return lower


def _onnx_arg(op_type):
    def lower(g, x, *, axis, keepdims):
        if axis is None:
            x, axis = g.op("Reshape", x, g.ints([-1])), 0
            if keepdims:
                raise ValueError("arg reductions over all axes with keepdims do not export")
        return g.op(op_type, x, axis=axis, keepdims=int(keepdims))

    return lower


sum.onnx = _onnx_reduce("ReduceSum", 13)
amax.onnx = _onnx_reduce("ReduceMax", 18)
logsumexp.onnx = _onnx_reduce("ReduceLogSumExp", 18)
argmax.onnx = _onnx_arg("ArgMax")
argmin.onnx = _onnx_arg("ArgMin")
softmax.onnx = lambda g, x, *, axis: g.op("Softmax", x, axis=axis)
log_softmax.onnx = lambda g, x, *, axis: g.op("LogSoftmax", x, axis=axis)
