"""Lowering: Graph -> Plan, a generated straight-line Python function over pre-bound calls.

Each compute node becomes one line `vN = fN(vA, vB[, out=bN])`, where `fN` is the primitive's
forward bound once (`Primitive.bound`: the ufunc itself, the primitive's specialized form, or
`partial(prim.forward, xp, **attrs)`), and `bN` a buffer preallocated from the memory plan. What a
node computes is always its primitive's own code; the plan only decides where values live. Values
live in local variables and are deleted after their last use, so the interpreter does no dict
lookups, shape inference or bookkeeping per node at run time. An exception is mapped back from
the generated line to the node, its op and the user source line that created it.
"""

from __future__ import annotations

import itertools
import linecache
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dlrun.engine import collective
from dlrun.engine.graph import SINKS, Graph, Node
from dlrun.engine.prims.registry import REGISTRY
from dlrun.engine.static import cpu_kernels
from dlrun.engine.static.layout import allocate, order_of
from dlrun.engine.static.memory import MemoryPlan
from dlrun.errors import ExecutionError

_PLAN_IDS = itertools.count()
_NO_MEMORY = MemoryPlan({}, [], {}, {}, {})


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


def bind(node: Node, xp: Any, avals: tuple[Any, ...] | None = None) -> Callable[..., Any]:
    """A callable computing the node from its input arrays (`avals`: their shapes and dtypes):
    its primitive's bound forward."""
    return REGISTRY[node.op].bound(xp, node.attrs, avals)


_SOURCE_LINES = {"input": "inputs[{index}]", "state": "state[{slot}]",
                 "state_grad": "grads[{index}]"}


class _Emitter:
    """Builds the plan's source line by line, and the environment its names refer to."""

    def __init__(self, graph: Graph, memory: MemoryPlan | None, xp: Any) -> None:
        self.xp, self.memory = xp, memory or _NO_MEMORY
        self.containers = self.memory.containers
        self.node_of = graph.by_id()
        self.last_use = {i: pos for pos, n in enumerate(graph.nodes) for i in n.inputs}
        self.env: dict[str, Any] = {}
        self.lines = ["def __plan_gen(box):", "    while True:",
                      "        inputs, state, grads = yield"]
        self.line_nodes: dict[int, Node] = {}
        self.sinks: dict[str, dict[int, str]] = {op: {} for op in SINKS}
        self.buffers: dict[str, Any] = {}
        self.live: set[int] = set()
        self.calls = 0
        self.in_flight = 0

    def emit(self, pos: int, n: Node) -> None:
        """The line(s) for node n at position pos, then deletes of values dead after it."""
        if n.op in SINKS:
            key = "index" if n.op == "output" else "slot"
            self.sinks[n.op][n.attrs[key]] = f"v{n.inputs[0]}"
            return
        if n.op in _SOURCE_LINES:
            self.line(f"v{n.id} = {_SOURCE_LINES[n.op].format(**n.attrs)}")
        elif n.op == "const":
            self.env[f"c{n.id}"] = n.attrs["value"]
            self.line(f"v{n.id} = c{n.id}")
        else:
            self.compute(n)
            self.poll_collectives(n)
        self.live.add(n.id)
        dead = sorted({i for i in n.inputs if self.last_use.get(i) == pos})
        if dead:
            self.line(f"del {', '.join(f'v{i}' for i in dead)}")
            self.live.difference_update(dead)

    def poll_collectives(self, n: Node) -> None:
        """While a started collective (all_reduce_start) is in flight, let it move on after
        every node: MPI progresses only inside MPI calls (a progress thread costs a core)."""
        change = REGISTRY[n.op].in_flight
        self.in_flight += change
        if change == 0 and self.in_flight > 0:
            self.env["progress"] = collective.progress
            self.line("progress()")

    def line(self, text: str, node: Node | None = None) -> None:
        self.lines.append(f"        {text}")
        if node is not None:
            self.line_nodes[len(self.lines)] = node

    def compute(self, n: Node) -> None:
        """`vN = fN(inputs[, out=target])`, the primitive's inlined lines, or just the target
        when every part was placed."""
        out = self.target(n)
        if n.id in self.containers:
            self.line(f"v{n.id} = {out}")
            return
        args = [f"v{i}" for i in n.inputs]
        prim = REGISTRY[n.op]
        cpu_kernels.ORIGIN.set(n.where)  # named by a kernel's fallback warning
        inlined = prim.inline and prim.inline(self.xp, f"f{n.id}", args, out,
                                              lambda: self.new_buffer(n), n, **n.attrs)
        if inlined:
            steps, last, env = inlined
            self.env.update(env)
            for step in steps:
                self.line(step, n)
            self.line(f"v{n.id} = {last}", n)
            self.calls += len(steps) + 1
            return
        self.env[f"f{n.id}"] = bind(n, self.xp, tuple(self.node_of[i] for i in n.inputs))
        call_args = ", ".join(args + ([f"out={out}"] if out else []))
        self.line(f"v{n.id} = f{n.id}({call_args})", n)
        self.calls += 1

    def new_buffer(self, n: Node) -> Any:
        """An empty array for node n's value, laid out as the memory plan inferred it."""
        strides = self.memory.layouts.get(n.id)
        order = tuple(range(len(n.shape))) if strides is None else order_of(n.shape, strides)
        return allocate(self.xp, n.shape, n.dtype, order)

    def target(self, n: Node) -> str | None:
        """Where the memory plan says node n writes: a state's array, its slice of a container,
        a planned buffer, or nowhere (the primitive allocates)."""
        mem = self.memory
        if n.id in mem.state_out:
            return f"state[{mem.state_out[n.id]}]"  # written in place into the state's array
        if n.id in mem.placed:
            return f"p{n.id}"  # a view of the slice of the container gathering it
        if n.id in mem.buffers:
            name = f"b{mem.buffers[n.id]}"
            self.buffers.setdefault(name, mem.specs[mem.buffers[n.id]])
            return name
        return None

    def finish(self) -> str:
        """The closing lines (results into the box, nothing kept alive) and the whole source."""
        packs = [", ".join(src for _, src in sorted(self.sinks[op].items()))
                 for op in ("output", "state_write", "grad_write")]
        self.line("box[0] = " + ", ".join(f"({p}{',' if p else ''})" for p in packs))
        # The frame lives on between calls (a generator: no per-call frame allocation, which for
        # a plan of thousands of locals would map fresh pages every step), so it must not keep
        # anything alive: the in-place state updates rely on the state arrays' reference counts.
        leftovers = ["inputs", "state", "grads"] + [f"v{i}" for i in sorted(self.live)]
        self.line(f"del {', '.join(leftovers)}")
        return "\n".join(self.lines) + "\n"

    def allocate(self) -> None:
        """The planned buffers, and the views of container slices that parts are written to."""
        for name, (shape, dtype, order) in self.buffers.items():
            self.env[name] = allocate(self.xp, shape, dtype, order)
        for v in self.memory.placed:
            self.place_view(v)

    def place_view(self, v: int) -> Any:
        """env["p<v>"]: the view of its container's buffer that value v is computed into."""
        name = f"p{v}"
        if name not in self.env:
            c, index, reshape = self.memory.placed[v]
            placed = self.memory.placed
            base = self.place_view(c) if c in placed else self.env[f"b{self.memory.buffers[c]}"]
            view = base[index]
            self.env[name] = view.reshape(reshape) if reshape is not None else view
        return self.env[name]


def lower(graph: Graph, memory: MemoryPlan | None, xp: Any) -> Plan:
    """Generate and compile the plan's Python function for a (verified, optimized) graph, with
    values placed as `memory` says (None: every value in a fresh array)."""
    em = _Emitter(graph, memory, xp)
    for pos, n in enumerate(graph.nodes):
        em.emit(pos, n)
    source = em.finish()
    em.allocate()
    filename = f"<dlrun plan {next(_PLAN_IDS)}>"
    exec(compile(source, filename, "exec"), em.env)  # noqa: S102  (our own generated code)
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return Plan(
        fn=em.env["__plan_gen"], source=source, filename=filename, line_nodes=em.line_nodes,
        calls=em.calls,
        state_write_slots=sorted(em.sinks["state_write"]),
        grad_write_slots=sorted(em.sinks["grad_write"]),
        buffers={k: em.env[k] for k in em.buffers},
        inplace_slots=sorted(set(em.memory.state_out.values())),
    )
