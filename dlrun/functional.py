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
from collections import namedtuple
from collections.abc import Sequence
from types import FunctionType
from typing import Any

import numpy as np

from dlrun.engine.prims import attention as _attn
from dlrun.engine.prims import conv as _conv
from dlrun.engine.prims import elementwise as _ew
from dlrun.engine.prims import linalg as _la
from dlrun.engine.prims import movement as _mv
from dlrun.engine.prims import random as _rnd
from dlrun.engine.prims import reduce as _rd
from dlrun.engine.tensor import Tensor, _lift

MaxResult = namedtuple("MaxResult", ["values", "indices"])


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


def _dim(d: int, ndim: int) -> int:
    if not -builtins.max(ndim, 1) <= d < builtins.max(ndim, 1):
        raise IndexError(f"dimension {d} is out of range for a tensor of {ndim} dims")
    return d % builtins.max(ndim, 1)


def _axes(dim: Any, ndim: int) -> tuple[int, ...] | None:
    if dim is None:
        return None
    if isinstance(dim, int):
        dim = (dim,)
    return tuple(sorted(_dim(d, ndim) for d in dim))


def _shape_arg(shape: tuple[Any, ...]) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], list | tuple):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


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
    return _ew.copy(input)


def pow(input: Any, exponent: Any) -> Tensor:  # noqa: A001
    if not isinstance(input, Tensor):
        input = _t(input, exponent)
    if isinstance(exponent, int | float) and not isinstance(exponent, bool):
        if exponent == 1:
            return input
        if exponent == 2:
            return input * input
    return _ew.pow(input, _t(exponent, input))


def maximum(input: Tensor, other: Any) -> Tensor:
    return _ew.maximum(input, _t(other, input))


def minimum(input: Tensor, other: Any) -> Tensor:
    return _ew.minimum(input, _t(other, input))


def clamp(input: Tensor, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
    out = input
    if min is not None:
        out = maximum(out, min)
    if max is not None:
        out = minimum(out, max)
    return out


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
    return _rd.sum(input, axis=_axes(dim, input.ndim), keepdims=keepdim)


def mean(input: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    axes = _axes(dim, input.ndim)
    count = input.numel() if axes is None else math.prod(input.shape[a] for a in axes)
    return _rd.sum(input, axis=axes, keepdims=keepdim) * (1.0 / builtins.max(count, 1))


def var(input: Tensor, dim: Any = None, unbiased: bool = True, keepdim: bool = False,
        correction: int | None = None) -> Tensor:
    axes = _axes(dim, input.ndim)
    count = input.numel() if axes is None else math.prod(input.shape[a] for a in axes)
    ddof = (1 if unbiased else 0) if correction is None else correction
    centered = input - mean(input, dim, keepdim=True)
    return sum(centered * centered, dim, keepdim) * (1.0 / builtins.max(count - ddof, 1))


def std(input: Tensor, dim: Any = None, unbiased: bool = True, keepdim: bool = False) -> Tensor:
    return sqrt(var(input, dim, unbiased=unbiased, keepdim=keepdim))


def amax(input: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    return _rd.amax(input, axis=_axes(dim, input.ndim), keepdims=keepdim)


def amin(input: Tensor, dim: Any = None, keepdim: bool = False) -> Tensor:
    return neg(amax(neg(input), dim, keepdim))


def argmax(input: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    axis = None if dim is None else _dim(dim, input.ndim)
    return _rd.argmax(input, axis=axis, keepdims=keepdim and axis is not None)


def argmin(input: Tensor, dim: int | None = None, keepdim: bool = False) -> Tensor:
    axis = None if dim is None else _dim(dim, input.ndim)
    return _rd.argmin(input, axis=axis, keepdims=keepdim and axis is not None)


def max(input: Tensor, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001
    """max(x) -> the largest value; max(x, dim) -> (values, indices); max(x, other) -> maximum."""
    if isinstance(dim, Tensor):
        return maximum(input, dim)
    if dim is None:
        return amax(input)
    return MaxResult(amax(input, dim, keepdim), argmax(input, dim, keepdim))


def min(input: Tensor, dim: Any = None, keepdim: bool = False) -> Any:  # noqa: A001
    if isinstance(dim, Tensor):
        return minimum(input, dim)
    if dim is None:
        return amin(input)
    return MaxResult(amin(input, dim, keepdim), argmin(input, dim, keepdim))


def logsumexp(input: Tensor, dim: Any, keepdim: bool = False) -> Tensor:
    return _rd.logsumexp(input, axis=_axes(dim, input.ndim), keepdims=keepdim)


def softmax(input: Tensor, dim: int) -> Tensor:
    return _rd.softmax(input, axis=_dim(dim, input.ndim))


def log_softmax(input: Tensor, dim: int) -> Tensor:
    return _rd.log_softmax(input, axis=_dim(dim, input.ndim))


# ----- linear algebra ---------------------------------------------------------------------------


def matmul(input: Tensor, other: Any) -> Tensor:
    """Matrix product with NumPy/PyTorch rules for 1-D operands and batch broadcasting."""
    other = _t(other, input)
    a, b = input, other
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("matmul: both arguments need at least 1 dimension")
    squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
    if squeeze_a:
        a = reshape(a, 1, a.shape[0])
    if squeeze_b:
        b = reshape(b, b.shape[0], 1)
    out = _la.matmul(a, b)
    if squeeze_a and squeeze_b:
        return reshape(out, ())
    if squeeze_a:
        return reshape(out, *out.shape[:-2], out.shape[-1])
    if squeeze_b:
        return reshape(out, *out.shape[:-1])
    return out


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """input @ weight.T + bias, with weight shaped (out_features, in_features)."""
    out = matmul(input, transpose(weight, 0, 1))
    return out if bias is None else out + bias


# ----- shapes -----------------------------------------------------------------------------------


def reshape(input: Tensor, *shape: Any) -> Tensor:
    shape = _shape_arg(shape)
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if shape.count(-1) > 1 or known == 0 or input.numel() % known:
            raise ValueError(f"cannot reshape a tensor of shape {input.shape} into {shape}")
        shape = tuple(input.numel() // known if s == -1 else s for s in shape)
    if shape == input.shape:
        return input
    return _mv.reshape(input, shape=shape)


view = reshape


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    if input.ndim == 0:
        return reshape(input, 1)
    s, e = _dim(start_dim, input.ndim), _dim(end_dim, input.ndim)
    shape = input.shape[:s] + (math.prod(input.shape[s : e + 1]),) + input.shape[e + 1 :]
    return reshape(input, shape)


def permute(input: Tensor, *dims: Any) -> Tensor:
    axes = tuple(_dim(d, input.ndim) for d in _shape_arg(dims))
    if axes == tuple(range(input.ndim)):
        return input
    return _mv.permute(input, axes=axes)


def transpose(input: Tensor, dim0: int, dim1: int) -> Tensor:
    axes = list(range(input.ndim))
    d0, d1 = _dim(dim0, input.ndim), _dim(dim1, input.ndim)
    axes[d0], axes[d1] = axes[d1], axes[d0]
    return permute(input, *axes)


def broadcast_to(input: Tensor, shape: Sequence[int]) -> Tensor:
    shape = tuple(int(s) for s in shape)
    return input if shape == input.shape else _mv.broadcast_to(input, shape=shape)


def expand(input: Tensor, *sizes: Any) -> Tensor:
    sizes = _shape_arg(sizes)
    lead = len(sizes) - input.ndim
    shape = tuple(
        input.shape[i - lead] if s == -1 else s for i, s in enumerate(sizes)
    )
    return broadcast_to(input, shape)


def squeeze(input: Tensor, dim: Any = None) -> Tensor:
    if dim is None:
        return reshape(input, tuple(s for s in input.shape if s != 1))
    axes = _axes(dim, input.ndim)
    return reshape(input, tuple(s for i, s in enumerate(input.shape) if i not in axes or s != 1))


def unsqueeze(input: Tensor, dim: int) -> Tensor:
    d = dim % (input.ndim + 1)
    return reshape(input, input.shape[:d] + (1,) + input.shape[d:])


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
    d = _dim(dim, tensor.ndim)
    n = tensor.shape[d]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        sizes = [builtins.min(step, n - i) for i in range(0, n, step)]
    else:
        sizes = list(split_size_or_sections)
        if builtins.sum(sizes) != n:
            raise ValueError(f"split: sections {sizes} do not add up to dim size {n}")
    out, start = [], 0
    for size in sizes:
        out.append(narrow(tensor, d, start, size))
        start += size
    return tuple(out)


def chunk(input: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    n = input.shape[_dim(dim, input.ndim)]
    return split(input, -(-n // chunks), dim)


def narrow(input: Tensor, dim: int, start: int, length: int) -> Tensor:
    d = _dim(dim, input.ndim)
    index = tuple(("s", None, None, None) for _ in range(d)) + (("s", start, start + length, 1),)
    return _mv.getitem(input, index=index)


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
    return _mv.gather(input, _index_tensor(index, input), axis=_dim(dim, input.ndim))


def index_select(input: Tensor, dim: int, index: Any) -> Tensor:
    return _mv.take(input, _index_tensor(index, input), axis=_dim(dim, input.ndim))


def _index_tensor(index: Any, like: Tensor) -> Tensor:
    if isinstance(index, Tensor):
        return index
    from dlrun.engine.creation import tensor

    return tensor(np.asarray(index, dtype=np.int64), device=like.device)


def _is_array_index(item: Any) -> bool:
    return isinstance(item, Tensor | np.ndarray | list)


def index(input: Tensor, idx: Any) -> Tensor:
    """x[idx]: basic slicing (ints, slices, None, ...) and integer-array indexing."""
    items = idx if isinstance(idx, tuple) else (idx,)
    if builtins.any(_is_array_index(i) for i in items):
        return _advanced_index(input, items)
    n_real = builtins.sum(1 for i in items if i is not None and i is not Ellipsis)
    if n_real > input.ndim:
        raise IndexError(f"too many indices for a tensor of {input.ndim} dims")
    expanded: list[Any] = []
    for item in items:
        if item is Ellipsis:
            expanded.extend([slice(None)] * (input.ndim - n_real))
        else:
            expanded.append(item)
    norm, axis = [], 0
    for item in expanded:
        if item is None:
            norm.append(("n",))
            continue
        if isinstance(item, slice):
            norm.append(("s", item.start, item.stop, item.step))
        elif isinstance(item, int | np.integer):
            size = input.shape[axis]
            if not -size <= item < size:
                raise IndexError(f"index {item} is out of bounds for dim {axis} of size {size}")
            norm.append(("i", int(item) % size))
        else:
            raise TypeError(f"unsupported index {item!r}")
        axis += 1
    return _mv.getitem(input, index=tuple(norm))


def _advanced_index(input: Tensor, items: tuple[Any, ...]) -> Tensor:
    arrays = [i for i in items if _is_array_index(i)]
    if len(arrays) == 1:
        pos = next(k for k, i in enumerate(items) if _is_array_index(i))
        rest = items[:pos] + items[pos + 1 :]
        if builtins.all(isinstance(i, slice) and i == slice(None) for i in rest):
            return _mv.take(input, _index_tensor(arrays[0], input), axis=pos)
    if len(arrays) == len(items):
        # x[i, j, ...]: flatten the indexed leading dims and gather with one linear index.
        k = len(items)
        idx = [_index_tensor(i, input) for i in items]
        linear = idx[0]
        for d in range(1, k):
            linear = linear * input.shape[d] + idx[d]
        flat = reshape(input, (math.prod(input.shape[:k]),) + input.shape[k:])
        return _mv.take(flat, linear, axis=0)
    raise NotImplementedError(
        "indexing mixes integer arrays with slices in a way dlrun does not support yet; "
        "use index_select/gather"
    )


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


# ----- Tensor methods with PyTorch's names -------------------------------------------------------
# The engine's Tensor defines only the methods that are single primitives; the ones that compose
# ops are defined here, once, and attached to the class when this module is imported (`import
# dlrun` imports it). Their bodies call this module's functions (class bodies are not an enclosing
# scope, so `sum` below is dlrun.functional.sum).


_index = index  # Tensor.__getitem__'s parameter is named `index` too


class _TensorMethods:
    """A namespace: every function below becomes a method of Tensor."""

    def sum(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return sum(self, dim, keepdim)

    def clone(self) -> Tensor:
        return clone(self)

    def mean(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return mean(self, dim, keepdim)

    def var(self, dim: Any = None, unbiased: bool = True, keepdim: bool = False) -> Tensor:
        return var(self, dim, unbiased=unbiased, keepdim=keepdim)

    def std(self, dim: Any = None, unbiased: bool = True, keepdim: bool = False) -> Tensor:
        return std(self, dim, unbiased=unbiased, keepdim=keepdim)

    def max(self, dim: int | None = None, keepdim: bool = False) -> Any:
        return max(self, dim, keepdim)

    def min(self, dim: int | None = None, keepdim: bool = False) -> Any:
        return min(self, dim, keepdim)

    def amax(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return amax(self, dim, keepdim)

    def amin(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return amin(self, dim, keepdim)

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return argmax(self, dim, keepdim)

    def argmin(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        return argmin(self, dim, keepdim)

    def logsumexp(self, dim: Any, keepdim: bool = False) -> Tensor:
        return logsumexp(self, dim, keepdim)

    def softmax(self, dim: int) -> Tensor:
        return softmax(self, dim)

    def log_softmax(self, dim: int) -> Tensor:
        return log_softmax(self, dim)

    def pow(self, exponent: Any) -> Tensor:
        return pow(self, exponent)

    def __pow__(self, other: Any) -> Tensor:
        return pow(self, other)

    def __rpow__(self, other: Any) -> Tensor:
        return pow(_lift(other, self), self)

    def clamp(self, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
        return clamp(self, min, max)

    def matmul(self, other: Any) -> Tensor:
        return matmul(self, other)

    def __matmul__(self, other: Any) -> Tensor:
        return matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return matmul(_lift(other, self), self)

    def __getitem__(self, index: Any) -> Tensor:
        return _index(self, index)

    def reshape(self, *shape: Any) -> Tensor:
        return reshape(self, *shape)

    def view(self, *shape: Any) -> Tensor:
        return reshape(self, *shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        return flatten(self, start_dim, end_dim)

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        return transpose(self, dim0, dim1)

    def t(self) -> Tensor:
        return transpose(self, 0, 1) if self.ndim == 2 else self

    def permute(self, *dims: Any) -> Tensor:
        return permute(self, *dims)

    def expand(self, *shape: Any) -> Tensor:
        return expand(self, *shape)

    def broadcast_to(self, shape: tuple[int, ...]) -> Tensor:
        return broadcast_to(self, shape)

    def squeeze(self, dim: int | None = None) -> Tensor:
        return squeeze(self, dim)

    def unsqueeze(self, dim: int) -> Tensor:
        return unsqueeze(self, dim)

    def split(self, split_size_or_sections: Any, dim: int = 0) -> tuple[Tensor, ...]:
        return split(self, split_size_or_sections, dim)

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        return chunk(self, chunks, dim)

    def gather(self, dim: int, index: Tensor) -> Tensor:
        return gather(self, dim, index)

    def masked_fill(self, mask: Tensor, value: float) -> Tensor:
        return where(mask, _lift(value, self), self)


def _attach_tensor_methods() -> None:
    for name, method in list(vars(_TensorMethods).items()):
        if isinstance(method, FunctionType):
            method.__qualname__ = f"Tensor.{name}"
            setattr(Tensor, name, method)


_attach_tensor_methods()
