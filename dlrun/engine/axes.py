"""Normalizing PyTorch-style dimension and shape arguments (a leaf: plain Python).

Tensor methods and dlrun.functional accept negative dims, tuples of dims and shapes given either
as separate ints or as one sequence; these turn them into the non-negative axes and int tuples
that primitives take.
"""

from __future__ import annotations

from typing import Any


def normalize_dim(d: int, ndim: int) -> int:
    """`d` as a non-negative axis of an `ndim`-dim tensor (a 0-d tensor accepts 0 and -1)."""
    if not -max(ndim, 1) <= d < max(ndim, 1):
        raise IndexError(f"dimension {d} is out of range for a tensor of {ndim} dims")
    return d % max(ndim, 1)


def normalize_axes(dim: Any, ndim: int) -> tuple[int, ...] | None:
    """An int or sequence of dims as sorted non-negative axes; None (all axes) stays None."""
    if dim is None:
        return None
    if isinstance(dim, int):
        dim = (dim,)
    return tuple(sorted(normalize_dim(d, ndim) for d in dim))


def shape_arg(shape: tuple[Any, ...]) -> tuple[int, ...]:
    """`f(2, 3)` and `f((2, 3))` alike: the shape as a tuple of ints."""
    if len(shape) == 1 and isinstance(shape[0], list | tuple):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)
