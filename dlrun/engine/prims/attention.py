"""Scaled dot-product attention: `attention_probs` (softmax of masked, scaled scores) and
`attention` (the probabilities, optionally dropped out, applied to the values).

`attention` keeps no (..., L, S) tensor for its backward: its vjp recomputes the probabilities
from q and k (as flash attention does), so between forward and backward only the inputs live,
and during the backward one probability tensor per call. Masks: `mask_kind` "bool" (True = may
attend), "float" (added to the scores) or None; `causal` hides keys after each query
(PyTorch's is_causal: the upper triangle of the (L, S) block, whatever L and S). Rows with some
keys masked are exact (the row maximum is taken over finite scores only). Rows with every key
masked give zeros in `attention` (as PyTorch's scaled_dot_product_attention, whose softmax is
"safe" since 2.5), so their output and gradients are 0; `attention_probs` gives zeros with
`safe=True` and NaN with `safe=False` (a plain softmax, as nn.MultiheadAttention's weights).
"""

from __future__ import annotations

import functools

import numpy as np

from dlrun.engine import native
from dlrun.engine.prims.linalg import matmul
from dlrun.engine.prims.movement import permute
from dlrun.engine.prims.reduce import sum as sum_
from dlrun.engine.prims.registry import Kind, broadcast_shapes, primitive

A = Kind.LINALG


def _swap(t):
    n = len(t.shape)
    return permute(t, axes=tuple(range(n - 2)) + (n - 1, n - 2))


def _probs_rule(q, k, *extra, scale, causal, mask_kind, safe=True):
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"attention: query width {q.shape[-1]} != key width {k.shape[-1]}")
    shape = broadcast_shapes(q.shape[:-2], k.shape[:-2]) + (q.shape[-2], k.shape[-2])
    if mask_kind is not None:
        shape = broadcast_shapes(shape, extra[0].shape)
    return shape, np.result_type(q.dtype, k.dtype)


@functools.lru_cache(maxsize=64)
def _causal_hidden(xp, L, S):  # noqa: N803
    """The (L, S) keys each query may not see (the upper triangle), made once per shape."""
    hidden = xp.triu(xp.ones((L, S), dtype=bool), k=1)
    if xp is np:
        hidden.flags.writeable = False
    return hidden


def _scores(xp, q, k, mask, scale, causal, mask_kind):
    """The scaled, masked scores: a fresh array the softmax may overwrite."""
    s = xp.matmul(q, xp.swapaxes(k, -1, -2))
    s *= s.dtype.type(scale)
    if causal:
        xp.copyto(s, s.dtype.type(-np.inf), where=_causal_hidden(xp, *s.shape[-2:]))
    if mask_kind == "bool":
        s = xp.where(mask, s, s.dtype.type(-np.inf))
    elif mask_kind == "float":
        s = s + mask.astype(s.dtype, copy=False)
    return s


def _softmax_rows(xp, s, safe, masked=True):
    """Softmax over the last axis, in place in `s`. A row can have every key masked only
    under an explicit mask (`masked`): its maximum is -inf, its exponentials all 0."""
    top = xp.amax(s, axis=-1, keepdims=True)
    if masked:
        top = xp.where(xp.isfinite(top), top, top.dtype.type(0))
    s -= top
    xp.exp(s, out=s)
    total = s.sum(axis=-1, keepdims=True)  # >= 1 unless every key is masked
    if masked and safe:
        total = xp.where(total == 0, total.dtype.type(1), total)  # 0 / 1 = 0
    with np.errstate(invalid="ignore", divide="ignore"):
        s /= total  # unsafe: 0 / 0 = NaN on a fully masked row
    return s


@primitive("attention_probs", A, _probs_rule)
def attention_probs(xp, q, k, *mask, scale, causal, mask_kind, safe):
    """softmax(q k^T * scale, masked) over the keys: (..., L, S); fully masked rows give 0
    (safe) or NaN. Without an explicit mask, with Numba, the scaling, the causal mask and the
    softmax are one native pass over each row (both modes run this forward)."""
    if mask_kind is None:
        scores = xp.matmul(q, xp.swapaxes(k, -1, -2))
        result = native.scaled_softmax(scores, scale, causal)
        if result is not None:
            return result
    return _softmax_rows(xp, _scores(xp, q, k, mask[0] if mask else None, scale, causal,
                                     mask_kind), safe, mask_kind is not None)


@attention_probs.defvjp
def _attention_probs_vjp(g, y, q, k, *mask, needs, scale, causal, mask_kind, safe):
    ds = y * (g - sum_(g * y, axis=(len(y.shape) - 1,), keepdims=True))
    return _score_grads(ds, q, k, mask, needs, scale, mask_kind)


def _score_grads(ds, q, k, mask, needs, scale, mask_kind):
    """Gradients of q, k (and a float mask) from the gradient of the masked scores."""
    gq = matmul(ds, k) * scale if needs[0] else None
    gk = matmul(_swap(ds), q) * scale if needs[1] else None
    grads = [gq, gk]
    if mask:
        grads.append(ds if mask_kind == "float" and needs[2] else None)
    return tuple(grads)


def _attention_rule(q, k, v, *extra, scale, causal, mask_kind, dropout):
    probs, dtype = _probs_rule(q, k, *extra[:1] if mask_kind else (), scale=scale,
                               causal=causal, mask_kind=mask_kind)
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"attention: {k.shape[-2]} keys but {v.shape[-2]} values")
    batch = broadcast_shapes(probs[:-2], v.shape[:-2])
    return batch + (probs[-2], v.shape[-1]), np.result_type(dtype, v.dtype)


@primitive("attention", A, _attention_rule)
def attention(xp, q, k, v, *extra, scale, causal, mask_kind, dropout):
    """probs(q, k) [* dropout mask] @ v; `extra` = (mask if mask_kind) + (drop mask if dropout),
    the drop mask holding 1/(1-p) where kept and 0 where dropped."""
    mask = extra[0] if mask_kind else None
    p = _softmax_rows(xp, _scores(xp, q, k, mask, scale, causal, mask_kind), True,
                      mask_kind is not None)
    if dropout:
        p *= extra[-1]
    return xp.matmul(p, v)


@attention.defvjp
def _attention_vjp(g, y, q, k, v, *extra, needs, scale, causal, mask_kind, dropout):
    mask = extra[:1] if mask_kind else ()
    p = attention_probs(q, k, *mask, scale=scale, causal=causal, mask_kind=mask_kind,
                        safe=True)
    pd = p * extra[-1] if dropout else p
    gv = matmul(_swap(pd), g) if needs[2] else None
    dp = matmul(g, _swap(v))
    if dropout:
        dp = dp * extra[-1]
    ds = p * (dp - sum_(dp * p, axis=(len(p.shape) - 1,), keepdims=True))
    gq, gk, *gmask = _score_grads(ds, q, k, mask, needs[:2] + needs[3:], scale, mask_kind)
    return (gq, gk, gv, *gmask, *((None,) if dropout else ()))


# ----- ONNX lowerings (dlrun export): onnx(g, *input names, **attrs) -> output name ----------


def _reduce_last(g, op_type, x):
    if g.opset >= (13 if op_type == "ReduceSum" else 18):
        return g.op(op_type, x, g.ints([-1]), keepdims=1)
    return g.op(op_type, x, axes=[-1], keepdims=1)


def _causal_hidden_onnx(g, L, S):  # noqa: N803
    """The (L, S) keys each query may not see: a constant, or (L or S follows the sequence
    length, a dlrun.export.onnx.Dim) key index > query index from two Ranges at run time."""
    if isinstance(L, (int, np.integer)) and isinstance(S, (int, np.integer)):
        return g.const(np.triu(np.ones((L, S), dtype=bool), k=1))
    zero, one = (g.const(np.asarray(v, dtype=np.int64)) for v in (0, 1))

    def arange(n):
        return g.op("Range", zero, g.op("Squeeze", g.ints([n]), g.ints([0])), one)

    rows = g.op("Unsqueeze", arange(L), g.ints([1]))
    cols = g.op("Unsqueeze", arange(S), g.ints([0]))
    return g.op("Greater", cols, rows)


def _probs_onnx(g, q, k, mask, scale, causal, mask_kind, safe):
    """The probabilities as ONNX nodes, with _scores' masking and _softmax_rows' safe rows."""
    n = len(g.shape(k))
    kt = g.op("Transpose", k, perm=[*range(n - 2), n - 1, n - 2])
    dtype = np.result_type(g.dtype(q), g.dtype(k))
    s = g.op("Mul", g.op("MatMul", q, kt), g.const(np.asarray(scale, dtype=dtype)))
    ninf = g.const(np.asarray(-np.inf, dtype=dtype))
    if causal:
        s = g.op("Where", _causal_hidden_onnx(g, g.sym_shape(q)[-2], g.sym_shape(k)[-2]), ninf, s)
    if mask_kind == "bool":
        s = g.op("Where", mask, s, ninf)
    elif mask_kind == "float":
        s = g.op("Add", s, g.op("Cast", mask, to=g.tensor_type(dtype)))
    if mask_kind is None:  # causal rows always see their first key: a plain softmax
        return g.op("Softmax", s, axis=-1)
    zero, one = (g.const(np.asarray(v, dtype=dtype)) for v in (0, 1))
    top = _reduce_last(g, "ReduceMax", s)
    top = g.op("Where", g.op("IsInf", top), zero, top)
    e = g.op("Exp", g.op("Sub", s, top))
    total = _reduce_last(g, "ReduceSum", e)
    if safe:
        total = g.op("Where", g.op("Equal", total, zero), one, total)
    return g.op("Div", e, total)


def _attention_probs_onnx(g, q, k, *mask, scale, causal, mask_kind, safe):
    return _probs_onnx(g, q, k, mask[0] if mask else None, scale, causal, mask_kind, safe)


def _attention_onnx(g, q, k, v, *extra, scale, causal, mask_kind, dropout):
    p = _probs_onnx(g, q, k, extra[0] if mask_kind else None, scale, causal, mask_kind, True)
    if dropout:
        p = g.op("Mul", p, extra[-1])
    return g.op("MatMul", p, v)


attention_probs.onnx = _attention_probs_onnx
attention.onnx = _attention_onnx
