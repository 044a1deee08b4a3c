"""Native math shared by both modes: with Numba, the ops a CPU kernel computes differently from
NumPy run the kernel's way everywhere.

A static plan with CPU kernels computes exp, log, tanh, erf and sigmoid with the polynomials of
engine/vecmath.py and sums over the last axis in a fixed lane order. If eager mode (and the plan's
own NumPy calls) used NumPy's versions instead, the two modes would differ in the last bits, and
fifty AdamW steps amplify that past any tight tolerance. So, when Numba is there, the primitives'
NumPy forwards call these instead: ufuncs built from the same scalar code, and the same row sum.
Elementwise arithmetic needs nothing: IEEE float32 and float64 operations round alike in NumPy
and in a kernel. Without Numba (or with DLRUN_CPU_KERNELS=0) every forward is plain NumPy.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import numpy as np

LANES = 8  # row sums: element j goes to partial sum j % 8 (vecmath.row_sum, row kernels)
_numba_state: list[Any] = []  # [numba module or None], filled on first use
_UFUNCS: dict[str, Any] = {}
_VECMATH: list[Any] = []
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def numba_module() -> Any:
    """The numba module, or None when it is missing or kernels are turned off."""
    if not _numba_state:
        numba = None
        if os.environ.get("DLRUN_CPU_KERNELS", "1") != "0":
            try:
                import numba
            except ImportError:
                numba = None
        _numba_state.append(numba)
    return _numba_state[0]


def available() -> bool:
    """True when CPU kernels and the native math run (Numba installed, not turned off)."""
    return numba_module() is not None


def ufunc(name: str, *xs: Any) -> Any:
    """The native ufunc `name` (exp, log, tanh, erf, sigmoid; pow of two) for the NumPy arrays
    xs, or None (no Numba, not NumPy float32/float64 arrays): the caller then uses NumPy's."""
    for x in xs:  # arrays and NumPy scalars (a reduction to a scalar gives one) alike
        if not isinstance(x, np.ndarray | np.floating) or x.dtype not in _FLOATS:
            return None
    if not available():
        return None
    fn = _UFUNCS.get(name)
    if fn is None:
        sigs = [f"{t}({', '.join([t] * len(xs))})" for t in ("float32", "float64")]
        fn = _UFUNCS[name] = numba_module().vectorize(sigs, cache=True)(
            getattr(_vecmath(), f"{name}_scalar"))
    return fn


def fixed_sum(x: Any, axis: tuple[int, ...] | None, keepdims: bool, out: Any = None) -> Any:
    """The sum of x over `axis` (None: all) in one fixed order, whatever x's memory layout: each
    result sums its elements in logical C order into 8 float64 lanes (vecmath.row_sum). None
    when the native math is off or x is not a NumPy float32/float64 array.

    NumPy's reductions follow the memory layout, so the same values laid out differently (a
    static plan keeps a matmul's transposed result; eager may not) sum to different bits; this
    order is what row kernels use too, so eager and static agree exactly.
    """
    if type(x) is not np.ndarray or x.dtype not in _FLOATS or not available():
        return None
    how, n_out, n_in, moved, shape = _sum_plan(x.shape, axis, keepdims)
    flat = np.empty(n_out, x.dtype) if n_in else np.zeros(n_out, x.dtype)
    if n_in and n_out:
        vm = _vecmath()
        if how == "rows":
            vm.row_sum(x.reshape(n_out, n_in), flat)
        elif how == "cols":
            vm.col_sum(x.reshape(n_in, n_out), flat)
        else:
            vm.row_sum(np.moveaxis(x, moved, range(-len(moved), 0)).reshape(n_out, n_in), flat)
    result = flat.reshape(shape)
    if out is None:
        return result
    out[...] = result
    return out


@functools.lru_cache(maxsize=1024)
def _sum_plan(shape: tuple[int, ...], axis: tuple[int, ...] | None, keepdims: bool
              ) -> tuple[str, int, int, tuple[int, ...], tuple[int, ...]]:
    """How fixed_sum reduces an array of `shape` (worked out once per shape: a step sums the
    same shapes every call): 'rows' (trailing axes), 'cols' (leading axes) or 'moved', the
    output and reduced sizes, the reduced axes and the result's shape."""
    nd = len(shape)
    axes = tuple(range(nd)) if axis is None else tuple(axis)
    kept = tuple(n for d, n in enumerate(shape) if d not in axes)
    n_out, n_in = math.prod(kept), math.prod(shape[d] for d in axes)
    k = len(axes)
    how = ("rows" if axes == tuple(range(nd - k, nd)) else
           "cols" if axes == tuple(range(k)) else "moved")
    if keepdims:
        kept = tuple(1 if d in axes else n for d, n in enumerate(shape))
    return how, n_out, n_in, axes, kept


def _vecmath() -> Any:
    """engine/vecmath.py, imported on first use (it imports Numba)."""
    if not _VECMATH:
        from dlrun.engine import vecmath

        _VECMATH.append(vecmath)
    return _VECMATH[0]


def scaled_softmax(s: Any, scale: float, causal: bool) -> Any:
    """softmax(s * scale) over the last axis of the NumPy float array s (..., L, S), causal keys
    hidden, in place, as one native pass per row (vecmath.scaled_softmax_rows); None when the
    native math is off."""
    if type(s) is not np.ndarray or s.dtype not in _FLOATS or s.ndim < 2 or not available():
        return None
    rows = s.reshape(-1, *s.shape[-2:])  # a fresh C-ordered matmul result: a view
    _vecmath().scaled_softmax_rows(rows, s.dtype.type(scale), causal, rows)
    return s
