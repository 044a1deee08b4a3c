"""Elementwise primitives: NumPy/CuPy ufunc calls with `out=` support, vjps in dlrun ops.

With Numba, the transcendental ops (exp, log, tanh, erf, sigmoid) run engine/native.py's ufuncs
on NumPy float arrays: the math CPU kernels use, so both modes compute the same bits.

`cuda_expr` is the op as a C expression over its inputs `{0}`, `{1}`, ...; the GPU fusion pass
composes these into one generated kernel.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from dlrun.engine import native
from dlrun.engine.dtypes import is_floating
from dlrun.engine.prims.registry import Kind, predicate_rule, primitive

E = Kind.ELEMENTWISE


def _zero(like: Any) -> Any:
    from dlrun.engine.creation import scalar_like

    return scalar_like(0, like)


@primitive("add", E, cpu_expr="({0} + {1})", cuda_expr="({0} + {1})", ufunc="add")
def add(xp, a, b, out=None):
    return xp.add(a, b, out=out)


@add.defvjp
def _add_vjp(g, y, a, b):
    return g, g


@primitive("sub", E, cpu_expr="({0} - {1})", cuda_expr="({0} - {1})", ufunc="subtract")
def sub(xp, a, b, out=None):
    return xp.subtract(a, b, out=out)


@sub.defvjp
def _sub_vjp(g, y, a, b, needs):
    return g, (neg(g) if needs[1] else None)


@primitive("mul", E, cpu_expr="({0} * {1})", cuda_expr="({0} * {1})", ufunc="multiply")
def mul(xp, a, b, out=None):
    return xp.multiply(a, b, out=out)


@mul.defvjp
def _mul_vjp(g, y, a, b, needs):
    return (g * b if needs[0] else None), (g * a if needs[1] else None)


@primitive("div", E, cpu_expr="({0} / {1})", cuda_expr="({0} / {1})", ufunc="true_divide")
def div(xp, a, b, out=None):
    return xp.true_divide(a, b, out=out)


@div.defvjp
def _div_vjp(g, y, a, b, needs):
    ga = g / b if needs[0] else None
    gb = neg(g * y / b) if needs[1] else None
    return ga, gb


@primitive("neg", E, cpu_expr="(-{0})", cuda_expr="(-{0})", ufunc="negative")
def neg(xp, x, out=None):
    return xp.negative(x, out=out)


@neg.defvjp
def _neg_vjp(g, y, x):
    return (neg(g),)


@primitive("copy", E, cpu_expr="{0}", cuda_expr="{0}")
def copy(xp, x, out=None):
    """x in memory of its own (torch's clone): a result that must not alias what it came from."""
    if out is None:
        return x.copy()
    out[...] = x
    return out


@copy.defvjp
def _copy_vjp(g, y, x):
    return (g,)


@primitive("pow", E, cpu_expr="pow({0}, {1})", cuda_expr="pow({0}, {1})")
def pow(xp, x, p, out=None):  # noqa: A001
    return (native.ufunc("pow", x, p) or xp.power)(x, p, out=out)


@pow.defvjp
def _pow_vjp(g, y, x, p, needs):
    gx = g * p * pow(x, p - 1) if needs[0] else None
    gp = g * y * log(x) if needs[1] else None
    return gx, gp


@primitive("maximum", E,
           cpu_expr="({0} if ({0} > {1} or {0} != {0}) else {1})",
           cuda_expr="({0} > {1} || {0} != {0} ? {0} : {1})", ufunc="maximum")
def maximum(xp, a, b, out=None):
    return xp.maximum(a, b, out=out)


@primitive("minimum", E,
           cpu_expr="({0} if ({0} < {1} or {0} != {0}) else {1})",
           cuda_expr="({0} < {1} || {0} != {0} ? {0} : {1})", ufunc="minimum")
def minimum(xp, a, b, out=None):
    return xp.minimum(a, b, out=out)


def _minmax_vjp(g, a, b, first_wins):
    # Ties split the gradient evenly, which is what central differences see.
    w = cast(first_wins, dtype=g.dtype) + cast(eq(a, b), dtype=g.dtype) * 0.5
    return g * w, g * (1.0 - w)


@maximum.defvjp
def _maximum_vjp(g, y, a, b):
    return _minmax_vjp(g, a, b, gt(a, b))


@minimum.defvjp
def _minimum_vjp(g, y, a, b):
    return _minmax_vjp(g, a, b, lt(a, b))


@primitive("exp", E, cpu_expr="exp({0})", cuda_expr="exp({0})")
def exp(xp, x, out=None):
    return (native.ufunc("exp", x) or xp.exp)(x, out=out)


@exp.defvjp
def _exp_vjp(g, y, x):
    return (g * y,)


@primitive("log", E, cpu_expr="log({0})", cuda_expr="log({0})")
def log(xp, x, out=None):
    return (native.ufunc("log", x) or xp.log)(x, out=out)


@log.defvjp
def _log_vjp(g, y, x):
    return (g / x,)


@primitive("sqrt", E, cpu_expr="sqrt({0})", cuda_expr="sqrt({0})", ufunc="sqrt")
def sqrt(xp, x, out=None):
    return xp.sqrt(x, out=out)


@sqrt.defvjp
def _sqrt_vjp(g, y, x):
    return (g * 0.5 / y,)


@primitive("abs", E, cpu_expr="abs({0})", cuda_expr="abs({0})", ufunc="absolute")
def abs(xp, x, out=None):  # noqa: A001
    return xp.abs(x, out=out)


@abs.defvjp
def _abs_vjp(g, y, x):
    return (g * sign(x),)


@primitive("sign", E, differentiable=False,
           cpu_expr="(1.0 if {0} > 0.0 else (-1.0 if {0} < 0.0 else ({0} if {0} != {0} else 0.0)))",
           cuda_expr="({0} != {0} ? {0} : ({0} > 0) - ({0} < 0))", ufunc="sign")
def sign(xp, x, out=None):
    return xp.sign(x, out=out)


@primitive("tanh", E, cpu_expr="tanh({0})", cuda_expr="tanh({0})")
def tanh(xp, x, out=None):
    return (native.ufunc("tanh", x) or xp.tanh)(x, out=out)


@tanh.defvjp
def _tanh_vjp(g, y, x):
    return (g * (1.0 - y * y),)


@primitive("sigmoid", E,
           cpu_expr="(0.5 * tanh(0.5 * {0}) + 0.5)",
           cuda_expr="(0.5 * tanh(0.5 * {0}) + 0.5)")
def sigmoid(xp, x, out=None):
    # 0.5 * (1 + tanh(x / 2)): no overflow for large |x|, one transcendental.
    fn = native.ufunc("sigmoid", x)
    if fn is not None:
        return fn(x, out=out)
    out = xp.multiply(x, x.dtype.type(0.5), out=out)
    xp.tanh(out, out=out)
    xp.multiply(out, x.dtype.type(0.5), out=out)
    return xp.add(out, x.dtype.type(0.5), out=out)


@sigmoid.defvjp
def _sigmoid_vjp(g, y, x):
    return (g * y * (1.0 - y),)


@primitive("relu", E, cpu_expr="(0.0 if {0} <= 0.0 else {0})", cuda_expr="({0} <= 0 ? 0 : {0})")
def relu(xp, x, out=None):
    return xp.maximum(x, x.dtype.type(0), out=out)


@relu.defvjp
def _relu_vjp(g, y, x):
    return (relu_grad(g, y),)


@primitive("relu_grad", E,
           cpu_expr="({0} if {1} > 0.0 else {0} * 0.0)",
           cuda_expr="({1} > 0 ? {0} : {0} * 0)")
def relu_grad(xp, g, y, out=None):
    """g where y > 0, else 0 (the gradient of relu, as one op)."""
    return xp.multiply(g, y > 0, out=out)


@relu_grad.defvjp
def _relu_grad_vjp(gg, out, g, y):
    return relu_grad(gg, y), None


@primitive("leaky_relu", E,
           cpu_expr="({0} if {0} > 0.0 else {0} * {negative_slope})",
           cuda_expr="({0} > 0 ? {0} : {0} * {negative_slope})")
def leaky_relu(xp, x, *, negative_slope):
    return xp.where(x > 0, x, x * x.dtype.type(negative_slope))


@leaky_relu.defvjp
def _leaky_relu_vjp(g, y, x, *, negative_slope):
    return (g * where(gt(x, _zero(x)), _one(x), _zero(x) + negative_slope),)


def _one(like):
    from dlrun.engine.creation import scalar_like

    return scalar_like(1, like)


@functools.cache
def _erf_ufunc(xp):
    """scipy.special.erf (cupyx.scipy's on CuPy): a ufunc, so erf writes `out=` and fuses."""
    try:
        if xp is np:
            from scipy.special import erf as ufunc
        else:
            from cupyx.scipy.special import erf as ufunc
    except ImportError:
        return None
    return ufunc


# Eigen's rational approximation of erf for float32 (generic_fast_erf_float, as TensorFlow and
# XLA use it): x * P(x^2) / Q(x^2) on x clipped to [-4, 4], within 4e-7 relative of the exact
# value (a few float32 ulp), in NumPy passes over the array instead of SciPy's scalar loop.
ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
          -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
          -1.60960333262415e-02)
ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
          -7.37332916720468e-03, -1.42647390514189e-02)


def _erf_float32(xp, x, out):
    xc = xp.clip(x, -4.0, 4.0)
    x2 = xc * xc
    p = xp.multiply(x2, np.float32(ERF_P[0]), out=out)  # out may alias x: xc holds it
    p += np.float32(ERF_P[1])
    for c in ERF_P[2:]:
        p *= x2
        p += np.float32(c)
    p *= xc
    q = x2 * np.float32(ERF_Q[0])
    q += np.float32(ERF_Q[1])
    for c in ERF_Q[2:]:
        q *= x2
        q += np.float32(c)
    p /= q
    return p


@primitive("erf", E, cpu_expr="erf({0})", cuda_expr="erf({0})")
def erf(xp, x, out=None):
    fn = native.ufunc("erf", x)
    if fn is not None:
        return fn(x, out=out)
    if xp is np and x.dtype == np.float32:
        return _erf_float32(xp, x, out)
    ufunc = _erf_ufunc(xp)
    if ufunc is not None:
        return ufunc(x, out=out)
    values = np.vectorize(math.erf, otypes=[x.dtype])(x)  # no SciPy: slow but exact
    if out is None:
        return values
    out[...] = values
    return out


@erf.defvjp
def _erf_vjp(g, y, x):
    return (g * (2.0 / math.sqrt(math.pi)) * exp(neg(x * x)),)


def _where_rule(c, a, b, **_):
    from dlrun.engine.prims.registry import broadcast_shapes

    return broadcast_shapes(c.shape, a.shape, b.shape), np.result_type(a.dtype, b.dtype)


# in_place=False: `where` writes its output in two steps, so it cannot run over its inputs
@primitive("where", E, _where_rule,
           cpu_expr="({1} if {0} else {2})",
           cuda_expr="({0} ? {1} : {2})", in_place=False)
def where(xp, c, a, b, out=None):
    if out is None:
        return xp.where(c, a, b)
    xp.copyto(out, b)
    xp.copyto(out, a, where=c)
    return out


@where.defvjp
def _where_vjp(g, y, c, a, b, needs):
    z = _zero(g)
    return None, (where(c, g, z) if needs[1] else None), (where(c, z, g) if needs[2] else None)


def _cast_rule(x, *, dtype):
    return x.shape, np.dtype(dtype)


@primitive("cast", E, _cast_rule, cpu_expr="{dtype}({0})", cuda_expr="({dtype}){0}")
def cast(xp, x, *, dtype, out=None):
    if out is None:
        return x.astype(dtype)
    xp.copyto(out, x, casting="unsafe")
    return out


@cast.defvjp
def _cast_vjp(g, y, x, *, dtype):
    return (cast(g, dtype=x.dtype) if is_floating(x.dtype) else None,)


def _predicate(name: str, ufunc: str, expr: str, cpu_expr: str | None = None):
    @primitive(name, E, predicate_rule, differentiable=False, cuda_expr=expr,
               cpu_expr=cpu_expr or expr, ufunc=ufunc)
    def fwd(xp, a, b, out=None):
        return getattr(xp, ufunc)(a, b, out=out)

    fwd.forward.__name__ = name
    return fwd


eq = _predicate("eq", "equal", "({0} == {1})")
ne = _predicate("ne", "not_equal", "({0} != {1})")
lt = _predicate("lt", "less", "({0} < {1})")
le = _predicate("le", "less_equal", "({0} <= {1})")
gt = _predicate("gt", "greater", "({0} > {1})")
ge = _predicate("ge", "greater_equal", "({0} >= {1})")
logical_and = _predicate("logical_and", "logical_and", "({0} && {1})", "({0} and {1})")
logical_or = _predicate("logical_or", "logical_or", "({0} || {1})", "({0} or {1})")


@primitive("logical_not", E, predicate_rule, differentiable=False,
           cpu_expr="(not {0})",
           cuda_expr="(!{0})",
           ufunc="logical_not")
def logical_not(xp, x, out=None):
    return xp.logical_not(x, out=out)


# ----- ONNX lowerings (dlrun export): onnx(g, *input names, **attrs) -> output name ----------


def _onnx_binary(op_type):
    return lambda g, a, b: g.op(op_type, a, b)


def _onnx_unary(op_type):
    return lambda g, x: g.op(op_type, x)


add.onnx = _onnx_binary("Add")
sub.onnx = _onnx_binary("Sub")
mul.onnx = _onnx_binary("Mul")
div.onnx = _onnx_binary("Div")
pow.onnx = _onnx_binary("Pow")
maximum.onnx = _onnx_binary("Max")
minimum.onnx = _onnx_binary("Min")
eq.onnx = _onnx_binary("Equal")
lt.onnx = _onnx_binary("Less")
le.onnx = _onnx_binary("LessOrEqual")
gt.onnx = _onnx_binary("Greater")
ge.onnx = _onnx_binary("GreaterOrEqual")
logical_and.onnx = _onnx_binary("And")
logical_or.onnx = _onnx_binary("Or")
neg.onnx = _onnx_unary("Neg")
copy.onnx = _onnx_unary("Identity")
exp.onnx = _onnx_unary("Exp")
log.onnx = _onnx_unary("Log")
sqrt.onnx = _onnx_unary("Sqrt")
abs.onnx = _onnx_unary("Abs")
sign.onnx = _onnx_unary("Sign")
tanh.onnx = _onnx_unary("Tanh")
sigmoid.onnx = _onnx_unary("Sigmoid")
relu.onnx = _onnx_unary("Relu")
erf.onnx = _onnx_unary("Erf")
logical_not.onnx = _onnx_unary("Not")
ne.onnx = lambda g, a, b: g.op("Not", g.op("Equal", a, b))
leaky_relu.onnx = lambda g, x, *, negative_slope: g.op("LeakyRelu", x,
                                                       alpha=float(negative_slope))
where.onnx = lambda g, c, a, b: g.op("Where", c, a, b)
cast.onnx = lambda g, x, *, dtype: g.op("Cast", x, to=g.tensor_type(dtype))
