"""Ops as functions, with PyTorch's names, argument order and keywords.

Each function normalizes its arguments and composes primitives; the math of every op lives once,
in dlrun.engine.prims. Works the same in eager mode and inside `dlrun.compile`.

>>> import dlrun, dlrun.functional as F
>>> x = dlrun.tensor([[1.0, -2.0, 3.0]], requires_grad=True)
>>> F.relu(x).sum().backward()
>>> x.grad
tensor([[1., 0., 1.]])
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from dlrun.engine.axes import normalize_dim as _dim
from dlrun.engine.creation import index_tensor as _index_tensor
from dlrun.engine.prims import attention as _attn
from dlrun.engine.prims import conv as _conv
from dlrun.engine.prims import elementwise as _ew
from dlrun.engine.prims import movement as _mv
from dlrun.engine.prims import random as _rnd
from dlrun.engine.tensor import (
    MaxResult,  # noqa: F401  (a public name of dlrun.functional)
    Tensor,
    _lift,
)


def _t(x: Any, like: Tensor | None = None) -> Tensor:
    if isinstance(x, Tensor):
        return x
    if like is not None:
        return _lift(x, like)
    from dlrun.engine.creation import tensor

    return tensor(x)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


# ----- elementwise ------------------------------------------------------------------------------


def add(input: Tensor, other: Any, alpha: float = 1.0) -> Tensor:
    other = _t(other, input)
    return _ew.add(input, other if alpha == 1.0 else other * alpha)


def sub(input: Tensor, other: Any, alpha: float = 1.0) -> Tensor:
    other = _t(other, input)
    return _ew.sub(input, other if alpha == 1.0 else other * alpha)


def mul(input: Tensor, other: Any) -> Tensor:
    return _ew.mul(input, _t(other, input))


def div(input: Tensor, other: Any) -> Tensor:
    return _ew.div(input, _t(other, input))


def neg(input: Tensor) -> Tensor:
    return _ew.neg(input)


def clone(input: Tensor) -> Tensor:
    """A copy in memory of its own, differentiable (torch.clone)."""
    return input.clone()


def pow(input: Any, exponent: Any) -> Tensor:  # noqa: A001
    if not isinstance(input, Tensor):
        input = _t(input, exponent)
    return input.pow(exponent)


def maximum(input: Tensor, other: Any) -> Tensor:
    return _ew.maximum(input, _t(other, input))


def minimum(input: Tensor, other: Any) -> Tensor:
    return _ew.minimum(input, _t(other, input))


def clamp(input: Tensor, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
    return input.clamp(min, max)


clip = clamp


def exp(input: Tensor) -> Tensor:
    return _ew.exp(input)


def log(input: Tensor) -> Tensor:
    return _ew.log(input)


def sqrt(input: Tensor) -> Tensor:
    return _ew.sqrt(input)


def abs(input: Tensor) -> Tensor:  # noqa: A001
    return _ew.abs(input)


def sign(input: Tensor) -> Tensor:
    return _ew.sign(input)


def tanh(input: Tensor) -> Tensor:
    return _ew.tanh(input)


def sigmoid(input: Tensor) -> Tensor:
    return _ew.sigmoid(input)


def relu(input: Tensor) -> Tensor:
    return _ew.relu(input)


def leaky_relu(input: Tensor, negative_slope: float = 0.01) -> Tensor:
    return _ew.leaky_relu(input, negative_slope=float(negative_slope))


def erf(input: Tensor) -> Tensor:
    return _ew.erf(input)


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """GELU: x * Phi(x); approximate='tanh' uses the tanh formula (as PyTorch)."""
    if approximate == "tanh":
        inner = (input + input * input * input * 0.044715) * math.sqrt(2.0 / math.pi)
        return input * 0.5 * (tanh(inner) + 1.0)
    if approximate != "none":
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return input * 0.5 * (erf(input * (1.0 / math.sqrt(2.0))) + 1.0)


def where(condition: Tensor, input: Any, other: Any) -> Tensor:
    like = input if isinstance(input, Tensor) else other
    if not isinstance(like, Tensor):
        raise TypeError("where: input or other must be a tensor")
    return _ew.where(_t(condition, like), _t(input, like), _t(other, like))


def eq(input: Tensor, other: Any) -> Tensor:
    return _ew.eq(input, _t(other, input))


def ne(input: Tensor, other: Any) -> Tensor:
    return _ew.ne(input, _t(other, input))


def lt(input: Tensor, other: Any) -> Tensor:
    return _ew.lt(input, _t(other, input))


def le(input: Tensor, other: Any) -> Tensor:
    return _ew.le(input, _t(other, input))


def gt(input: Tensor, other: Any) -> Tensor:
    return _ew.gt(input, _t(other, input))


def ge(input: Tensor, other: Any) -> Tensor:
    return _ew.ge(input, _t(other, input))


# ----- reductions -------------------------------------------------------------------------------


def sum(input: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:  # noqa: A001
    return input.sum(dim, keepdim)


def mean(input: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    return input.mean(dim, keepdim)


def var(input: Tensor, dim: Any = None, unbiased: bool = True, keepdim: bool = False,
        correction: int | None = None) -> Tensor:
    return input.var(dim, unbiased, keepdim, correction)


def std(input: Tensor, dim: Any = None, unbiased: bool = True, keepdim: bool = False) -> Tensor:
    return input.std(dim, unbiased, keepdim)


def amax(input: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    return input.amax(dim, keepdim)


def amin(input: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    return input.amin(dim, keepdim)


def argmax(input: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    return input.argmax(dim, keepdim)


def argmin(input: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    return input.argmin(dim, keepdim)


def max(input: Tensor, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001
    """max(x) -> the largest value; max(x, dim) -> (values, indices); max(x, other) -> maximum."""
    return input.max(dim, keepdim)


def min(input: Tensor, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001
    return input.min(dim, keepdim)


def logsumexp(input: Tensor, dim: Any, keepdim: bool = False) -> Tensor:
    return input.logsumexp(dim, keepdim)


def softmax(input: Tensor, dim: int) -> Tensor:
    return input.softmax(dim)


def log_softmax(input: Tensor, dim: int) -> Tensor:
    return input.log_softmax(dim)


# ----- linear algebra ---------------------------------------------------------------------------


def matmul(input: Tensor, other: Any) -> Tensor:
    """Matrix product with NumPy/PyTorch rules for 1-D operands and batch broadcasting."""
    return input.matmul(other)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """input @ weight.T + bias, with weight shaped (out_features, in_features)."""
    out = matmul(input, transpose(weight, 0, 1))
    return out if bias is None else out + bias


# ----- shapes -----------------------------------------------------------------------------------


def reshape(input: Tensor, *shape: Any) -> Tensor:
    return input.reshape(*shape)


view = reshape


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    return input.flatten(start_dim, end_dim)


def permute(input: Tensor, *dims: Any) -> Tensor:
    return input.permute(*dims)


def transpose(input: Tensor, dim0: int, dim1: int) -> Tensor:
    return input.transpose(dim0, dim1)


def broadcast_to(input: Tensor, shape: Sequence[int]) -> Tensor:
    return input.broadcast_to(shape)


def expand(input: Tensor, *sizes: Any) -> Tensor:
    return input.expand(*sizes)


def squeeze(input: Tensor, dim: Any = None) -> Tensor:
    return input.squeeze(dim)


def unsqueeze(input: Tensor, dim: int) -> Tensor:
    return input.unsqueeze(dim)


def cat(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    if len(tensors) == 1:
        return tensors[0]
    return _mv.concat(*tensors, axis=_dim(dim, tensors[0].ndim))


concat = cat


def stack(tensors: Sequence[Tensor], dim: int = 0) -> Tensor:
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty list of tensors")
    d = dim % (tensors[0].ndim + 1)
    return cat([unsqueeze(t, d) for t in tensors], dim=d)


def split(tensor: Tensor, split_size_or_sections: Any, dim: int = 0) -> tuple[Tensor, ...]:
    return tensor.split(split_size_or_sections, dim)


def chunk(input: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    return input.chunk(chunks, dim)


def narrow(input: Tensor, dim: int, start: int, length: int) -> Tensor:
    return input.narrow(dim, start, length)


def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> Tensor:
    """PyTorch order: (last_left, last_right, second_last_left, ...)."""
    if mode != "constant":
        raise NotImplementedError(f"pad mode {mode!r} (only 'constant')")
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise ValueError(f"pad: {len(pad)} values do not fit a tensor of {input.ndim} dims")
    widths = [(0, 0)] * input.ndim
    for i in range(len(pad) // 2):
        widths[input.ndim - 1 - i] = (int(pad[2 * i]), int(pad[2 * i + 1]))
    return _mv.pad(input, pad_width=tuple(widths), value=float(value))


def gather(input: Tensor, dim: int, index: Any) -> Tensor:
    return input.gather(dim, index)


def index_select(input: Tensor, dim: int, index: Any) -> Tensor:
    return input.index_select(dim, index)


def index(input: Tensor, idx: Any) -> Tensor:
    """x[idx]: basic slicing (ints, slices, None, ...) and integer-array indexing."""
    return input[idx]


# ----- neural-network ops -----------------------------------------------------------------------


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """2-D convolution of NCHW input with an OIHW weight."""
    if groups != 1:
        raise NotImplementedError("conv2d with groups > 1")
    dil = _pair(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            padding = 0
        elif padding == "same":
            kh, kw = weight.shape[2:]
            if (dil[0] * (kh - 1)) % 2 or (dil[1] * (kw - 1)) % 2 or _pair(stride) != (1, 1):
                raise NotImplementedError("padding='same' with an even kernel or stride > 1")
            padding = (dil[0] * (kh - 1) // 2, dil[1] * (kw - 1) // 2)
        else:
            raise ValueError("conv2d: padding must be an int, a pair, 'valid' or 'same'")
    if input.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"conv2d expects NCHW input and OIHW weight, got {input.shape} and "
                         f"{weight.shape}")
    if input.shape[1] != weight.shape[1]:
        raise ValueError(f"conv2d: input has {input.shape[1]} channels but the weight expects "
                         f"{weight.shape[1]}")
    pad = _pair(padding)
    n, (o, c, kh, kw) = input.shape[0], weight.shape
    cols = _conv.im2col(input, kernel=(kh, kw), stride=_pair(stride), dilation=dil, padding=pad)
    wmat = reshape(permute(weight, 0, 2, 3, 1), o, kh * kw * c)  # (kh, kw, c): im2col's order
    out = matmul(wmat, cols)  # (O, N*OH*OW): one GEMM
    oh = _conv.out_size(input.shape[2], kh, _pair(stride)[0], pad[0], dil[0])
    out = permute(reshape(out, o, n, oh, cols.shape[1] // (n * oh)), 1, 0, 2, 3)  # NCHW view
    if bias is not None:
        out = out + reshape(bias, 1, -1, 1, 1)
    return out


def max_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Tensor:
    k = _pair(kernel_size)
    return _conv.max_pool2d(input, kernel=k, stride=_pair(stride) if stride else k,
                            padding=_pair(padding))


def avg_pool2d(input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Tensor:
    k = _pair(kernel_size)
    return _conv.avg_pool2d(input, kernel=k, stride=_pair(stride) if stride else k,
                            padding=_pair(padding))


def embedding(input: Any, weight: Tensor) -> Tensor:
    """Rows of weight (num_embeddings, dim) picked by integer indices of any shape."""
    return _mv.take(weight, _index_tensor(input, weight), axis=0)


def dropout(input: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Inverted dropout: zero elements with probability p, scale the rest by 1/(1-p)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    mask = _rnd.dropout_mask(shape=input.shape, p=float(p), dtype=input.dtype,
                             device=input.device)
    return input * mask


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor,
                                 attn_mask: Tensor | None = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None) -> Tensor:
    """softmax(query @ key^T * scale + mask) @ value, with PyTorch's semantics.

    Shapes (..., L, E), (..., S, E), (..., S, Ev) -> (..., L, Ev). A boolean `attn_mask` marks
    the keys each query may attend to (True = attend); a float mask is added to the scores; it
    must broadcast to (..., L, S). `is_causal` hides the keys after each query. A query whose
    keys are all masked gets zeros, and zero gradients (PyTorch's "safe" softmax, since 2.5).
    `scale` defaults to 1/sqrt(E). Dropout (`dropout_p`) applies to the attention probabilities,
    always (as in PyTorch: pass 0.0 in evaluation). The backward keeps one (L, S) tensor from
    the forward: the probabilities (with dropout, only the dropout mask; it recomputes them).

    >>> q = k = v = dlrun.randn(2, 4, 8)
    >>> F.scaled_dot_product_attention(q, k, v, is_causal=True).shape
    (2, 4, 8)
    """
    if query.ndim < 2 or key.ndim < 2 or value.ndim < 2:
        raise ValueError("scaled_dot_product_attention: query, key and value need at least 2 "
                         f"dims, got {query.shape}, {key.shape}, {value.shape}")
    if is_causal and attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: give attn_mask or is_causal, not both")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    extra, kind = [], None
    if attn_mask is not None:
        attn_mask = _t(attn_mask, query)
        _check_mask(attn_mask.shape, query, key)
        kind = "bool" if attn_mask.dtype == np.bool_ else "float"
        extra.append(attn_mask)
    if dropout_p > 0.0:
        probs = query.shape[:-1] + (key.shape[-2],)
        probs = np.broadcast_shapes(probs, key.shape[:-2] + (1, 1))
        extra.append(_rnd.dropout_mask(shape=tuple(probs), p=float(dropout_p),
                                       dtype=query.dtype, device=query.device))
    if dropout_p == 0.0:  # the probabilities, kept for the backward, times the values
        probs = _attn.attention_probs(query, key, *extra, scale=scale, causal=bool(is_causal),
                                      mask_kind=kind, safe=True)
        return matmul(probs, value)
    # with dropout: one primitive whose backward recomputes the probabilities, so only the
    # dropout mask is kept rather than the probabilities before and after dropping
    return _attn.attention(query, key, value, *extra, scale=scale, causal=bool(is_causal),
                           mask_kind=kind, dropout=True)


def _check_mask(shape: tuple[int, ...], query: Tensor, key: Tensor) -> None:
    """An attention mask must broadcast to the scores' shape (..., L, S)."""
    scores = np.broadcast_shapes(query.shape[:-2], key.shape[:-2]) + (
        query.shape[-2], key.shape[-2])
    try:
        ok = np.broadcast_shapes(shape, scores) == scores
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"attn_mask of shape {tuple(shape)} does not broadcast to the "
                         f"attention scores' shape {tuple(scores)} (..., L, S)")


def layer_norm(input: Tensor, normalized_shape: Sequence[int], weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    n = len(tuple(normalized_shape)) if not isinstance(normalized_shape, int) else 1
    dims = tuple(range(input.ndim - n, input.ndim))
    mu = mean(input, dims, keepdim=True)
    centered = input - mu
    v = mean(centered * centered, dims, keepdim=True)
    out = centered / sqrt(v + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
               weight: Tensor | None = None, bias: Tensor | None = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Batch normalization over N (and H, W); in training, running stats are updated in place."""
    dims = (0,) + tuple(range(2, input.ndim))
    shape = (1, input.shape[1]) + (1,) * (input.ndim - 2)
    if training:
        mu = mean(input, dims, keepdim=True)
        centered = input - mu
        v = mean(centered * centered, dims, keepdim=True)
        if running_mean is not None and running_var is not None:
            from dlrun.engine.autograd import no_grad

            n = input.numel() // input.shape[1]
            with no_grad():
                running_mean.copy_(running_mean * (1 - momentum) + reshape(mu.detach(), -1)
                                   * momentum)
                unbiased = reshape(v.detach(), -1) * (n / builtins.max(n - 1, 1))
                running_var.copy_(running_var * (1 - momentum) + unbiased * momentum)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("batch_norm in eval mode needs running_mean and running_var")
        centered = input - reshape(running_mean, shape)
        v = reshape(running_var, shape)
    out = centered / sqrt(v + eps)
    if weight is not None:
        out = out * reshape(weight, shape)
    if bias is not None:
        out = out + reshape(bias, shape)
    return out


# ----- losses -----------------------------------------------------------------------------------


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return mean(loss)
    if reduction == "sum":
        return sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _classes_last(input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(N, C, d1, ...) scores and (N, d1, ...) targets -> (M, C) and (M,)."""
    if input.ndim == 1:
        return unsqueeze(input, 0), reshape(target, 1)
    if input.ndim > 2:
        input = permute(input, 0, *range(2, input.ndim), 1)
        input = reshape(input, -1, input.shape[-1])
    return input, reshape(target, -1)


def nll_loss(input: Tensor, target: Any, weight: Tensor | None = None, ignore_index: int = -100,
             reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of integer class targets given log-probabilities (N, C, ...)."""
    return _nll(input, _index_tensor(target, input), weight, ignore_index, reduction, 0.0)


def _nll(logp: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int,
         reduction: str, label_smoothing: float) -> Tensor:
    out_shape = target.shape
    logp2, t = _classes_last(logp, target)
    num_classes = logp2.shape[1]
    keep = ne(t, ignore_index)
    safe_t = where(keep, t, 0)
    picked = reshape(_mv.gather(logp2, unsqueeze(safe_t, 1), axis=1), -1)
    w = keep.to_dtype(logp.dtype)
    if weight is not None:
        w = w * _mv.take(weight, safe_t, axis=0)
    loss = neg(picked) * w
    if label_smoothing > 0.0:
        per_class = logp2 if weight is None else logp2 * weight
        smooth = neg(sum(per_class, 1)) * keep.to_dtype(logp.dtype) * (1.0 / num_classes)
        loss = loss * (1.0 - label_smoothing) + smooth * label_smoothing
    if reduction == "mean":
        return sum(loss) / sum(w)
    if reduction == "none":
        return reshape(loss, out_shape)
    return _reduce(loss, reduction)


def cross_entropy(input: Tensor, target: Any, weight: Tensor | None = None,
                  ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Softmax cross entropy of scores (N, C, ...) against integer classes or probabilities."""
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    class_dim = 1 if input.ndim > 1 else 0
    logp = log_softmax(input, class_dim)
    if isinstance(target, Tensor) and target.dtype.kind == "f":
        c = input.shape[class_dim]
        if label_smoothing > 0.0:
            target = target * (1.0 - label_smoothing) + label_smoothing / c
        per = logp * target if weight is None else logp * target * reshape(
            weight, (c,) + (1,) * (input.ndim - class_dim - 1))
        return _reduce(neg(sum(per, class_dim)), reduction)
    return _nll(logp, _index_tensor(target, input), weight, ignore_index, reduction,
                label_smoothing)


def mse_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    diff = input - _t(target, input)
    return _reduce(diff * diff, reduction)


def l1_loss(input: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    return _reduce(abs(input - _t(target, input)), reduction)


def binary_cross_entropy_with_logits(input: Tensor, target: Any, weight: Tensor | None = None,
                                     reduction: str = "mean",
                                     pos_weight: Tensor | None = None) -> Tensor:
    """Sigmoid + binary cross entropy in one numerically stable formula."""
    y = _t(target, input)
    softplus_neg = log(exp(neg(abs(input))) + 1.0) + relu(neg(input))  # log(1 + exp(-x))
    if pos_weight is None:
        loss = input - input * y + softplus_neg
    else:
        loss = (1.0 - y) * input + (y * (pos_weight - 1.0) + 1.0) * softplus_neg
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction)
