"""Memory planning: liveness intervals -> preallocated buffers reused across nodes and calls.

Nodes whose primitive takes `out=` get a buffer slot. Buffers are reused once the previous value
is dead (its last use, views of it included, is over); elementwise nodes may write in place over
an input that dies at that node. Values that escape the call (outputs, state and grad writes, and
what they view) are never planned, so nothing a caller holds is overwritten by the next call.
Buffers are laid out as their values would be when computed eagerly (passes/layout.py).
The result is recorded in graph.meta: `buffers` {node id: slot}, `buffer_specs`
[(shape, dtype, axis order)], `layouts` {node id: strides in elements}.
"""

from __future__ import annotations

from dlrun.engine.graph import SINKS, Graph
from dlrun.engine.layout import dense, infer_layouts, order_of, reshaped, stand_in
from dlrun.engine.passes.fuse import fusable
from dlrun.engine.prims.movement import assemble_layout
from dlrun.engine.prims.registry import REGISTRY

# Primitives whose result may be a view of their first input.
VIEW_OPS = frozenset({"reshape", "permute", "broadcast_to", "getitem"})


def view_nodes(graph: Graph, layouts: dict[int, tuple[int, ...]]) -> set[int]:
    """Ids of the nodes whose value is a view of their first input: permute, getitem,
    broadcast_to, and the reshapes their input's layout allows without a copy (a reshape
    that must copy is planned like any computed value)."""
    by_id = graph.by_id()
    out = set()
    for n in graph.nodes:
        if n.op not in VIEW_OPS:
            continue
        if n.op == "reshape":
            src = by_id[n.inputs[0]]
            if reshaped(src.shape, layouts[src.id], n.shape) is None:
                continue
        out.add(n.id)
    return out


def _takes_out(op: str) -> bool:
    if op == "fused":
        return True
    prim = REGISTRY.get(op)
    return prim is not None and prim.supports_out and prim.pure


def _in_place_inputs(n, k: int, end: dict[int, int], root: dict[int, int],
                     assign: dict[int, int]) -> list[int]:
    """Inputs of n whose own buffer n may overwrite: they die at n and are read before writing."""
    if not (n.op == "fused" or fusable(n.op)):
        return []
    out = []
    for i in n.inputs:
        if root[i] != i or i not in assign or end[i] != k:
            continue
        out.append(i)  # fused chains write `out` only in their last step, so any input is safe
    return out


def plan_memory(graph: Graph) -> Graph:
    nodes = graph.nodes
    pos = {n.id: k for k, n in enumerate(nodes)}
    by_id = graph.by_id()
    layouts = infer_layouts(graph)
    views = view_nodes(graph, layouts)

    # Views keep their source alive: map every value to the root buffer it may alias.
    root = {}
    for n in nodes:
        root[n.id] = root[n.inputs[0]] if n.id in views else n.id
    end = {n.id: pos[n.id] for n in nodes}
    escapes: set[int] = set()
    for n in nodes:
        for i in n.inputs:
            r = root[i]
            end[r] = max(end[r], pos[n.id])
            if n.op in SINKS:
                escapes.add(r)
    state_out = _in_place_state_writes(graph, pos, root, end, views)
    placed = _placements(graph, by_id, root, escapes, views)
    # A container's buffer holds its parts from the first part's write to the last read of the
    # container or of any part.
    starts: dict[int, list[int]] = {}
    for v, (c, _, _) in placed.items():
        top = c
        while top in placed:
            top = placed[top][0]
        end[top] = max(end[top], end[v], end[c])
        starts.setdefault(top, []).append(pos[v])
    start_at: dict[int, list[int]] = {}
    for top, ps in starts.items():
        start_at.setdefault(min(ps), []).append(top)

    specs: list[tuple[tuple[int, ...], object]] = []
    assign: dict[int, int] = {}
    free: dict[tuple, list[int]] = {}
    active: list[tuple[int, int]] = []  # (end position, slot)
    naive = 0

    def allocate(n) -> None:
        nonlocal naive
        spec = (n.shape, n.dtype, order_of(n.shape, layouts[n.id]))
        naive += n.nbytes
        pool = free.get(spec)
        if pool:
            slot = pool.pop()
        else:
            slot = len(specs)
            specs.append(spec)
        assign[n.id] = slot
        active.append((end[n.id], slot))

    for n in nodes:
        k = pos[n.id]
        still = []
        for e, slot in active:  # buffers whose value died before this node
            if e < k:
                free.setdefault(specs[slot], []).append(slot)
            else:
                still.append((e, slot))
        active = still
        for top in start_at.get(k, ()):  # containers whose first part is written here
            allocate(by_id[top])
        # (for ops that can run in place) the buffer of an input that dies at this node
        reusable = {assign[i] for i in _in_place_inputs(n, k, end, root, assign)}
        if reusable:
            still = []
            for e, slot in active:
                if slot in reusable:
                    free.setdefault(specs[slot], []).append(slot)
                else:
                    still.append((e, slot))
            active = still
        if (n.id in escapes or not _takes_out(n.op) or n.op in SINKS or n.id in views
                or n.id in assign or n.id in placed or n.id in state_out):
            continue
        allocate(n)
    g = graph.replace(nodes)
    g.meta["state_out"] = state_out
    g.meta["buffers"] = assign
    g.meta["buffer_specs"] = specs
    g.meta["placed"] = placed
    g.meta["layouts"] = layouts
    planned = sum(_nbytes(s) for s in specs)
    g.meta["memory"] = {
        "planned_values": len(assign),
        "buffers": len(specs),
        "planned_bytes": planned,  # the planned peak of the intermediates: all buffers live
        "unplanned_bytes": naive,
        "saved_bytes": naive - planned,
        "in_place_state_writes": len(state_out),
        "written_into_place": len(placed),
    }
    g.meta["memory_detail"] = dict(g.meta["memory"])
    return g


def _placements(graph: Graph, by_id, root: dict[int, int], escapes: set[int], views: set[int]
                ) -> dict[int, tuple[int, tuple, tuple[int, ...] | None]]:
    """{value id: (container id, index, reshape)}: values computed straight into their slice of
    the concat or assemble_slices that gathers them, so gathering costs no copy (an RNN's
    per-step outputs and gradients). `reshape` is set when the part reaches the container
    through a reshape view: its source is written into the slice reshaped. A container is
    placed all or nothing; a value goes to one container at most."""
    users = graph.users()
    placed: dict[int, tuple[int, tuple, tuple[int, ...] | None]] = {}
    for c in graph.nodes:
        if c.op == "concat":
            axis, start, index_list = c.attrs["axis"], 0, []
            for i in c.inputs:
                stop = start + by_id[i].shape[axis]
                index_list.append((slice(None),) * axis + (slice(start, stop),))
                start = stop
        elif c.op == "assemble_slices":
            _, where, gather = assemble_layout(c.attrs["indices"], c.attrs["shape"])
            if gather is None:
                continue
            index_list = list(where)
        else:
            continue
        if root[c.id] in escapes or len(set(c.inputs)) != len(c.inputs):
            continue
        probe = stand_in(c.shape, dense(c.shape))  # the container's buffer is C-ordered
        parts = []
        for i, index in zip(c.inputs, index_list, strict=True):
            v, reshape, part = i, None, by_id[i]
            if not probe[index].flags.c_contiguous:
                break  # a strided slice: writing each part into it costs more than one gather
            if part.op == "reshape" and part.id in views:
                v, reshape = part.inputs[0], by_id[part.inputs[0]].shape
            src = by_id[v]
            ok = (src.dtype == c.dtype and _takes_out(src.op) and v not in views
                  and root[v] not in escapes and v not in placed
                  and probe[index].shape == part.shape
                  and sum(1 for u in users[v] if u == c.id) <= 1)
            if not ok:
                break
            parts.append((v, index, reshape))
        else:
            for v, index, reshape in parts:
                placed[v] = (c.id, index, reshape)
    return placed


def _in_place_state_writes(graph: Graph, pos: dict[int, int], root: dict[int, int],
                           end: dict[int, int], views: set[int]) -> dict[int, int]:
    """{node id: state slot} for nodes that may write a parameter's (or optimizer buffer's) new
    value straight into its array: the old value is dead by then, or read only by that very
    node as a plain elementwise input. Saves allocating a fresh array per state per step."""
    by_id = graph.by_id()
    users = graph.users()
    state_node = {n.attrs["slot"]: n.id for n in graph.nodes if n.op == "state"}
    out: dict[int, int] = {}
    for w in graph.nodes:
        if w.op != "state_write":
            continue
        v, slot = w.inputs[0], w.attrs["slot"]
        prod = by_id[v]
        if not _takes_out(prod.op) or v in views or v in out:
            continue
        if any(by_id[u].op in SINKS for u in users[v] if u != w.id):
            continue  # also returned or written elsewhere
        if prod.shape != w.shape or prod.dtype != w.dtype:
            continue
        r = state_node.get(slot)
        if r is not None and end[r] >= pos[v]:
            reads_directly = r in prod.inputs and not any(
                root[i] == r and i != r for i in prod.inputs)
            if end[r] > pos[v] or not (reads_directly and (prod.op == "fused"
                                                          or fusable(prod.op))):
                continue
        out[v] = slot
    return out


def _nbytes(spec: tuple) -> int:
    shape, dtype, _ = spec
    count = 1
    for s in shape:
        count *= s
    return count * dtype.itemsize
