"""Lowering: Graph -> Plan, a generated straight-line Python function over pre-bound calls.

Each compute node becomes one line `vN = fN(vA, vB[, out=bN])`, where `fN` is
`partial(prim.forward, xp, **attrs)` bound once, and `bN` a buffer preallocated by the memory
plan. Values live in local variables and are deleted after their last use, so the interpreter does
no dict lookups, shape inference or bookkeeping per node at run time. An exception is mapped back
from the generated line to the node, its op and the user source line that created it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from dlrun.engine.graph import SINKS, Graph, Node
from dlrun.engine.layout import allocate, order_of
from dlrun.engine.prims.registry import REGISTRY
from dlrun.errors import ExecutionError

_PLAN_IDS = itertools.count()


@dataclass
class Plan:
    """An executable plan: `run(inputs, state) -> (outputs, state_writes, grad_writes)`."""

    fn: Callable[..., Any]
    source: str
    filename: str
    line_nodes: dict[int, Node]
    state_write_slots: list[int]
    grad_write_slots: list[int]
    buffers: dict[str, Any] = field(default_factory=dict)
    inplace_slots: list[int] = field(default_factory=list)  # state arrays written in place
    calls: int = 0  # array operations per run (a fused chain counts each of its steps)
    _gen: Any = None
    _box: list[Any] = field(default_factory=lambda: [None])

    def run(self, inputs: list[Any], state: list[Any], grads: list[Any]) -> tuple[Any, Any, Any]:
        gen = self._gen
        if gen is None:
            gen = self._gen = self.fn(self._box)
            next(gen)
        try:
            gen.send((inputs, state, grads))
        except Exception as e:
            self._gen = None  # the generator is finished; the next call starts a new one
            node = self._failing_node(e)
            if node is None:
                raise
            where = f" (created at {node.where})" if node.where else ""
            args = ", ".join(f"%{i}" for i in node.inputs)
            raise ExecutionError(
                f"node %{node.id} = {node.op}({args}){where} failed: {type(e).__name__}: {e}"
            ) from e
        result, self._box[0] = self._box[0], None
        return result

    def _failing_node(self, e: Exception) -> Node | None:
        tb = e.__traceback__
        node = None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == self.filename:
                node = self.line_nodes.get(tb.tb_lineno)
            tb = tb.tb_next
        return node


def bind_op(op: str, attrs: dict[str, Any], xp: Any,
            shapes: tuple[tuple[int, ...], ...] | None = None) -> Callable[..., Any]:
    """The primitive's forward with the array module and attributes bound (the ufunc itself when
    the forward is exactly one ufunc call: one Python call less per node)."""
    prim = REGISTRY[op]
    if prim.ufunc is not None and not attrs:
        return getattr(xp, prim.ufunc)
    if prim.specialize is not None:
        return prim.specialize(xp, shapes, **attrs)
    return partial(prim.forward, xp, **attrs) if attrs else partial(prim.forward, xp)


def bind(node: Node, xp: Any, shapes: tuple[tuple[int, ...], ...] | None = None
         ) -> Callable[..., Any]:
    """A callable computing the node from its input arrays (fused nodes: the whole chain);
    `shapes`, the inputs' shapes, lets a primitive pick its fastest form."""
    if node.op == "fused":
        from dlrun.engine.passes.fuse import lower_fused, lower_fused_cuda

        return lower_fused(node, xp) if xp.__name__ == "numpy" else lower_fused_cuda(node, xp)
    return bind_op(node.op, node.attrs, xp, shapes)


def lower(graph: Graph, xp: Any) -> Plan:
    """Generate and compile the plan's Python function for a (verified, optimized) graph."""
    last_use: dict[int, int] = {}
    for pos, n in enumerate(graph.nodes):
        for i in n.inputs:
            last_use[i] = pos
    env: dict[str, Any] = {}
    lines = ["def __plan_gen(box):", "    while True:", "        inputs, state, grads = yield"]
    line_nodes: dict[int, Node] = {}
    outputs: dict[int, str] = {}
    state_writes: list[tuple[int, str]] = []
    grad_writes: list[tuple[int, str]] = []
    buffers: dict[str, Any] = {}
    live: set[int] = set()
    planned = graph.meta.get("buffers", {})
    state_out = graph.meta.get("state_out", {})
    placed = graph.meta.get("placed", {})
    layouts = graph.meta.get("layouts", {})
    containers = {c for c, _, _ in placed.values()}
    shape_of = {n.id: n.shape for n in graph.nodes}
    for pos, n in enumerate(graph.nodes):
        v = f"v{n.id}"
        if n.op == "input":
            lines.append(f"        {v} = inputs[{n.attrs['index']}]")
        elif n.op == "state":
            lines.append(f"        {v} = state[{n.attrs['slot']}]")
        elif n.op == "state_grad":
            lines.append(f"        {v} = grads[{n.attrs['index']}]")
        elif n.op == "const":
            env[f"c{n.id}"] = n.attrs["value"]
            lines.append(f"        {v} = c{n.id}")
        elif n.op in SINKS:
            src = f"v{n.inputs[0]}"
            if n.op == "output":
                outputs[n.attrs["index"]] = src
            elif n.op == "state_write":
                state_writes.append((n.attrs["slot"], src))
            else:
                grad_writes.append((n.attrs["slot"], src))
            continue
        else:
            out = None
            if n.id in state_out:
                out = f"state[{state_out[n.id]}]"  # written in place into the state's array
            elif n.id in placed:
                out = f"p{n.id}"  # a view of the slice of the container gathering it
            elif n.id in planned:
                out = f"b{planned[n.id]}"
                buffers.setdefault(out, graph.meta["buffer_specs"][planned[n.id]])
            if n.id in containers:  # every part was written into place: nothing to gather
                lines.append(f"        {v} = {out}")
            elif n.op == "fused" and xp.__name__ == "numpy":
                _emit_fused(n, out, xp, env, lines, line_nodes, layouts.get(n.id))
            elif out is None and n.op in _VIEWS:
                lines.append(f"        {v} = {_VIEWS[n.op](n, env)}")  # a method call, inline
                line_nodes[len(lines)] = n
            else:
                env[f"f{n.id}"] = bind(n, xp, tuple(shape_of[i] for i in n.inputs))
                args = ", ".join(f"v{i}" for i in n.inputs)
                if out is not None:
                    args = f"{args}, out={out}" if args else f"out={out}"
                lines.append(f"        {v} = f{n.id}({args})")
                line_nodes[len(lines)] = n
        if n.op not in SINKS:
            live.add(n.id)
        dead = sorted({i for i in n.inputs if last_use.get(i) == pos and n.op not in SINKS})
        if dead:
            lines.append(f"        del {', '.join(f'v{i}' for i in dead)}")
            live.difference_update(dead)
    outs = ", ".join(outputs[i] for i in range(len(outputs)))
    sws = ", ".join(src for _, src in state_writes)
    gws = ", ".join(src for _, src in grad_writes)
    lines.append(f"        box[0] = ({outs}{',' if outs else ''}), ({sws}{',' if sws else ''}), "
                 f"({gws}{',' if gws else ''})")
    # The frame lives on between calls (a generator: no per-call frame allocation, which for a
    # plan of thousands of locals would map fresh pages every step), so it must not keep
    # anything alive: the in-place state updates rely on the state arrays' reference counts.
    leftovers = ", ".join(["inputs", "state", "grads"] + [f"v{i}" for i in sorted(live)])
    lines.append(f"        del {leftovers}")
    source = "\n".join(lines) + "\n"
    filename = f"<dlrun plan {next(_PLAN_IDS)}>"
    for name, (shape, dtype, order) in buffers.items():
        env[name] = allocate(xp, shape, dtype, order)
    for v in placed:
        _place_view(v, placed, planned, env)
    code = compile(source, filename, "exec")
    exec(code, env)  # noqa: S102  (our own generated straight-line code)
    # Keep the source visible to tracebacks and debuggers.
    import linecache

    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return Plan(
        fn=env["__plan_gen"],
        source=source,
        filename=filename,
        line_nodes=line_nodes,
        calls=len(line_nodes),
        state_write_slots=[s for s, _ in state_writes],
        grad_write_slots=[s for s, _ in grad_writes],
        buffers={k: env[k] for k in buffers},
        inplace_slots=sorted(set(state_out.values())),
    )


def _place_view(v: int, placed: dict[int, Any], planned: dict[int, int],
                env: dict[str, Any]) -> Any:
    """env["p<v>"]: the view of its container's buffer that value v is computed into."""
    name = f"p{v}"
    if name not in env:
        c, index, reshape = placed[v]
        base = _place_view(c, placed, planned, env) if c in placed else env[f"b{planned[c]}"]
        view = base[index]
        env[name] = view.reshape(reshape) if reshape is not None else view
    return env[name]


def _view_permute(n: Node, env: dict[str, Any]) -> str:
    return f"v{n.inputs[0]}.transpose({n.attrs['axes']!r})"


def _view_reshape(n: Node, env: dict[str, Any]) -> str:
    return f"v{n.inputs[0]}.reshape({tuple(n.attrs['shape'])!r})"


def _view_getitem(n: Node, env: dict[str, Any]) -> str:
    from dlrun.engine.prims.movement import to_python_index

    env[f"i{n.id}"] = to_python_index(n.attrs["index"])
    return f"v{n.inputs[0]}[i{n.id}]"


# Views whose forward is one ndarray method/subscript: emitted as that expression (the same
# thing the primitive's forward computes, without two Python calls around it).
_VIEWS = {"permute": _view_permute, "reshape": _view_reshape, "getitem": _view_getitem}


def _emit_fused(n: Node, out: str | None, xp: Any, env: dict[str, Any], lines: list[str],
                line_nodes: dict[int, Node], strides: tuple[int, ...] | None = None) -> None:
    """Inline a fused chain: every step but the last writes a persistent scratch buffer, the
    last writes `out` (so `out` may alias any input of the chain)."""
    program = n.attrs["program"]
    scratch = f"s{n.id}"
    if len(program) > 1:  # laid out like the chain's result
        order = tuple(range(len(n.shape))) if strides is None else order_of(n.shape, strides)
        env[scratch] = allocate(xp, n.shape, n.dtype, order)
    for k, (op, refs, attrs) in enumerate(program):
        env[f"f{n.id}_{k}"] = bind_op(op, dict(attrs), xp)
        args = ", ".join(scratch if r < 0 else f"v{n.inputs[r]}" for r in refs)
        last = k == len(program) - 1
        target = out if last else scratch
        call = f"f{n.id}_{k}({args}, out={target})" if target else f"f{n.id}_{k}({args})"
        lines.append(f"        v{n.id} = {call}" if last else f"        {call}")
        line_nodes[len(lines)] = n


def interpret(graph: Graph, xp: Any, inputs: list[Any], state: list[Any],
              grads: list[Any] | None = None) -> dict[int, Any]:
    """Evaluate a graph node by node (reference executor for tests and constant folding)."""
    env: dict[int, Any] = {}
    for n in graph.nodes:
        if n.op == "input":
            env[n.id] = inputs[n.attrs["index"]]
        elif n.op == "state":
            env[n.id] = state[n.attrs["slot"]]
        elif n.op == "state_grad":
            env[n.id] = (grads or [])[n.attrs["index"]]
        elif n.op == "const":
            env[n.id] = n.attrs["value"]
        elif n.op in SINKS:
            env[n.id] = env[n.inputs[0]]
        else:
            env[n.id] = bind(n, xp)(*[env[i] for i in n.inputs])
    return env


