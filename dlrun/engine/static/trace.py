"""Tracing: run a Python function on symbolic tensors and record every primitive into a Graph.

The same `apply` calls that eager mode executes append nodes here instead — those inside
`loss.backward()` (autograd.py on symbolic tensors) and inside `optimizer.step()` included.
Real tensors met while tracing (parameters, buffers, optimizer state) become `state` nodes read
live at every call; `copy_` on them becomes a `state_write`; their `.grad` is traced state too,
kept by grads.GradTracker (reads, writes, what the signature guards).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlrun.engine import autograd
from dlrun.engine import mode as _mode
from dlrun.engine.graph import Graph, Node
from dlrun.engine.prims.registry import Primitive
from dlrun.engine.source import user_location
from dlrun.engine.static.grads import GradTracker
from dlrun.engine.tensor import Tensor
from dlrun.errors import TraceError


@dataclass
class TraceResult:
    graph: Graph
    state: list[Tensor]  # captured tensors, indexed by `state` slot
    out_tree: Any  # the result structure with Tensor leaves replaced by _Leaf(index)
    grads: GradTracker  # the `.grad` reads and writes of the trace
    modules: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class _Leaf:
    index: int


class TraceMode(_mode.Mode):
    """The mode active while tracing: apply() appends nodes; state is lifted on first use."""

    name = "trace"
    tracing = True

    def __init__(self, device: str, xp: Any) -> None:
        self.device = device
        self.xp = xp
        self.nodes: list[Node] = []
        self.state: list[Tensor] = []
        self.current: dict[int, Tensor] = {}  # id(real tensor) -> its symbolic value now
        self.slot_of: dict[int, int] = {}
        self.written: dict[int, Tensor] = {}  # id(real) -> real, for tensors that got copy_
        self.grads = GradTracker(self)
        self.modules: dict[int, Any] = {}

    # ----- node creation -------------------------------------------------------------------------
    def node(self, op: str, inputs: tuple[int, ...], attrs: dict[str, Any],
             shape: tuple[int, ...], dtype: Any) -> Tensor:
        """Append a node; its symbolic tensor."""
        nid = len(self.nodes)
        self.nodes.append(Node(nid, op, inputs, attrs, tuple(shape), np.dtype(dtype),
                               user_location()))
        return Tensor._symbolic(nid, shape, dtype, self.device, self.xp)

    def input(self, index: int, like: Tensor) -> Tensor:
        """An `input` node standing for argument `like`."""
        t = self.node("input", (), {"index": index}, like.shape, like.dtype)
        t.requires_grad = like.requires_grad
        return t

    def sink(self, op: str, value: Tensor, key: str, k: int) -> None:
        """Append a sink node (output, state_write, grad_write) receiving value."""
        self.nodes.append(Node(len(self.nodes), op, (value._sym,), {key: k}, value.shape,
                               value.dtype, ""))

    def slot(self, t: Tensor) -> int:
        """t's index in the captured state, given on first use (reading it needs `lift`)."""
        slot = self.slot_of.get(id(t))
        if slot is None:
            slot = self.slot_of[id(t)] = len(self.state)
            self.state.append(t)
        return slot

    def constant(self, value: Any, device: str) -> Tensor:
        """A `const` node."""
        return self.node("const", (), {"value": value}, value.shape, value.dtype)

    def lift(self, t: Tensor) -> Tensor:
        """The symbolic value of t inside this trace (real tensors become state reads)."""
        if t._value is None:
            if t._sym >= len(self.nodes) or self.nodes[t._sym].shape != t.shape:
                raise TraceError(
                    "a symbolic tensor from another trace was used; do not keep tensors "
                    f"from inside a compiled function across calls ({user_location()})"
                )
            return t
        sym = self.current.get(id(t))
        if sym is None:
            sym = self.node("state", (), {"slot": self.slot(t)}, t.shape, t.dtype)
            self.current[id(t)] = sym
        return sym

    def apply(self, prim: Primitive, args: tuple[Tensor, ...], attrs: dict[str, Any]) -> Tensor:
        """Append the primitive's node (its shape rule checks the arguments now)."""
        syms = [self.lift(a) for a in args]
        try:
            shape, dtype = prim.shape_rule(*syms, **attrs)
        except Exception as e:
            raise TraceError(f"{prim.name} at {user_location()}: {e}") from e
        out = self.node(prim.name, tuple(s._sym for s in syms), attrs, shape, dtype)
        if autograd.GRAD.enabled and prim.differentiable and any(a.requires_grad for a in args):
            out.requires_grad = True
            out._ctx = (next(autograd.SEQ), prim, args, attrs)
        return out

    # ----- side effects --------------------------------------------------------------------------
    def assign(self, target: Tensor, src: Tensor) -> None:
        """copy_ while tracing: symbolic targets are rebound, real ones get a state write."""
        src = self.lift(src)
        if target._value is None:
            target._sym = src._sym
            return
        self.lift(target)  # give it a slot even if it was never read
        self.current[id(target)] = src
        self.written[id(target)] = target

    def value_of(self, t: Tensor) -> Tensor:
        """A captured tensor's value here: its state read, or what the trace assigned it."""
        return self.lift(t)

    def read_grad(self, t: Tensor) -> Tensor | None:
        """`.grad` of a captured tensor: the tracker records the read."""
        return self.grads.read(t)

    def note_grad(self, t: Tensor) -> None:
        """`.grad` of a captured tensor is about to change: the tracker records the write."""
        self.grads.write(t)

    def note_module(self, module: Any) -> None:
        """Remember the module: its train/eval flag joins the signature."""
        self.modules.setdefault(id(module), module)


def _tree_map(tree: Any, fn: Callable[[Any], Any], is_leaf: Callable[[Any], bool]) -> Any:
    """The same nesting of tuples (named too), lists and dicts, with fn applied to the leaves."""
    if is_leaf(tree):
        return fn(tree)
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(_tree_map(v, fn, is_leaf) for v in tree))
    if isinstance(tree, list | tuple):
        return type(tree)(_tree_map(v, fn, is_leaf) for v in tree)
    if isinstance(tree, dict):
        return {k: _tree_map(v, fn, is_leaf) for k, v in tree.items()}
    return tree


def _flatten(tree: Any, leaves: list[Tensor]) -> Any:
    """The result structure with each Tensor replaced by _Leaf(its index in `leaves`)."""

    def leaf(t: Tensor) -> _Leaf:
        leaves.append(t)
        return _Leaf(len(leaves) - 1)

    return _tree_map(tree, leaf, lambda t: isinstance(t, Tensor))


def unflatten(tree: Any, values: list[Any]) -> Any:
    """Rebuild a result structure from its leaves (inverse of the flattening in trace)."""
    return _tree_map(tree, lambda leaf: values[leaf.index], lambda t: isinstance(t, _Leaf))


def trace(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
          device: str, xp: Any) -> TraceResult:
    """Trace fn(*args, **kwargs): tensor args become `input` nodes, in order of appearance."""
    mode = TraceMode(device, xp)
    sym_args: list[Any] = []
    n_inputs = 0
    for a in args:
        if isinstance(a, Tensor):
            sym_args.append(mode.input(n_inputs, a))
            n_inputs += 1
        else:
            sym_args.append(a)
    sym_kwargs = {}
    for k, v in sorted(kwargs.items()):
        if isinstance(v, Tensor):
            sym_kwargs[k] = mode.input(n_inputs, v)
            n_inputs += 1
        else:
            sym_kwargs[k] = v
    token = _mode.MODE.set(mode)
    try:
        result = fn(*sym_args, **sym_kwargs)
        leaves: list[Tensor] = []
        out_tree = _flatten(result, leaves)
        out_syms = [mode.lift(t) for t in leaves]
    finally:
        _mode.MODE.reset(token)
        mode.grads.restore()  # the plan applies the body's changes, this first call included
    for i, sym in enumerate(out_syms):
        mode.sink("output", sym, "index", i)
    for key in mode.written:
        mode.sink("state_write", mode.current[key], "slot", mode.slot_of[key])
    mode.grads.finish()
    graph = Graph(mode.nodes, n_inputs=n_inputs, n_outputs=len(out_syms))
    graph.verify()
    return TraceResult(graph, mode.state, out_tree, mode.grads, list(mode.modules.values()))
