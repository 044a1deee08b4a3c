"""Memory planning: liveness intervals -> preallocated buffers reused across nodes and calls.

Nodes whose primitive takes `out=` get a buffer slot. Buffers are reused once the previous value
is dead (its last use, views of it included, is over); primitives that may run in place write
over an input that dies at that node. Values that escape the call (outputs, state and grad
writes, and what they view) are never planned, so nothing a caller holds is overwritten by the
next call. Buffers are laid out as their values would be when computed eagerly (layout.py).
The result is a `MemoryPlan`, which lowering reads; the static executor plans once the passes
have run (it is not a pass: it describes where the graph's values live, it does not rewrite it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from dlrun.engine.graph import SINKS, Graph, Node
from dlrun.engine.prims.registry import REGISTRY
from dlrun.engine.static.layout import (
    Strides,
    dense,
    infer_layouts,
    order_of,
    stand_in,
    view_nodes,
)


class BufferSpec(NamedTuple):
    shape: tuple[int, ...]
    dtype: Any
    order: tuple[int, ...]  # axes outermost first (layout.py)

    @property
    def nbytes(self) -> int:
        count = 1
        for s in self.shape:
            count *= s
        return count * self.dtype.itemsize


class Placement(NamedTuple):
    """A value computed straight into its slice of the container that gathers it."""

    container: int
    index: tuple  # the basic index of the slice in the container
    reshape: tuple[int, ...] | None  # set when the part reaches the container through a reshape


@dataclass
class MemoryPlan:
    """What lowering needs: where each computed value is written, and how buffers are laid out."""

    buffers: dict[int, int]  # value id -> buffer slot
    specs: list[BufferSpec]  # buffer slot -> shape, dtype, layout
    state_out: dict[int, int]  # value id -> state slot whose array the value is written into
    placed: dict[int, Placement]  # value id -> its slice of a container's buffer
    layouts: dict[int, Strides]  # value id -> strides in elements, as computed eagerly
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def containers(self) -> set[int]:
        """Values whose every part was written into place: nothing left to gather."""
        return {p.container for p in self.placed.values()}


@dataclass
class _Liveness:
    pos: dict[int, int]  # node id -> position
    root: dict[int, int]  # value id -> the value whose buffer it may alias (views)
    end: dict[int, int]  # root id -> position of its last use
    escapes: set[int]  # roots read by a sink: returned or written out
    views: set[int]


def _takes_out(op: str) -> bool:
    """The primitive writes into a given buffer: pure ops with `out=`, and collectives (impure:
    they exchange data, but their result is an array like any other)."""
    prim = REGISTRY.get(op)
    return prim is not None and prim.supports_out


def _in_place(op: str) -> bool:
    prim = REGISTRY.get(op)
    return prim is not None and prim.in_place


def _liveness(graph: Graph, views: set[int]) -> _Liveness:
    """Positions, view roots, last uses and escaping roots of every value."""
    pos = {n.id: k for k, n in enumerate(graph.nodes)}
    root: dict[int, int] = {}
    for n in graph.nodes:
        root[n.id] = root[n.inputs[0]] if n.id in views else n.id
    end = dict(pos)
    escapes: set[int] = set()
    for n in graph.nodes:
        for i in n.inputs:
            r = root[i]
            end[r] = max(end[r], pos[n.id])
            if n.op in SINKS:
                escapes.add(r)
    return _Liveness(pos, root, end, escapes, views)


def plan_memory(graph: Graph) -> MemoryPlan:
    """The graph's MemoryPlan: buffers for computed values, in-place state updates, placements."""
    layouts = infer_layouts(graph)
    live = _liveness(graph, view_nodes(graph, layouts))
    state_out = _in_place_state_writes(graph, live)
    placed = _placements(graph, live)
    start_at = _container_spans(live, placed)
    buffers, specs, naive = _assign_buffers(graph, live, layouts, placed, state_out, start_at)
    planned = sum(s.nbytes for s in specs)
    stats = {
        "planned_values": len(buffers),
        "buffers": len(specs),
        "planned_bytes": planned,  # the planned peak of the intermediates: all buffers live
        "unplanned_bytes": naive,
        "saved_bytes": naive - planned,
        "in_place_state_writes": len(state_out),
        "written_into_place": len(placed),
    }
    return MemoryPlan(buffers, specs, state_out, placed, layouts, stats)


def _container_spans(live: _Liveness, placed: dict[int, Placement]) -> dict[int, list[int]]:
    """{position: outermost containers allocated there}: a container's buffer holds its parts
    from the first part's write to the last read of the container or of any part (extends
    live.end accordingly)."""
    starts: dict[int, list[int]] = {}
    for v, p in placed.items():
        top = p.container
        while top in placed:
            top = placed[top].container
        live.end[top] = max(live.end[top], live.end[v], live.end[p.container])
        starts.setdefault(top, []).append(live.pos[v])
    start_at: dict[int, list[int]] = {}
    for top, ps in starts.items():
        start_at.setdefault(min(ps), []).append(top)
    return start_at


class _Pool:
    """Buffer slots: free lists by spec, and the active ones with the end of their value."""

    def __init__(self, end: dict[int, int]) -> None:
        self.end = end
        self.specs: list[BufferSpec] = []
        self.assign: dict[int, int] = {}
        self.free: dict[BufferSpec, list[int]] = {}
        self.active: list[tuple[int, int]] = []  # (end position, slot)
        self.naive = 0

    def allocate(self, n: Node, layout: Strides) -> None:
        spec = BufferSpec(n.shape, n.dtype, order_of(n.shape, layout))
        self.naive += n.nbytes
        pool = self.free.get(spec)
        if pool:
            slot = pool.pop()
        else:
            slot = len(self.specs)
            self.specs.append(spec)
        self.assign[n.id] = slot
        self.active.append((self.end[n.id], slot))

    def release(self, before: int = -1, slots: frozenset[int] = frozenset()) -> None:
        """Return to the free lists the active slots whose value ends before position `before`,
        and the active `slots`."""
        still = []
        for e, slot in self.active:
            if e < before or slot in slots:
                self.free.setdefault(self.specs[slot], []).append(slot)
            else:
                still.append((e, slot))
        self.active = still


def _assign_buffers(graph: Graph, live: _Liveness, layouts: dict[int, Strides],
                    placed: dict[int, Placement], state_out: dict[int, int],
                    start_at: dict[int, list[int]]) -> tuple[dict[int, int], list[BufferSpec], int]:
    """Walk the nodes in order, freeing dead buffers and giving each plannable value a slot."""
    by_id = graph.by_id()
    pool = _Pool(live.end)
    for n in graph.nodes:
        k = live.pos[n.id]
        pool.release(before=k)  # buffers whose value died before this node
        for top in start_at.get(k, ()):  # containers whose first part is written here
            pool.allocate(by_id[top], layouts[top])
        reusable = frozenset(pool.assign[i] for i in _in_place_inputs(n, k, live, pool.assign))
        if reusable:
            pool.release(slots=reusable)
        if (n.id in live.escapes or not _takes_out(n.op) or n.op in SINKS or n.id in live.views
                or n.id in pool.assign or n.id in placed or n.id in state_out):
            continue
        pool.allocate(n, layouts[n.id])
    return pool.assign, pool.specs, pool.naive


def _in_place_inputs(n: Node, k: int, live: _Liveness, assign: dict[int, int]) -> list[int]:
    """Inputs of n whose own buffer n may overwrite: they die at n and n may run in place
    (its primitive reads them before writing `out`)."""
    if not _in_place(n.op):
        return []
    return [i for i in n.inputs
            if live.root[i] == i and i in assign and live.end[i] == k]


def _part_indices(c: Node, by_id: dict[int, Node]) -> list[tuple] | None:
    """The slice of the container c that each of its inputs fills (its primitive's `parts`)."""
    prim = REGISTRY.get(c.op)
    if prim is None or prim.parts is None:
        return None
    return prim.parts(tuple(by_id[i].shape for i in c.inputs), c.shape, **c.attrs)


def _placements(graph: Graph, live: _Liveness) -> dict[int, Placement]:
    """{value id: Placement}: values computed straight into their slice of the concat or
    assemble_slices that gathers them, so gathering costs no copy (an RNN's per-step outputs and
    gradients). A container is placed all or nothing; a value goes to one container at most."""
    by_id, users = graph.by_id(), graph.users()
    placed: dict[int, Placement] = {}
    for c in graph.nodes:
        index_list = _part_indices(c, by_id)
        if (index_list is None or live.root[c.id] in live.escapes
                or len(set(c.inputs)) != len(c.inputs)):
            continue
        parts = _placeable_parts(c, index_list, by_id, users, live, placed)
        for v, index, reshape in parts or ():
            placed[v] = Placement(c.id, index, reshape)
    return placed


def _placeable_parts(c: Node, index_list: list[tuple], by_id: dict[int, Node],
                     users: dict[int, list[int]], live: _Liveness,
                     placed: dict[int, Placement]) -> list[tuple] | None:
    """[(value, index, reshape)] for every input of c, or None when any cannot be placed: a
    strided slice (writing each part into it costs more than one gather), a value that is a
    view, escapes, is placed already or cannot take `out=`."""
    probe = stand_in(c.shape, dense(c.shape))  # the container's buffer is C-ordered
    parts = []
    for i, index in zip(c.inputs, index_list, strict=True):
        v, reshape, part = i, None, by_id[i]
        if not probe[index].flags.c_contiguous:
            return None
        if part.op == "reshape" and part.id in live.views:
            v, reshape = part.inputs[0], by_id[part.inputs[0]].shape
        src = by_id[v]
        ok = (src.dtype == c.dtype and _takes_out(src.op) and v not in live.views
              and live.root[v] not in live.escapes and v not in placed
              and probe[index].shape == part.shape
              and sum(1 for u in users[v] if u == c.id) <= 1)
        if not ok:
            return None
        parts.append((v, index, reshape))
    return parts


def _in_place_state_writes(graph: Graph, live: _Liveness) -> dict[int, int]:
    """{node id: state slot} for nodes that may write a parameter's (or optimizer buffer's) new
    value straight into its array: the old value is dead by then, or read only by that very
    node as an input it may run in place over. Saves a fresh array per state per step."""
    by_id, users = graph.by_id(), graph.users()
    state_node = {n.attrs["slot"]: n.id for n in graph.nodes if n.op == "state"}
    out: dict[int, int] = {}
    for w in graph.of_op("state_write"):
        v, slot = w.inputs[0], w.attrs["slot"]
        prod = by_id[v]
        if (not _takes_out(prod.op) or v in live.views or v in out
                or any(by_id[u].op in SINKS for u in users[v] if u != w.id)  # written elsewhere
                or prod.shape != w.shape or prod.dtype != w.dtype):
            continue
        r = state_node.get(slot)
        if r is not None and live.end[r] >= live.pos[v] and not _overwrites_ok(prod, r, v, live):
            continue
        out[v] = slot
    return out


def _overwrites_ok(prod: Node, r: int, v: int, live: _Liveness) -> bool:
    """The state value r is last read by prod itself, directly, and prod may run in place."""
    reads_directly = r in prod.inputs and not any(
        live.root[i] == r and i != r for i in prod.inputs)
    return live.end[r] <= live.pos[v] and reads_directly and _in_place(prod.op)
