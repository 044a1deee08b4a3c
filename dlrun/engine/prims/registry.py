"""The primitive registry: each op is one entry holding its forward, shape rule and vjp rule.

A primitive's `forward(xp, *arrays, **attrs)` runs on backend arrays; its
`shape_rule(*avals, **attrs)` gives the output (shape, dtype) from inputs that only need
`.shape`/`.dtype` (symbolic tensors included); its `vjp(g, y, *xs, **attrs)` is written with
dlrun ops, so eager backward runs it and the static tracer records it. Calling a primitive
applies it through `dispatch.apply`.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class Kind(enum.Enum):
    """Groups of primitives that the passes treat alike."""

    ELEMENTWISE = "elementwise"
    REDUCE = "reduce"
    MOVEMENT = "movement"
    INDEX = "index"
    LINALG = "linalg"
    CONV = "conv"
    RANDOM = "random"
    CREATION = "creation"


ShapeRule = Callable[..., tuple[tuple[int, ...], np.dtype]]


@dataclass(eq=False)
class Primitive:
    """One op: forward on xp arrays, a shape/dtype rule and a vjp written with dlrun ops."""

    name: str
    forward: Callable[..., Any]
    kind: Kind
    shape_rule: ShapeRule
    pure: bool = True
    differentiable: bool = True
    vjp: Callable[..., tuple[Any, ...]] | None = None
    vjp_takes_needs: bool = False
    supports_out: bool = False
    cuda_expr: str | None = None  # elementwise body for generated CuPy kernels (GPU fusion)
    ufunc: str | None = None  # forward is exactly xp.<ufunc>(*arrays, out=out): plans call it
    # specialize(xp, shapes, **attrs) -> fn(*arrays[, out=]): the forward with its attributes
    # and input shapes (None when unknown) worked out once, for plans that call it every step
    specialize: Callable[..., Callable[..., Any]] | None = None

    attr_names: tuple[str, ...] = field(default_factory=tuple)

    def defvjp(self, fn: Callable[..., tuple[Any, ...]]) -> Callable[..., tuple[Any, ...]]:
        """Register the vjp rule `fn(g, y, *xs, [needs,] **attrs) -> tuple of grads (or None)`."""
        self.vjp = fn
        self.vjp_takes_needs = "needs" in inspect.signature(fn).parameters
        return fn

    def defspecialize(self, fn: Callable[..., Callable[..., Any]]) -> Callable[..., Any]:
        """Register `fn(xp, shapes, **attrs) -> callable(*arrays[, out=])` (see `specialize`)."""
        self.specialize = fn
        return fn

    def __call__(self, *args: Any, **attrs: Any) -> Any:
        from dlrun.engine.dispatch import apply

        return apply(self, args, attrs)

    def __repr__(self) -> str:
        return f"<primitive {self.name}>"


REGISTRY: dict[str, Primitive] = {}


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """NumPy broadcasting of shapes, with an error that shows them."""
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise ValueError(f"shapes {' and '.join(map(str, shapes))} cannot be broadcast") from None


def elementwise_rule(*avals: Any, **attrs: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Default elementwise rule: broadcast shapes, promote dtypes."""
    shape = broadcast_shapes(*(a.shape for a in avals))
    return shape, np.result_type(*(a.dtype for a in avals))


def predicate_rule(*avals: Any, **attrs: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Comparisons: broadcast shapes, bool result."""
    return broadcast_shapes(*(a.shape for a in avals)), np.dtype(bool)


def primitive(
    name: str,
    kind: Kind,
    shape: ShapeRule | None = None,
    *,
    pure: bool = True,
    differentiable: bool = True,
    cuda_expr: str | None = None,
    ufunc: str | None = None,
) -> Callable[[Callable[..., Any]], Primitive]:
    """Decorator: register `forward(xp, *arrays, **attrs)` as a primitive called `name`."""

    def wrap(forward: Callable[..., Any]) -> Primitive:
        if name in REGISTRY:
            raise ValueError(f"primitive {name!r} is defined twice")
        rule = shape or (elementwise_rule if kind is Kind.ELEMENTWISE else None)
        if rule is None:
            raise ValueError(f"primitive {name!r} needs a shape rule")
        params = inspect.signature(forward).parameters
        attr_names = tuple(
            p.name for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
        )
        prim = Primitive(
            name=name,
            forward=forward,
            kind=kind,
            shape_rule=rule,
            pure=pure,
            differentiable=differentiable,
            supports_out="out" in params,
            cuda_expr=cuda_expr,
            ufunc=ufunc,
            attr_names=tuple(a for a in attr_names if a != "out"),
        )
        REGISTRY[name] = prim
        return prim

    return wrap
