"""Tracing: run a Python function on symbolic tensors and record every primitive into a Graph.

The same `apply` calls that eager mode executes append nodes here instead — those inside
`loss.backward()` (autograd.py on symbolic tensors) and inside `optimizer.step()` included.
Real tensors met while tracing (parameters, buffers, optimizer state) become `state` nodes read
live at every call; `copy_` on them becomes a `state_write`; a changed `.grad` a `grad_write`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlrun.engine import autograd, dispatch
from dlrun.engine.graph import Graph, Node
from dlrun.engine.prims.registry import Primitive
from dlrun.engine.source import user_location
from dlrun.engine.tensor import Tensor
from dlrun.errors import TraceError

_UNSET = object()


@dataclass
class TraceResult:
    graph: Graph
    state: list[Tensor]  # captured tensors, indexed by `state` slot
    out_tree: Any  # the result structure with Tensor leaves replaced by _Leaf(index)
    grad_effects: list[tuple[int, Any]]  # (slot, None | real Tensor) `.grad` set without a node
    grad_read_slots: list[int]  # `state_grad` k reads state[slot]._grad, slot = this list[k]
    grad_touched: list[Tensor]  # tensors whose `.grad` the trace read or changed
    modules: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class _Leaf:
    index: int


class TraceMode:
    """The mode active while tracing: apply() appends nodes; state is lifted on first use."""

    name = "trace"

    def __init__(self, device: str, xp: Any) -> None:
        self.device = device
        self.xp = xp
        self.nodes: list[Node] = []
        self.state: list[Tensor] = []
        self.current: dict[int, Tensor] = {}  # id(real tensor) -> its symbolic value now
        self.slot_of: dict[int, int] = {}
        self.written: dict[int, Tensor] = {}  # id(real) -> real, for tensors that got copy_
        self.grad_before: dict[int, tuple[Tensor, Any]] = {}  # id(t) -> (t, .grad at start)
        self.modules: dict[int, Any] = {}
        self.grad_reads: dict[int, Tensor] = {}
        self.grad_read_slots: list[int] = []

    # ----- node creation -------------------------------------------------------------------------
    def _add(self, op: str, inputs: tuple[int, ...], attrs: dict[str, Any],
             shape: tuple[int, ...], dtype: Any) -> Tensor:
        nid = len(self.nodes)
        self.nodes.append(Node(nid, op, inputs, attrs, tuple(shape), np.dtype(dtype),
                               user_location()))
        return Tensor._symbolic(nid, shape, dtype, self.device, self.xp)

    def input(self, index: int, like: Tensor) -> Tensor:
        t = self._add("input", (), {"index": index}, like.shape, like.dtype)
        t.requires_grad = like.requires_grad
        return t

    def constant(self, value: Any, device: str) -> Tensor:
        return self._add("const", (), {"value": value}, value.shape, value.dtype)

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
            slot = len(self.state)
            self.state.append(t)
            self.slot_of[id(t)] = slot
            sym = self._add("state", (), {"slot": slot}, t.shape, t.dtype)
            self.current[id(t)] = sym
        return sym

    def apply(self, prim: Primitive, args: tuple[Tensor, ...], attrs: dict[str, Any]) -> Tensor:
        syms = [self.lift(a) for a in args]
        try:
            shape, dtype = prim.shape_rule(*syms, **attrs)
        except Exception as e:
            raise TraceError(f"{prim.name} at {user_location()}: {e}") from e
        out = self._add(prim.name, tuple(s._sym for s in syms), attrs, shape, dtype)
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

    def note_grad(self, t: Tensor) -> None:
        """Called before `.grad` of t changes while tracing; remembers the value to restore."""
        if id(t) not in self.grad_before:
            self.grad_before[id(t)] = (t, t._grad)

    def read_grad(self, t: Tensor) -> Tensor:
        """`.grad` of a captured tensor that holds a real gradient: a `state_grad` read."""
        sym = self.grad_reads.get(id(t))
        if sym is None:
            self.lift(t)
            self.note_grad(t)
            k = len(self.grad_read_slots)
            self.grad_read_slots.append(self.slot_of[id(t)])
            g = t._grad
            sym = self._add("state_grad", (), {"index": k}, g.shape, g.dtype)
            self.grad_reads[id(t)] = sym
        return sym

    def note_module(self, module: Any) -> None:
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
    token = dispatch.MODE.set(mode)
    try:
        result = fn(*sym_args, **sym_kwargs)
        leaves: list[Tensor] = []
        out_tree = _flatten(result, leaves)
        out_syms = [mode.lift(t) for t in leaves]
    finally:
        dispatch.MODE.reset(token)
        grad_after = {k: (t, t._grad) for k, (t, _) in mode.grad_before.items()}
        for t, before in mode.grad_before.values():
            t._grad = before  # the plan applies the effects, including on this first call

    def sink(op: str, value: Tensor, key: str, k: int) -> None:
        mode.nodes.append(Node(len(mode.nodes), op, (value._sym,), {key: k}, value.shape,
                               value.dtype, ""))

    for i, s in enumerate(out_syms):
        sink("output", s, "index", i)
    for key in mode.written:
        sink("state_write", mode.current[key], "slot", mode.slot_of[key])
    grad_effects: list[tuple[int, Any]] = []
    for t, after in grad_after.values():
        slot = _slot(mode, t)
        if after is not None and after._value is None:
            sink("grad_write", mode.lift(after), "slot", slot)
        else:
            grad_effects.append((slot, after))
    graph = Graph(mode.nodes, {"n_inputs": n_inputs, "n_outputs": len(out_syms), "xp": xp})
    graph.verify()
    return TraceResult(graph, mode.state, out_tree, grad_effects, mode.grad_read_slots,
                       [t for t, _ in mode.grad_before.values()], list(mode.modules.values()))


def _slot(mode: TraceMode, t: Tensor) -> int:
    slot = mode.slot_of.get(id(t))
    if slot is None:
        slot = len(mode.state)
        mode.state.append(t)
        mode.slot_of[id(t)] = slot
    return slot
