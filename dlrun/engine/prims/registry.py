"""The primitive registry: each op is one entry holding every fact about it.

A primitive's `forward(xp, *arrays, **attrs)` runs on backend arrays; its
`shape_rule(*avals, **attrs)` gives the output (shape, dtype) from inputs that only need
`.shape`/`.dtype` (symbolic tensors included); its `vjp(g, y, *xs, **attrs)` is written with
dlrun ops, so eager backward runs it and the static tracer records it. The facts the passes,
the memory plan, the lowering and the exporters ask about — is it a view, how is its result laid
out, may it write over an input, its CUDA expression, its ONNX lowering — live here too, so
adding an op touches one file. Calling a primitive applies it through `mode.apply`.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from dlrun.engine.mode import apply
from dlrun.engine.prims.strides import LayoutRule, like_elementwise


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
    COLLECTIVE = "collective"  # exchanges data with the other processes of a job
    FUSED = "fused"  # a chain of elementwise primitives made by the fusion pass


class MissingFact(LookupError):
    """A pass, the planner or an exporter needs a fact that a primitive does not declare."""


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
    # The result may be a view of input 0 (no buffer of its own). Its layout rule returns None
    # for inputs it cannot view (a reshape of a transposed array copies).
    view: bool = False
    # With `out=` given, the forward may write over one of its inputs (read before written).
    in_place: bool = False
    # +1: starts a collective that runs on while later nodes compute; -1: waits for it (the
    # plan lets started collectives progress between the nodes in between; the overlap pass
    # moves starts to where their inputs are final).
    in_flight: int = 0
    # layout(in_shapes, in_strides, out_shape, **attrs) -> the result's strides in elements, as
    # the forward lays it out; None: a fresh C-ordered array.
    layout: LayoutRule | None = None
    # parts(in_shapes, out_shape, **attrs) -> the basic index of the result that each input
    # fills, when the inputs tile it (concat): the memory plan then computes each input straight
    # into its slice; None when they do not.
    parts: Callable[..., list[tuple] | None] | None = None
    # The op as a C expression over its inputs `{0}`, `{1}`, ... and attributes `{name}` (GPU
    # fusion composes these into one kernel); it must compute what `forward` computes, NaN and
    # infinities included (tests/engine/prims/test_cuda_expr.py checks it against NumPy).
    cuda_expr: str | None = None
    # The same op as a Python expression over `{0}`, `{1}`, ... and attributes `{name}`, for the
    # generated CPU kernels (static/cpu_kernels.py). Float literals take the computing dtype, as
    # NumPy gives Python scalars the array's dtype; `exp`, `tanh`, `erf`, `log`, `sqrt` are the
    # kernel math of engine/vecmath.py (tests/engine/prims/test_cpu_expr.py checks it).
    cpu_expr: str | None = None
    # A reduction a generated row kernel can run over the last axis: (initial value, update
    # expression over the accumulator `{acc}` and the element `{0}`), literals typed as cpu_expr.
    row_reduce: tuple[str, str] | None = None
    # The result holds the input's elements in the same logical order (a reshape): a row kernel
    # reads it as its input.
    same_order: bool = False
    # onnx(builder, *input names, **attrs) -> output name: the ONNX lowering (dlrun export).
    onnx: Callable[..., Any] | None = None
    ufunc: str | None = None  # forward is exactly xp.<ufunc>(*arrays, out=out): plans call it
    # specialize(xp, avals, **attrs) -> fn(*arrays[, out=]): the forward with its attributes
    # and its inputs' shapes and dtypes (`avals`: objects with .shape and .dtype, None when
    # unknown) worked out once, for plans that call it every step
    specialize: Callable[..., Callable[..., Any]] | None = None
    # inline(xp, prefix, arg_names, out_name, new_buffer, result, **attrs) -> (statements,
    # expression, names they use), or None: source for a plan to run in place of one call (a
    # fused chain's steps); `result` has the node's shape and dtype
    inline: Callable[..., tuple[list[str], str, dict[str, Any]]] | None = None

    attr_names: tuple[str, ...] = field(default_factory=tuple)

    @property
    def fusable(self) -> bool:
        """May join a fused elementwise chain: pure, in place over `out=`, with a CUDA form."""
        return (self.kind is Kind.ELEMENTWISE and self.pure and self.supports_out
                and self.in_place and self.cuda_expr is not None)

    def fact(self, name: str, needed_by: str) -> Any:
        """The fact `name`, or a MissingFact error naming the op, the fact and who needs it."""
        value = getattr(self, name)
        if value is None:
            raise MissingFact(f"primitive {self.name!r} declares no {name} (needed by {needed_by})")
        return value

    def cuda_code(self, args: list[str], attrs: dict[str, Any]) -> str:
        """The CUDA expression over the C expressions `args`, with attribute values as C."""
        expr = self.fact("cuda_expr", "GPU elementwise fusion")
        return expr.format(*args, **{k: _c_literal(v) for k, v in attrs.items()})

    def bound(self, xp: Any, attrs: dict[str, Any],
              avals: tuple[Any, ...] | None = None) -> Callable[..., Any]:
        """The forward with the array module and attributes bound, called as fn(*arrays[, out=]):
        the ufunc itself when the forward is exactly one ufunc call, the specialized form when
        the primitive has one (`avals`, the inputs' shapes and dtypes, let it pick its fastest
        form)."""
        if self.ufunc is not None and not attrs:
            return getattr(xp, self.ufunc)
        if self.specialize is not None:
            return self.specialize(xp, avals, **attrs)
        return partial(self.forward, xp, **attrs) if attrs else partial(self.forward, xp)

    def defvjp(self, fn: Callable[..., tuple[Any, ...]]) -> Callable[..., tuple[Any, ...]]:
        """Register the vjp rule `fn(g, y, *xs, [needs,] **attrs) -> tuple of grads (or None)`."""
        self.vjp = fn
        self.vjp_takes_needs = "needs" in inspect.signature(fn).parameters
        return fn

    def definline(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Register `fn(xp, prefix, args, out, new_buffer, result, **attrs)` (see `inline`)."""
        self.inline = fn
        return fn

    def defspecialize(self, fn: Callable[..., Callable[..., Any]]) -> Callable[..., Any]:
        """Register `fn(xp, avals, **attrs) -> callable(*arrays[, out=])` (see `specialize`)."""
        self.specialize = fn
        return fn

    def __call__(self, *args: Any, **attrs: Any) -> Any:
        return apply(self, args, attrs)

    def __repr__(self) -> str:
        return f"<primitive {self.name}>"


REGISTRY: dict[str, Primitive] = {}

C_TYPES = {"float16": "half", "float32": "float", "float64": "double", "int32": "int",
           "int64": "long long", "bool": "bool"}


def _c_literal(value: Any) -> str:
    """An attribute value as C source: dtypes as C type names, numbers as literals."""
    if isinstance(value, np.dtype | type):
        return C_TYPES[np.dtype(value).name]
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, float | np.floating):
        v = float(value)
        return repr(v) if np.isfinite(v) else ("(1.0/0.0)" if v > 0 else "(-1.0/0.0)")
    return str(value)


class Aval:
    """A value's shape and dtype: what shape rules read."""

    __slots__ = ("shape", "dtype")

    def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)


def program_avals(program: tuple[Any, ...], inputs: tuple[Any, ...]
                  ) -> list[tuple[list[Any], Aval]]:
    """(the inputs, the result) of each step `(op, refs, attrs)` of a fused program, by the
    steps' own shape rules: a ref >= 0 is `inputs[ref]`, a ref -k the result k steps back."""
    steps: list[tuple[list[Any], Aval]] = []
    for op, refs, attrs in program:
        ins = [inputs[r] if r >= 0 else steps[r][1] for r in refs]
        steps.append((ins, Aval(*REGISTRY[op].shape_rule(*ins, **dict(attrs)))))
    return steps


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
    cpu_expr: str | None = None,
    row_reduce: tuple[str, str] | None = None,
    same_order: bool = False,
    ufunc: str | None = None,
    view: bool = False,
    in_place: bool | None = None,
    in_flight: int = 0,
    layout: LayoutRule | None = None,
    onnx: Callable[..., Any] | None = None,
    parts: Callable[..., list[tuple] | None] | None = None,
) -> Callable[[Callable[..., Any]], Primitive]:
    """Decorator: register `forward(xp, *arrays, **attrs)` as a primitive called `name`.

    Elementwise primitives default to the elementwise shape rule, NumPy's order='K' layout and,
    when their forward takes `out=`, running in place; other kinds must give a shape rule.
    """

    def wrap(forward: Callable[..., Any]) -> Primitive:
        if name in REGISTRY:
            raise ValueError(f"primitive {name!r} is defined twice")
        elementwise = kind is Kind.ELEMENTWISE
        rule = shape or (elementwise_rule if elementwise else None)
        if rule is None:
            raise ValueError(f"primitive {name!r} needs a shape rule")
        params = inspect.signature(forward).parameters
        takes_out = "out" in params
        prim = Primitive(
            name=name, forward=forward, kind=kind, shape_rule=rule, pure=pure,
            differentiable=differentiable, supports_out=takes_out, view=view,
            in_place=(elementwise and takes_out) if in_place is None else in_place,
            in_flight=in_flight,
            layout=layout or (like_elementwise if elementwise else None),
            cuda_expr=cuda_expr, cpu_expr=cpu_expr, row_reduce=row_reduce,
            same_order=same_order, onnx=onnx, ufunc=ufunc, parts=parts,
            attr_names=tuple(p.name for p in params.values()
                             if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "out"),
        )
        REGISTRY[name] = prim
        return prim

    return wrap
