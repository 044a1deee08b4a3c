"""Making tensors: from data, constants, filled and random tensors, in the current mode.

Inside a traced function these become constant (or random) graph nodes instead of arrays.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from dlrun.backend import get_xp, normalize_device
from dlrun.engine import mode
from dlrun.engine.dtypes import is_floating
from dlrun.engine.prims import random
from dlrun.engine.tensor import Tensor

DEFAULT_DTYPE = np.dtype(np.float32)
_DEFAULT_DEVICE = ["cpu"]


def set_default_device(device: str) -> None:
    """The device of tensors created without an explicit device (like torch.set_default_device)."""
    _DEFAULT_DEVICE[0] = normalize_device(device)


def get_default_device() -> str:
    return _DEFAULT_DEVICE[0]


def _device(device: str | None) -> str:
    return normalize_device(_DEFAULT_DEVICE[0] if device is None else device)


def _dtype_for(data: Any, dtype: Any) -> np.dtype | None:
    if dtype is not None:
        return np.dtype(dtype)
    if isinstance(data, np.ndarray | np.generic):
        return None
    if isinstance(data, float) or (
        isinstance(data, list | tuple) and np.asarray(data).dtype.kind == "f"
    ):
        return DEFAULT_DTYPE
    if hasattr(data, "__cuda_array_interface__"):
        return None
    arr = np.asarray(data)
    return DEFAULT_DTYPE if arr.dtype.kind == "f" else None


def as_array(
    data: Any, dtype: Any = None, device: str | None = None
) -> tuple[Any, str, ModuleType]:
    """(array, device, xp) for data (Tensor, array, scalar or nested lists)."""
    if isinstance(data, Tensor):
        data = data._concrete("dlrun.tensor(tensor)")
    if device is None and hasattr(data, "__cuda_array_interface__"):
        device = f"cuda:{data.device.id}"
    device = _device(device)
    xp = get_xp(device)
    want = _dtype_for(data, dtype)
    if device == "cpu":
        if hasattr(data, "get") and not isinstance(data, np.ndarray):
            data = data.get()
        value = np.array(data, dtype=want, copy=True)
    else:
        with xp.cuda.Device(int(device.split(":")[1])):
            value = xp.array(data, dtype=want, copy=True)
    return value, device, xp


def tensor(
    data: Any, requires_grad: bool = False, dtype: Any = None, device: str | None = None
) -> Tensor:
    """A tensor holding a copy of data; Python floats default to float32 (like PyTorch)."""
    value, device, _ = as_array(data, dtype=dtype, device=device)
    t = mode.current().constant(value, device)
    if requires_grad:
        if not is_floating(t.dtype):
            raise RuntimeError("only floating point tensors can require gradients")
        t.requires_grad = True
    return t


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing memory with a NumPy array (no copy)."""
    return Tensor._wrap(np.asarray(array), "cpu", np, False)


def _full_value(xp: ModuleType, shape: tuple[int, ...], value: Any, dtype: np.dtype) -> Any:
    return xp.full(shape, value, dtype=dtype)


def _shape(size: tuple[Any, ...]) -> tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], list | tuple):
        size = tuple(size[0])
    return tuple(int(s) for s in size)


_SCALARS: dict[tuple[Any, ...], Any] = {}


def constant(value: Any, device: str) -> Tensor:
    """A tensor for an array value in the current mode (a const node while tracing)."""
    return mode.current().constant(value, device)


def scalar_like(x: Any, like: Tensor) -> Tensor:
    """A Python scalar (or array) as a 0-d constant tensor of a dtype matching `like`."""
    if isinstance(x, bool | int | float | np.number | np.bool_):
        float_into_int = isinstance(x, float) and not is_floating(like.dtype)
        dtype = DEFAULT_DTYPE if float_into_int else like.dtype
        key = (type(x), x, dtype, like.device)
        value = _SCALARS.get(key)
        if value is None:
            value = like._xp.asarray(x, dtype=dtype)
            if len(_SCALARS) < 4096:
                _SCALARS[key] = value
        return constant(value, like.device)
    value, device, _ = as_array(x, device=like.device)
    return constant(value, device)


def index_tensor(index: Any, like: Tensor) -> Tensor:
    """An index (a tensor, array or list of ints) as an int64 tensor on `like`'s device."""
    if isinstance(index, Tensor):
        return index
    return tensor(np.asarray(index, dtype=np.int64), device=like.device)


def full(
    size: Any, fill_value: float, *, dtype: Any = None, device: str | None = None,
    requires_grad: bool = False,
) -> Tensor:
    device = _device(device)
    if dtype is None:
        dtype = DEFAULT_DTYPE if isinstance(fill_value, float) else np.asarray(fill_value).dtype
    value = _full_value(get_xp(device), _shape((size,)), fill_value, np.dtype(dtype))
    t = constant(value, device)
    t.requires_grad = requires_grad
    return t


def zeros(*size: Any, dtype: Any = None, device: str | None = None,
          requires_grad: bool = False) -> Tensor:
    return full(_shape(size), 0.0, dtype=dtype or DEFAULT_DTYPE, device=device,
                requires_grad=requires_grad)


def ones(*size: Any, dtype: Any = None, device: str | None = None,
         requires_grad: bool = False) -> Tensor:
    return full(_shape(size), 1.0, dtype=dtype or DEFAULT_DTYPE, device=device,
                requires_grad=requires_grad)


def empty(*size: Any, dtype: Any = None, device: str | None = None) -> Tensor:
    return zeros(*size, dtype=dtype, device=device)


def zeros_like(t: Tensor, dtype: Any = None) -> Tensor:
    return full(t.shape, 0.0, dtype=dtype or t.dtype, device=t.device)


def ones_like(t: Tensor, dtype: Any = None) -> Tensor:
    return full(t.shape, 1.0, dtype=dtype or t.dtype, device=t.device)


def full_like(t: Tensor, fill_value: float, dtype: Any = None) -> Tensor:
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=t.device)


def arange(start: float, end: float | None = None, step: float = 1, *, dtype: Any = None,
           device: str | None = None) -> Tensor:
    if end is None:
        start, end = 0, start
    device = _device(device)
    if dtype is None:
        is_float = any(isinstance(v, float) for v in (start, end, step))
        dtype = DEFAULT_DTYPE if is_float else np.int64
    return constant(get_xp(device).arange(start, end, step, dtype=np.dtype(dtype)), device)


def eye(n: int, m: int | None = None, *, dtype: Any = None, device: str | None = None) -> Tensor:
    device = _device(device)
    return constant(get_xp(device).eye(n, m, dtype=np.dtype(dtype or DEFAULT_DTYPE)), device)


def linspace(start: float, end: float, steps: int, *, dtype: Any = None,
             device: str | None = None) -> Tensor:
    device = _device(device)
    xp = get_xp(device)
    return constant(xp.linspace(start, end, steps, dtype=np.dtype(dtype or DEFAULT_DTYPE)), device)


def _random(kind: str, size: tuple[Any, ...], dtype: Any, device: str | None, **kw: Any) -> Tensor:
    device = _device(device)
    prim = {"normal": random.normal, "uniform": random.uniform}[kind]
    return prim(shape=_shape(size), dtype=np.dtype(dtype or DEFAULT_DTYPE), device=device, **kw)


def randn(*size: Any, dtype: Any = None, device: str | None = None,
          requires_grad: bool = False) -> Tensor:
    """Standard normal samples from the engine generator."""
    t = _random("normal", size, dtype, device)
    t.requires_grad = requires_grad
    return t


def rand(*size: Any, dtype: Any = None, device: str | None = None,
         requires_grad: bool = False) -> Tensor:
    """Uniform [0, 1) samples from the engine generator."""
    t = _random("uniform", size, dtype, device)
    t.requires_grad = requires_grad
    return t


def randint(low: int, high: int, size: tuple[int, ...], *, device: str | None = None) -> Tensor:
    return random.randint(shape=_shape((size,)), low=int(low), high=int(high),
                          device=_device(device))
