"""dlrun.Tensor: a backend array (NumPy or CuPy) or, while tracing, a symbolic value.

A concrete tensor holds `_value`; a symbolic one (inside `dlrun.compile` tracing) holds `_sym`, the
id of the graph node that will compute it, and only knows its shape, dtype and device. Operators and
methods go through the primitives, so both kinds behave alike.
"""

from __future__ import annotations

import math
from collections import namedtuple
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from dlrun.backend import get_xp, normalize_device, to_device
from dlrun.engine import autograd, mode
from dlrun.engine.axes import normalize_axes as _axes
from dlrun.engine.axes import normalize_dim as _dim
from dlrun.engine.axes import shape_arg as _shape_arg
from dlrun.engine.prims import elementwise as _ew
from dlrun.engine.prims import linalg as _la
from dlrun.engine.prims import movement as _mv
from dlrun.engine.prims import reduce as _rd
from dlrun.engine.source import user_location
from dlrun.errors import TraceError

MaxResult = namedtuple("MaxResult", ["values", "indices"])


class Tensor:
    """An n-dimensional array with autograd, on the CPU (NumPy) or a GPU (CuPy)."""

    __slots__ = (
        "_value",
        "_sym",
        "_xp",
        "shape",
        "dtype",
        "device",
        "requires_grad",
        "_grad",
        "_ctx",
        "_retains_grad",
        "__weakref__",
    )
    __array_priority__ = 1000  # make `ndarray op Tensor` defer to Tensor's reflected operators

    def __init__(
        self,
        data: Any,
        requires_grad: bool = False,
        dtype: Any = None,
        device: str | None = None,
    ) -> None:
        from dlrun.engine.creation import as_array

        value, device, xp = as_array(data, dtype=dtype, device=device)
        self._init(value, None, xp, value.shape, value.dtype, device, requires_grad)

    def _init(self, value, sym, xp, shape, dtype, device, requires_grad) -> None:  # noqa: ANN001
        self._value = value
        self._sym = sym
        self._xp = xp
        self.shape = shape
        self.dtype = dtype
        self.device = device
        self.requires_grad = requires_grad
        self._grad: Tensor | None = None
        self._ctx: tuple | None = None
        self._retains_grad = False

    @classmethod
    def _wrap(cls, value: Any, device: str, xp: ModuleType, requires_grad: bool) -> Tensor:
        t = object.__new__(cls)  # not cls.__new__: subclasses (Parameter) may override it
        t._init(value, None, xp, value.shape, value.dtype, device, requires_grad)
        return t

    @classmethod
    def _symbolic(
        cls, sym: int, shape: tuple[int, ...], dtype: np.dtype, device: str, xp: ModuleType
    ) -> Tensor:
        t = object.__new__(cls)
        t._init(None, sym, xp, tuple(shape), np.dtype(dtype), device, False)
        return t

    # ----- basic properties ------------------------------------------------------------------
    @property
    def is_symbolic(self) -> bool:
        return self._value is None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def dim(self) -> int:
        return len(self.shape)

    def numel(self) -> int:
        return math.prod(self.shape)

    def size(self, dim: int | None = None) -> tuple[int, ...] | int:
        return self.shape if dim is None else self.shape[dim]

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    @property
    def T(self) -> Tensor:  # noqa: N802
        return self.permute(*reversed(range(self.ndim)))

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):  # noqa: ANN204
        for i in range(len(self)):
            yield self[i]

    __hash__ = object.__hash__

    def __deepcopy__(self, memo: dict[int, Any]) -> Tensor:
        """A copy with its own array and gradient, the same class (Parameter stays Parameter),
        device and array module (a module is shared, never copied), no autograd history."""
        t = object.__new__(type(self))
        memo[id(self)] = t
        value = None if self._value is None else self._value.copy()
        t._init(value, self._sym, self._xp, self.shape, self.dtype, self.device,
                self.requires_grad)
        if self._grad is not None:
            t._grad = self._grad.__deepcopy__(memo)
        return t

    # ----- leaving the engine: only for concrete tensors ---------------------------------------
    def _concrete(self, what: str) -> Any:
        if self._value is None:
            raise TraceError(
                f"{what} needs the value of a symbolic tensor, which is unknown while tracing "
                f"(data-dependent Python control flow cannot be compiled) at {user_location()}; "
                "use dlrun.where(...) or run this part in eager mode"
            )
        return self._value

    def numpy(self) -> np.ndarray:
        """A NumPy copy (or view, on the CPU) of the values; detached from autograd."""
        v = self._concrete("Tensor.numpy()")
        return v if isinstance(v, np.ndarray) else v.get()

    def item(self) -> float | int | bool:
        v = self._concrete("Tensor.item()")
        if v.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return v.reshape(()).item()

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def __bool__(self) -> bool:
        v = self._concrete("bool() of a tensor (an `if` or `while` on a tensor)")
        if v.size != 1:
            raise RuntimeError("the truth value of a tensor with more than one value is ambiguous")
        return bool(v.reshape(()).item())

    def __float__(self) -> float:
        return float(self._concrete("float() of a tensor").reshape(()).item())

    def __int__(self) -> int:
        return int(self._concrete("int() of a tensor").reshape(()).item())

    def __index__(self) -> int:
        v = self._concrete("using a tensor as a Python index")
        if v.dtype.kind not in "iu" or v.size != 1:
            raise TypeError("only integer tensors of one element can be converted to an index")
        return int(v.reshape(()).item())

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def __repr__(self) -> str:
        extra = f", device='{self.device}'" if self.device != "cpu" else ""
        if self.requires_grad:
            extra += ", requires_grad=True"
        if self._value is None:
            return f"Tensor(<symbolic %{self._sym}>, shape={self.shape}, dtype={self.dtype}{extra})"
        body = np.array2string(self.numpy(), separator=", ", precision=4, prefix="tensor(")
        dt = "" if self.dtype == np.float32 else f", dtype={self.dtype}"
        return f"tensor({body}{dt}{extra})"

    # ----- autograd ----------------------------------------------------------------------------
    @property
    def grad(self) -> Tensor | None:
        """The accumulated gradient (a Tensor) or None; a trace sees reads of concrete ones."""
        g = self._grad
        if self._value is None or (g is not None and g._value is None):
            return g  # symbolic: set inside the trace, nothing to record
        return mode.current().read_grad(self)

    @grad.setter
    def grad(self, value: Tensor | None) -> None:
        if self._value is not None:
            mode.current().note_grad(self)  # tracing: the compiled plan replays this change
        self._grad = value

    def backward(self, gradient: Tensor | None = None, retain_graph: bool = False) -> None:
        """Accumulate gradients of this tensor into the `.grad` of the leaves it depends on."""
        autograd.backward(self, gradient, retain_graph=retain_graph)

    def detach(self) -> Tensor:
        """The same values, cut from the autograd graph. Inside a trace, a captured tensor's
        detached copy is its value at that point of the step (not the array seen when tracing,
        which later calls replace)."""
        src = mode.current().value_of(self) if self._value is not None else self
        t = Tensor.__new__(Tensor)
        t._init(src._value, src._sym, self._xp, self.shape, self.dtype, self.device, False)
        return t

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        if self._ctx is not None and not requires_grad:
            raise RuntimeError("you can only change requires_grad flags of leaf tensors")
        self.requires_grad = requires_grad
        return self

    def retain_grad(self) -> None:
        """Keep `.grad` on this non-leaf tensor after backward."""
        self._retains_grad = True

    # ----- state mutation (parameter updates); traced as state writes --------------------------
    def copy_(self, src: Tensor | Any) -> Tensor:
        """Overwrite the values with `src` (broadcast and cast to this tensor's shape and dtype)."""
        if autograd.GRAD.enabled and self.requires_grad and self._ctx is None:
            raise RuntimeError(
                "a leaf tensor that requires grad is being used in an in-place operation; "
                "wrap the update in `with dlrun.no_grad():`"
            )
        src = _lift(src, self)
        if src.shape != self.shape:
            src = src.expand(*self.shape)
        if src.dtype != self.dtype:
            src = src.to_dtype(self.dtype)
        mode.current().assign(self, src)  # eager: rebind the array; a trace: a state write
        return self

    @property
    def data(self) -> Tensor:
        return self.detach()

    @data.setter
    def data(self, value: Tensor) -> None:
        with autograd.no_grad():
            self.copy_(value)

    def add_(self, other: Any, alpha: float = 1.0) -> Tensor:
        return self.copy_(self + (other if alpha == 1.0 else other * alpha))

    def sub_(self, other: Any, alpha: float = 1.0) -> Tensor:
        return self.copy_(self - (other if alpha == 1.0 else other * alpha))

    def mul_(self, other: Any) -> Tensor:
        return self.copy_(self * other)

    def div_(self, other: Any) -> Tensor:
        return self.copy_(self / other)

    def zero_(self) -> Tensor:
        return self.copy_(0.0)

    def fill_(self, value: float) -> Tensor:
        return self.copy_(value)

    # ----- devices and dtypes ------------------------------------------------------------------
    def to(self, device: str | None = None, dtype: Any = None) -> Tensor:
        """A copy on another device and/or dtype (the same tensor if nothing changes)."""
        t = self
        if dtype is not None and np.dtype(dtype) != self.dtype:
            t = t.to_dtype(dtype)
        if device is not None:
            dev = normalize_device(device)
            if dev != t.device:
                value = to_device(t._concrete("Tensor.to(device)"), dev)
                t = Tensor._wrap(value, dev, get_xp(dev), t.requires_grad)
        return t

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def cuda(self, index: int = 0) -> Tensor:
        return self.to(f"cuda:{index}")

    def to_dtype(self, dtype: Any) -> Tensor:
        dtype = np.dtype(dtype)
        return self if dtype == self.dtype else _ew.cast(self, dtype=dtype)

    def type(self, dtype: Any) -> Tensor:
        return self.to_dtype(dtype)

    def float(self) -> Tensor:
        return self.to_dtype(np.float32)

    def double(self) -> Tensor:
        return self.to_dtype(np.float64)

    def long(self) -> Tensor:
        return self.to_dtype(np.int64)

    def int(self) -> Tensor:
        return self.to_dtype(np.int32)

    def bool(self) -> Tensor:
        return self.to_dtype(np.bool_)

    # ----- operators -----------------------------------------------------------------------------
    def __add__(self, other: Any) -> Tensor:
        return _ew.add(self, _lift(other, self))

    def __radd__(self, other: Any) -> Tensor:
        return _ew.add(_lift(other, self), self)

    def __sub__(self, other: Any) -> Tensor:
        return _ew.sub(self, _lift(other, self))

    def __rsub__(self, other: Any) -> Tensor:
        return _ew.sub(_lift(other, self), self)

    def __mul__(self, other: Any) -> Tensor:
        return _ew.mul(self, _lift(other, self))

    def __rmul__(self, other: Any) -> Tensor:
        return _ew.mul(_lift(other, self), self)

    def __truediv__(self, other: Any) -> Tensor:
        return _ew.div(self, _lift(other, self))

    def __rtruediv__(self, other: Any) -> Tensor:
        return _ew.div(_lift(other, self), self)

    def __pow__(self, other: Any) -> Tensor:
        return self.pow(other)

    def __rpow__(self, other: Any) -> Tensor:
        return _lift(other, self).pow(self)

    def __matmul__(self, other: Any) -> Tensor:
        return self.matmul(other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return _lift(other, self).matmul(self)

    def __neg__(self) -> Tensor:
        return _ew.neg(self)

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return _ew.abs(self)

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _ew.eq(self, _lift(other, self))

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _ew.ne(self, _lift(other, self))

    def __lt__(self, other: Any) -> Tensor:
        return _ew.lt(self, _lift(other, self))

    def __le__(self, other: Any) -> Tensor:
        return _ew.le(self, _lift(other, self))

    def __gt__(self, other: Any) -> Tensor:
        return _ew.gt(self, _lift(other, self))

    def __ge__(self, other: Any) -> Tensor:
        return _ew.ge(self, _lift(other, self))

    def __invert__(self) -> Tensor:
        return _ew.logical_not(self)

    def __and__(self, other: Any) -> Tensor:
        return _ew.logical_and(self, _lift(other, self))

    def __or__(self, other: Any) -> Tensor:
        return _ew.logical_or(self, _lift(other, self))

    # ----- methods with PyTorch's names --------------------------------------------------------
    # Each op that is a method is defined here, once, on the primitives; dlrun.functional's
    # function of the same name calls the method.
    def exp(self) -> Tensor:
        return _ew.exp(self)

    def log(self) -> Tensor:
        return _ew.log(self)

    def sqrt(self) -> Tensor:
        return _ew.sqrt(self)

    def abs(self) -> Tensor:
        return _ew.abs(self)

    def tanh(self) -> Tensor:
        return _ew.tanh(self)

    def sigmoid(self) -> Tensor:
        return _ew.sigmoid(self)

    def relu(self) -> Tensor:
        return _ew.relu(self)

    def clone(self) -> Tensor:
        """A copy in memory of its own, differentiable (torch.clone)."""
        return _ew.copy(self)

    def pow(self, exponent: Any) -> Tensor:
        if isinstance(exponent, int | float) and not isinstance(exponent, bool):
            if exponent == 1:
                return self
            if exponent == 2:
                return self * self
        return _ew.pow(self, _lift(exponent, self))

    def clamp(self, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
        out = self
        if min is not None:
            out = _ew.maximum(out, _lift(min, out))
        if max is not None:
            out = _ew.minimum(out, _lift(max, out))
        return out

    def masked_fill(self, mask: Tensor, value: float) -> Tensor:
        fill = _lift(value, self)
        return _ew.where(_lift(mask, fill), fill, self)

    # ----- reductions ----------------------------------------------------------------------------
    def sum(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return _rd.sum(self, axis=_axes(dim, self.ndim), keepdims=keepdim)

    def mean(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        axes = _axes(dim, self.ndim)
        count = self.numel() if axes is None else math.prod(self.shape[a] for a in axes)
        return _rd.sum(self, axis=axes, keepdims=keepdim) * (1.0 / max(count, 1))

    def var(self, dim: Any = None, unbiased: bool = True, keepdim: bool = False,
            correction: int | None = None) -> Tensor:
        axes = _axes(dim, self.ndim)
        count = self.numel() if axes is None else math.prod(self.shape[a] for a in axes)
        ddof = (1 if unbiased else 0) if correction is None else correction
        centered = self - self.mean(dim, keepdim=True)
        return (centered * centered).sum(dim, keepdim) * (1.0 / max(count - ddof, 1))

    def std(self, dim: Any = None, unbiased: bool = True, keepdim: bool = False) -> Tensor:
        return _ew.sqrt(self.var(dim, unbiased=unbiased, keepdim=keepdim))

    def amax(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return _rd.amax(self, axis=_axes(dim, self.ndim), keepdims=keepdim)

    def amin(self, dim: Any = None, keepdim: bool = False) -> Tensor:
        return _ew.neg(_ew.neg(self).amax(dim, keepdim))

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        axis = None if dim is None else _dim(dim, self.ndim)
        return _rd.argmax(self, axis=axis, keepdims=keepdim and axis is not None)

    def argmin(self, dim: int | None = None, keepdim: bool = False) -> Tensor:
        axis = None if dim is None else _dim(dim, self.ndim)
        return _rd.argmin(self, axis=axis, keepdims=keepdim and axis is not None)

    def max(self, dim: Any = None, keepdim: bool = False) -> Any:
        """max() -> the largest value; max(dim) -> (values, indices); max(other) -> maximum."""
        if isinstance(dim, Tensor):
            return _ew.maximum(self, dim)
        if dim is None:
            return self.amax()
        return MaxResult(self.amax(dim, keepdim), self.argmax(dim, keepdim))

    def min(self, dim: Any = None, keepdim: bool = False) -> Any:
        """min() -> the smallest value; min(dim) -> (values, indices); min(other) -> minimum."""
        if isinstance(dim, Tensor):
            return _ew.minimum(self, dim)
        if dim is None:
            return self.amin()
        return MaxResult(self.amin(dim, keepdim), self.argmin(dim, keepdim))

    def logsumexp(self, dim: Any, keepdim: bool = False) -> Tensor:
        return _rd.logsumexp(self, axis=_axes(dim, self.ndim), keepdims=keepdim)

    def softmax(self, dim: int) -> Tensor:
        return _rd.softmax(self, axis=_dim(dim, self.ndim))

    def log_softmax(self, dim: int) -> Tensor:
        return _rd.log_softmax(self, axis=_dim(dim, self.ndim))

    # ----- linear algebra ------------------------------------------------------------------------
    def matmul(self, other: Any) -> Tensor:
        """Matrix product with NumPy/PyTorch rules for 1-D operands and batch broadcasting."""
        a, b = self, _lift(other, self)
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul: both arguments need at least 1 dimension")
        squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
        if squeeze_a:
            a = a.reshape(1, a.shape[0])
        if squeeze_b:
            b = b.reshape(b.shape[0], 1)
        out = _la.matmul(a, b)
        if squeeze_a and squeeze_b:
            return out.reshape(())
        if squeeze_a:
            return out.reshape(*out.shape[:-2], out.shape[-1])
        if squeeze_b:
            return out.reshape(*out.shape[:-1])
        return out

    # ----- shapes --------------------------------------------------------------------------------
    def reshape(self, *shape: Any) -> Tensor:
        shape = _shape_arg(shape)
        if -1 in shape:
            known = math.prod(s for s in shape if s != -1)
            if shape.count(-1) > 1 or known == 0 or self.numel() % known:
                raise ValueError(f"cannot reshape a tensor of shape {self.shape} into {shape}")
            shape = tuple(self.numel() // known if s == -1 else s for s in shape)
        if shape == self.shape:
            return self
        return _mv.reshape(self, shape=shape)

    def view(self, *shape: Any) -> Tensor:
        return self.reshape(*shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        if self.ndim == 0:
            return self.reshape(1)
        s, e = _dim(start_dim, self.ndim), _dim(end_dim, self.ndim)
        shape = self.shape[:s] + (math.prod(self.shape[s : e + 1]),) + self.shape[e + 1 :]
        return self.reshape(shape)

    def permute(self, *dims: Any) -> Tensor:
        axes = tuple(_dim(d, self.ndim) for d in _shape_arg(dims))
        if axes == tuple(range(self.ndim)):
            return self
        return _mv.permute(self, axes=axes)

    def transpose(self, dim0: int, dim1: int) -> Tensor:
        axes = list(range(self.ndim))
        d0, d1 = _dim(dim0, self.ndim), _dim(dim1, self.ndim)
        axes[d0], axes[d1] = axes[d1], axes[d0]
        return self.permute(*axes)

    def t(self) -> Tensor:
        return self.transpose(0, 1) if self.ndim == 2 else self

    def broadcast_to(self, shape: Sequence[int]) -> Tensor:
        shape = tuple(int(s) for s in shape)
        return self if shape == self.shape else _mv.broadcast_to(self, shape=shape)

    def expand(self, *sizes: Any) -> Tensor:
        sizes = _shape_arg(sizes)
        lead = len(sizes) - self.ndim
        shape = tuple(self.shape[i - lead] if s == -1 else s for i, s in enumerate(sizes))
        return self.broadcast_to(shape)

    def squeeze(self, dim: Any = None) -> Tensor:
        if dim is None:
            return self.reshape(tuple(s for s in self.shape if s != 1))
        axes = _axes(dim, self.ndim)
        return self.reshape(tuple(s for i, s in enumerate(self.shape) if i not in axes or s != 1))

    def unsqueeze(self, dim: int) -> Tensor:
        d = dim % (self.ndim + 1)
        return self.reshape(self.shape[:d] + (1,) + self.shape[d:])

    def split(self, split_size_or_sections: Any, dim: int = 0) -> tuple[Tensor, ...]:
        d = _dim(dim, self.ndim)
        n = self.shape[d]
        if isinstance(split_size_or_sections, int):
            step = split_size_or_sections
            sizes = [min(step, n - i) for i in range(0, n, step)]
        else:
            sizes = list(split_size_or_sections)
            if sum(sizes) != n:
                raise ValueError(f"split: sections {sizes} do not add up to dim size {n}")
        out, start = [], 0
        for size in sizes:
            out.append(self.narrow(d, start, size))
            start += size
        return tuple(out)

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
        n = self.shape[_dim(dim, self.ndim)]
        return self.split(-(-n // chunks), dim)

    def narrow(self, dim: int, start: int, length: int) -> Tensor:
        d = _dim(dim, self.ndim)
        whole = tuple(("s", None, None, None) for _ in range(d))
        return _mv.getitem(self, index=whole + (("s", start, start + length, 1),))

    # ----- indexing ------------------------------------------------------------------------------
    def gather(self, dim: int, index: Any) -> Tensor:
        return _mv.gather(self, _index_tensor(index, self), axis=_dim(dim, self.ndim))

    def index_select(self, dim: int, index: Any) -> Tensor:
        return _mv.take(self, _index_tensor(index, self), axis=_dim(dim, self.ndim))

    def __getitem__(self, index: Any) -> Tensor:
        """x[index]: basic slicing (ints, slices, None, ...) and integer-array indexing."""
        items = index if isinstance(index, tuple) else (index,)
        if any(_is_array_index(i) for i in items):
            return _advanced_index(self, items)
        return _mv.getitem(self, index=_basic_index(items, self.shape))


def _lift(x: Any, like: Tensor) -> Tensor:
    """A Python scalar or array as a constant tensor on `like`'s device (scalars take its dtype)."""
    if isinstance(x, Tensor):
        return x
    from dlrun.engine.creation import scalar_like  # lazy: creation imports Tensor from here

    return scalar_like(x, like)


def _index_tensor(index: Any, like: Tensor) -> Tensor:
    from dlrun.engine.creation import index_tensor  # lazy: creation imports Tensor from here

    return index_tensor(index, like)


def _is_array_index(item: Any) -> bool:
    return isinstance(item, Tensor | np.ndarray | list)


def _basic_index(items: tuple[Any, ...], shape: tuple[int, ...]) -> tuple[tuple, ...]:
    """ints, slices, None and ... as getitem's index: ("n",), ("s", start, stop, step), ("i", k)."""
    ndim = len(shape)
    n_real = sum(1 for i in items if i is not None and i is not Ellipsis)
    if n_real > ndim:
        raise IndexError(f"too many indices for a tensor of {ndim} dims")
    expanded: list[Any] = []
    for item in items:
        if item is Ellipsis:
            expanded.extend([slice(None)] * (ndim - n_real))
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
            size = shape[axis]
            if not -size <= item < size:
                raise IndexError(f"index {item} is out of bounds for dim {axis} of size {size}")
            norm.append(("i", int(item) % size))
        else:
            raise TypeError(f"unsupported index {item!r}")
        axis += 1
    return tuple(norm)


def _advanced_index(t: Tensor, items: tuple[Any, ...]) -> Tensor:
    """Integer-array indexing: one array among full slices (take), or arrays on leading dims."""
    arrays = [i for i in items if _is_array_index(i)]
    if len(arrays) == 1:
        pos = next(k for k, i in enumerate(items) if _is_array_index(i))
        rest = items[:pos] + items[pos + 1 :]
        if all(isinstance(i, slice) and i == slice(None) for i in rest):
            return _mv.take(t, _index_tensor(arrays[0], t), axis=pos)
    if len(arrays) == len(items):
        # x[i, j, ...]: flatten the indexed leading dims and gather with one linear index.
        k = len(items)
        idx = [_index_tensor(i, t) for i in items]
        linear = idx[0]
        for d in range(1, k):
            linear = linear * t.shape[d] + idx[d]
        flat = t.reshape((math.prod(t.shape[:k]),) + t.shape[k:])
        return _mv.take(flat, linear, axis=0)
    raise NotImplementedError(
        "indexing mixes integer arrays with slices in a way dlrun does not support yet; "
        "use index_select/gather"
    )
