"""Strides arithmetic for layout facts: what memory layout an op's result has, from its inputs'.

Strides are counted in elements. Layout rules of primitives (`Primitive.layout`) are built from
these helpers; views are worked out on stand-in arrays (`as_strided` over one byte), so NumPy's
own view functions say which strides a transpose, slice, broadcast or reshape gives, without
touching or allocating data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

Shape = tuple[int, ...]
Strides = tuple[int, ...]
# layout(in_shapes, in_strides, out_shape, **attrs) -> strides of the result, or None when the
# op (a view primitive) must copy for these inputs
LayoutRule = Callable[..., Strides | None]
_BASE = np.zeros(1, dtype=np.uint8)


def dense(shape: Shape, order: tuple[int, ...] | None = None) -> Strides:
    """Strides of a dense array whose axes are `order`, outermost first (default: C order)."""
    order = tuple(range(len(shape))) if order is None else order
    strides = [0] * len(shape)
    step = 1
    for a in reversed(order):
        strides[a] = step
        step *= max(shape[a], 1)
    return tuple(strides)


def order_of(shape: Shape, strides: Strides) -> tuple[int, ...]:
    """The axes from outermost to innermost in memory (size-1 axes where C order puts them)."""
    return tuple(sorted(range(len(shape)),
                        key=lambda a: (-abs(strides[a]) if shape[a] > 1 else 0, a)))


def stand_in(shape: Shape, strides: Strides) -> np.ndarray:
    """An array with this shape and these strides over one byte: for asking NumPy about views
    (their strides, contiguity) without touching or allocating data."""
    return as_strided(_BASE, shape=shape, strides=strides, writeable=False)


def reshaped(shape: Shape, strides: Strides, new_shape: Shape) -> Strides | None:
    """The strides of reshape(x, new_shape) when it is a view of x, else None (a copy)."""
    try:
        view = stand_in(shape, strides).reshape(new_shape, copy=False)
    except (ValueError, TypeError):  # TypeError: NumPy < 2.1 has no copy=False
        return dense(new_shape) if strides == dense(shape) else None
    return view.strides


def dense_like(shape: Shape, src: Strides | None, src_shape: Shape) -> Strides:
    """Dense strides for `shape` in the axis order of a same-rank source."""
    if src is None or len(src_shape) != len(shape):
        return dense(shape)
    return dense(shape, order_of(src_shape, src))


def view_of(fn: Callable[[np.ndarray], np.ndarray]) -> LayoutRule:
    """Layout of a view primitive: `fn` applied to a stand-in of its first input."""

    def rule(shapes: tuple[Shape, ...], strides: tuple[Strides, ...], out_shape: Shape,
             **attrs: Any) -> Strides:
        return fn(stand_in(shapes[0], strides[0]), **attrs).strides

    return rule


def follows(k: int) -> LayoutRule:
    """Layout rule: dense, in the axis order of input k (pooling keeps its input's layout)."""

    def rule(shapes: tuple[Shape, ...], strides: tuple[Strides, ...], out_shape: Shape,
             **attrs: Any) -> Strides:
        return dense_like(out_shape, strides[k], shapes[k])

    return rule


def own_order(order: tuple[int, ...]) -> LayoutRule:
    """Layout rule: a fixed non-C order of the result's axes, outermost first."""

    def rule(shapes: tuple[Shape, ...], strides: tuple[Strides, ...], out_shape: Shape,
             **attrs: Any) -> Strides:
        return dense(out_shape, order)

    return rule


def like_elementwise(shapes: tuple[Shape, ...], strides: tuple[Strides, ...], out_shape: Shape,
                     **attrs: Any) -> Strides:
    """NumPy's order='K': the layout of the first input of the result's shape that is not a
    broadcast (no zero stride); C order when there is none."""
    for shape, s in zip(shapes, strides, strict=True):
        if shape == out_shape and s is not None and 0 not in s:
            return dense_like(out_shape, s, shape)
    return dense(out_shape)
