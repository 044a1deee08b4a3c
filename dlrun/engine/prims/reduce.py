"""Reductions over axes (`axis`: a tuple of non-negative ints, or None for all; `keepdims`)."""

from __future__ import annotations

import numpy as np

from dlrun.engine.prims.elementwise import cast, eq, exp
from dlrun.engine.prims.registry import Kind, primitive

R = Kind.REDUCE


def _reduced_shape(shape, axis, keepdims):
    axes = range(len(shape)) if axis is None else axis
    if keepdims:
        return tuple(1 if i in axes else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in axes)


def _reduce_rule(x, *, axis, keepdims):
    dtype = x.dtype if x.dtype.kind in "fc" else np.dtype(np.int64)
    return _reduced_shape(x.shape, axis, keepdims), dtype


def _keep_rule(x, *, axis, keepdims):
    return _reduced_shape(x.shape, axis, keepdims), x.dtype


def expand_back(g, x_shape, axis, keepdims):
    """Broadcast a reduction's gradient back over the reduced axes."""
    from dlrun.engine.prims.movement import broadcast_to, reshape

    if not keepdims:
        g = reshape(g, shape=_reduced_shape(x_shape, axis, True))
    return broadcast_to(g, shape=tuple(x_shape))


@primitive("sum", R, _reduce_rule)
def sum(xp, x, *, axis, keepdims, out=None):  # noqa: A001
    if xp is np:  # the ufunc method directly: np.sum's Python wrapper costs more than small sums
        return np.add.reduce(x, axis=axis, keepdims=keepdims, out=out)
    return xp.sum(x, axis=axis, keepdims=keepdims, out=out)


@sum.defvjp
def _sum_vjp(g, y, x, *, axis, keepdims):
    return (expand_back(g, x.shape, axis, keepdims),)


@primitive("amax", R, _keep_rule)
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
    out = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
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
    e /= xp.sum(e, axis=axis, keepdims=True)
    return e


@softmax.defvjp
def _softmax_vjp(g, y, x, *, axis):
    return (y * (g - sum(g * y, axis=(axis,), keepdims=True)),)


@primitive("log_softmax", R, _same_rule)
def log_softmax(xp, x, *, axis, out=None):
    shifted = xp.subtract(x, xp.amax(x, axis=axis, keepdims=True), out=out)
    shifted -= xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))
    return shifted


@log_softmax.defvjp
def _log_softmax_vjp(g, y, x, *, axis):
    return (g - exp(y) * sum(g, axis=(axis,), keepdims=True),)
