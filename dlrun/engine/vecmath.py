"""Scalar math for generated CPU kernels, written so that LLVM vectorizes the loops around it.

Numba's `math.exp`/`math.tanh` call libm one element at a time (no SIMD: the llvmlite wheels
carry no vector math library), so float32 kernels use these branch-free polynomial forms
instead: Cephes' expf (1 ulp), Eigen's rational tanh and erf (a few ulp, the same erf the NumPy
float32 path computes). Other dtypes use `math`'s exact functions. Each name dispatches on its
argument's type when a kernel is compiled (`numba.extending.overload`). Imported only when Numba
is installed (engine/native.py imports it lazily).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from dlrun.engine.prims.elementwise import ERF_P, ERF_Q

F = np.float32
_EXP_HI, _EXP_LO = F(88.72283), F(-87.33654)


@intrinsic
def _f32_from_bits(typingctx, i):
    """The float32 whose bits are the int32 `i` (a bitcast: vectorizes, unlike math.ldexp)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@njit(error_model="numpy")
def exp_f32(x):
    """exp(x) in float32: Cody-Waite reduction, Cephes' degree-6 polynomial, 2^n by bits."""
    xc = _EXP_LO if x < _EXP_LO else x
    xc = _EXP_HI if xc > _EXP_HI else xc
    n = np.floor(xc * F(1.44269504088896341) + F(0.5))  # float32 (math.floor gives an int)
    r = xc - n * F(0.693359375)
    r = r - n * F(-2.12194440e-4)
    p = F(1.9875691500e-4) * r + F(1.3981999507e-3)
    p = p * r + F(8.3334519073e-3)
    p = p * r + F(4.1665795894e-2)
    p = p * r + F(1.6666665459e-1)
    p = p * r + F(5.0000001201e-1)
    p = p * r * r + r + F(1.0)
    y = p * _f32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))
    y = F(np.inf) if x > _EXP_HI else y
    y = F(0.0) if x < _EXP_LO else y
    return x if x != x else y


@njit(error_model="numpy")
def tanh_f32(x):
    """tanh(x) in float32: Eigen's rational approximation on x clipped to +-7.9."""
    lim = F(7.90531110763549805)
    xc = -lim if x < -lim else x
    xc = lim if xc > lim else xc
    x2 = xc * xc
    p = x2 * F(-2.76076847742355e-16) + F(2.00018790482477e-13)
    p = x2 * p + F(-8.60467152213735e-11)
    p = x2 * p + F(5.12229709037114e-08)
    p = x2 * p + F(1.48572235717979e-05)
    p = x2 * p + F(6.37261928875436e-04)
    p = x2 * p + F(4.89352455891786e-03)
    q = x2 * F(1.19825839466702e-06) + F(1.18534705686654e-04)
    q = x2 * q + F(2.26843463243900e-03)
    q = x2 * q + F(4.89352518554385e-03)
    y = xc * p / q
    y = x if abs(x) < F(0.0004) else y  # tanh(x) = x to float32 precision (Eigen's cut-off)
    return x if x != x else y


@njit(error_model="numpy")
def erf_f32(x):
    """erf(x) in float32: x * P(x^2) / Q(x^2) on x clipped to +-4 (prims/elementwise.py)."""
    xc = F(-4.0) if x < F(-4.0) else x
    xc = F(4.0) if xc > F(4.0) else xc
    x2 = xc * xc
    p = x2 * F(ERF_P[0]) + F(ERF_P[1])
    for c in ERF_P[2:]:
        p = p * x2 + F(c)
    q = x2 * F(ERF_Q[0]) + F(ERF_Q[1])
    for c in ERF_Q[2:]:
        q = q * x2 + F(c)
    y = xc * p / q
    return x if x != x else y


def _generic(name: str, f32, exact):
    """A kernel-callable `name(x)`: the float32 form for float32, `exact` otherwise."""

    def stub(x):
        raise NotImplementedError(f"{name} runs inside generated kernels only")

    @overload(stub, inline="always")
    def _impl(x):
        if x == types.float32 and f32 is not None:
            return lambda x: f32(x)
        return lambda x: exact(x)

    stub.__name__ = name
    return stub


exp = _generic("exp", exp_f32, math.exp)
tanh = _generic("tanh", tanh_f32, math.tanh)
erf = _generic("erf", erf_f32, math.erf)
log = _generic("log", None, math.log)
sqrt = _generic("sqrt", None, math.sqrt)



# Scalar bodies of the elementwise ufuncs engine/native.py builds (module-level, so Numba can
# cache them): eager calls, NumPy plans and kernels then compute these ops alike.
def exp_scalar(x):
    return exp(x)


def log_scalar(x):
    return log(x)


def tanh_scalar(x):
    return tanh(x)


def erf_scalar(x):
    return erf(x)


def pow_scalar(x, y):
    return x**y


def sigmoid_scalar(x):
    return _half(x) * tanh(_half(x) * x) + _half(x)


def _half(x):
    raise NotImplementedError("inside generated kernels only")


@overload(_half, inline="always")
def _half_impl(x):
    kind = np.float32 if x == types.float32 else np.float64
    return lambda x: kind(0.5)





@njit(cache=True, nogil=True, error_model="numpy")
def row_sum(x, out):
    """out[r] = sum of row r of the 2-D x in the engine's fixed order: float64 lanes over
    blocks of 8, combined as ((0+1)+(2+3))+((4+5)+(6+7)), then the tail in order (what row
    kernels compute for a sum inside a group, so both agree to the bit)."""
    n = x.shape[1]
    n8 = n - n % 8
    for r in range(x.shape[0]):
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
        for jb in range(0, n8, 8):
            a0 += x[r, jb]
            a1 += x[r, jb + 1]
            a2 += x[r, jb + 2]
            a3 += x[r, jb + 3]
            a4 += x[r, jb + 4]
            a5 += x[r, jb + 5]
            a6 += x[r, jb + 6]
            a7 += x[r, jb + 7]
        s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
        for j in range(n8, n):
            s += x[r, j]
        out[r] = s


def _pow_stub(x, y):
    raise NotImplementedError("pow runs inside generated kernels only")


@overload(_pow_stub, inline="always")
def _pow_impl(x, y):
    return lambda x, y: x**y


pow = _pow_stub  # noqa: A001  (the kernels' name for it)


def _item_stub(e):
    raise NotImplementedError("item runs inside generated kernels only")


@overload(_item_stub, inline="always")
def _item_impl(e):
    """A 0-d input's value: plans pass 0-d arrays, but a reduction may hand a NumPy scalar."""
    if isinstance(e, types.Array):
        return lambda e: e[()]
    return lambda e: e


item = _item_stub


@njit(cache=True, nogil=True, error_model="numpy")
def col_sum(x, out):
    """out[k] = sum of column k of the 2-D x, each in row_sum's order over its elements (lane
    r % 8, lanes combined pairwise, then the tail rows): a sum over leading axes, read row by
    row without a transposed copy."""
    rows, cols = x.shape
    r8 = rows - rows % 8
    acc = np.zeros((8, cols))
    for rb in range(0, r8, 8):
        for lane in range(8):
            for k in range(cols):
                acc[lane, k] += x[rb + lane, k]
    for k in range(cols):
        s = ((acc[0, k] + acc[1, k]) + (acc[2, k] + acc[3, k])) + \
            ((acc[4, k] + acc[5, k]) + (acc[6, k] + acc[7, k]))
        for r in range(r8, rows):
            s += x[r, k]
        out[k] = s


@njit(cache=True, nogil=True, error_model="numpy")
def scaled_softmax_rows(s, scale, causal, out):
    """out[b, i] = softmax(s[b, i] * scale) over the last axis, keys j > i hidden when causal
    (every row keeps key 0, so no row is empty): one kernel for attention's probabilities.
    Each loop is one vectorizable pass; the sum runs in row_sum's 8 lanes."""
    width = s.shape[2]
    for b in range(s.shape[0]):
        for i in range(s.shape[1]):
            n = min(i + 1, width) if causal else width
            top = s[b, i, 0] * scale
            for j in range(n):
                v = s[b, i, j] * scale
                out[b, i, j] = v
                top = v if (v > top or v != v) else top
            for j in range(n):
                out[b, i, j] = exp(out[b, i, j] - top)
            for j in range(n, width):
                out[b, i, j] = 0.0
            a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
            n8 = n - n % 8
            for jb in range(0, n8, 8):
                a0 += out[b, i, jb]
                a1 += out[b, i, jb + 1]
                a2 += out[b, i, jb + 2]
                a3 += out[b, i, jb + 3]
                a4 += out[b, i, jb + 4]
                a5 += out[b, i, jb + 5]
                a6 += out[b, i, jb + 6]
                a7 += out[b, i, jb + 7]
            total = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
            for j in range(n8, n):
                total += out[b, i, j]
            t = out.dtype.type(total)
            for j in range(n):
                out[b, i, j] = out[b, i, j] / t
