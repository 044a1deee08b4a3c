"""Eager autograd: grad mode, the per-tensor context links, and an iterative reverse-order backward.

Every differentiable result records `_ctx = (seq, prim, inputs, attrs)`. `backward` gathers the
tensors reachable from the loss, walks them in reverse creation order (deterministic, no
recursion), calls each primitive's vjp — itself made of dlrun ops, so under tracing the backward
pass becomes graph nodes — and accumulates into `.grad` of leaves.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from dlrun.engine.prims import movement, reduce

if TYPE_CHECKING:
    from dlrun.engine.tensor import Tensor


class _GradState:
    enabled = True


GRAD = _GradState()
SEQ = itertools.count()


def is_grad_enabled() -> bool:
    return GRAD.enabled


@contextmanager
def no_grad() -> Iterator[None]:
    """Record no graph inside the block (inference, parameter updates)."""
    prev, GRAD.enabled = GRAD.enabled, False
    try:
        yield
    finally:
        GRAD.enabled = prev


@contextmanager
def enable_grad() -> Iterator[None]:
    prev, GRAD.enabled = GRAD.enabled, True
    try:
        yield
    finally:
        GRAD.enabled = prev


class SliceGrads:
    """A gradient that is zero outside some basic-indexing slices, kept as (g, index) parts and
    built once by `assemble_slices` when it is needed (see getitem's vjp)."""

    __slots__ = ("shape", "parts")

    def __init__(self, shape: tuple[int, ...], parts: list[tuple[Tensor, tuple]]) -> None:
        self.shape = tuple(shape)
        self.parts = parts

    def materialize(self) -> Tensor:
        return movement.assemble_slices(*[g for g, _ in self.parts], shape=self.shape,
                                        indices=tuple(index for _, index in self.parts))


def _dense(g: Tensor | SliceGrads) -> Tensor:
    return g.materialize() if isinstance(g, SliceGrads) else g


def _combine(a: Tensor | SliceGrads, b: Tensor | SliceGrads) -> Tensor | SliceGrads:
    if isinstance(a, SliceGrads) and isinstance(b, SliceGrads):
        return SliceGrads(a.shape, a.parts + b.parts)
    return _dense(a) + _dense(b)


def unbroadcast(g: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Sum a gradient of a broadcast result back to the operand's shape."""
    if g.shape == shape:
        return g
    lead = len(g.shape) - len(shape)
    axes = tuple(range(lead)) + tuple(
        i + lead for i, n in enumerate(shape) if n == 1 and g.shape[i + lead] != 1
    )
    if axes:
        g = reduce.sum(g, axis=axes, keepdims=False)
    if g.shape != shape:
        g = movement.reshape(g, shape=shape)
    return g


def _graph_of(root: Tensor) -> list[Tensor]:
    """Tensors with a context reachable from root, latest first."""
    seen: set[int] = set()
    found: list[Tensor] = []
    stack = [root]
    while stack:
        t = stack.pop()
        if t._ctx is None or id(t) in seen:
            continue
        seen.add(id(t))
        found.append(t)
        stack.extend(t._ctx[2])
    found.sort(key=lambda t: t._ctx[0], reverse=True)
    return found


def backward(root: Tensor, grad: Tensor | None = None, retain_graph: bool = False) -> None:
    """Accumulate d(root)/d(leaf) into every leaf's `.grad` (leaves: requires_grad, no context)."""
    from dlrun.engine import creation  # lazy: creation -> tensor -> autograd

    if not root.requires_grad:
        raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
    if grad is None:
        if root.shape != ():
            raise RuntimeError(
                f"grad can be implicitly created only for scalar outputs (got shape {root.shape})"
            )
        grad = creation.ones_like(root)
    grads: dict[int, Tensor | SliceGrads] = {id(root): grad}
    leaves: dict[int, Tensor] = {}
    order = _graph_of(root)
    with no_grad():
        if root._ctx is None:
            _accumulate(root, grad)
        for t in order:
            g = grads.pop(id(t), None)
            seq, prim, inputs, attrs = t._ctx
            if not retain_graph:
                t._ctx = None  # release inputs as soon as they are no longer needed
            if g is None:
                continue
            g = _dense(g)
            if t._retains_grad:
                _accumulate(t, g)
            needs = tuple(x.requires_grad for x in inputs)
            if prim.vjp_takes_needs:
                gxs = prim.vjp(g, t, *inputs, needs=needs, **attrs)
            else:
                gxs = prim.vjp(g, t, *inputs, **attrs)
            for x, gx, need in zip(inputs, gxs, needs, strict=True):
                if gx is None or not need:
                    continue
                if not isinstance(gx, SliceGrads):
                    gx = unbroadcast(gx, x.shape)
                if x._ctx is None:
                    leaves.setdefault(id(x), x)  # summed first, accumulated once at the end
                prev = grads.get(id(x))
                grads[id(x)] = gx if prev is None else _combine(prev, gx)
        for key, leaf in leaves.items():
            _accumulate(leaf, _dense(grads.pop(key)))


def _accumulate(leaf: Tensor, g: Tensor) -> None:
    if g.dtype != leaf.dtype:
        g = g.to_dtype(leaf.dtype)
    leaf.grad = g if leaf.grad is None else leaf.grad + g
