"""Memory planning: liveness intervals -> preallocated buffers reused across nodes and calls.

Nodes whose primitive takes `out=` get a buffer slot. Buffers are reused once the previous value
is dead (its last use, views of it included, is over); elementwise nodes may write in place over
an input that dies at that node. Values that escape the call (outputs, state and grad writes, and
what they view) are never planned, so nothing a caller holds is overwritten by the next call.
The result is recorded in graph.meta: `buffers` {node id: slot}, `buffer_specs` [(shape, dtype)].
"""

from __future__ import annotations

from dlrun.engine.graph import SINKS, Graph
from dlrun.engine.passes.fuse import fusable
from dlrun.engine.prims.registry import REGISTRY

# Primitives whose result may be a view of their first input.
VIEW_OPS = frozenset({"reshape", "permute", "broadcast_to", "getitem"})


def copies(node, by_id) -> bool:
    """A reshape of a transposed value: it must copy, so it is planned like any computed value."""
    if node.op != "reshape":
        return False
    src = by_id[node.inputs[0]]
    return src.op == "permute" and src.attrs["axes"] != tuple(range(len(src.shape)))


def _is_view(node, by_id) -> bool:
    return node.op in VIEW_OPS and not copies(node, by_id)


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

    # Views keep their source alive: map every value to the root buffer it may alias.
    root = {}
    for n in nodes:
        root[n.id] = root[n.inputs[0]] if _is_view(n, by_id) else n.id
    end = {n.id: pos[n.id] for n in nodes}
    escapes: set[int] = set()
    for n in nodes:
        for i in n.inputs:
            r = root[i]
            end[r] = max(end[r], pos[n.id])
            if n.op in SINKS:
                escapes.add(r)

    specs: list[tuple[tuple[int, ...], object]] = []
    assign: dict[int, int] = {}
    free: dict[tuple, list[int]] = {}
    active: list[tuple[int, int]] = []  # (end position, slot)
    naive = 0
    for n in nodes:
        k = pos[n.id]
        # Release buffers whose value died before this node, and (for ops that can run in
        # place) the buffer of an input that dies at this node.
        reusable = {assign[i] for i in _in_place_inputs(n, k, end, root, assign)}
        still = []
        for e, slot in active:
            if e < k or slot in reusable:
                free.setdefault(specs[slot], []).append(slot)
            else:
                still.append((e, slot))
        active = still
        if n.id in escapes or not _takes_out(n.op) or n.op in SINKS or _is_view(n, by_id):
            continue
        spec = (n.shape, n.dtype)
        naive += by_id[n.id].nbytes
        pool = free.get(spec)
        if pool:
            slot = pool.pop()
        else:
            slot = len(specs)
            specs.append(spec)
        assign[n.id] = slot
        active.append((end[n.id], slot))
    state_out = _in_place_state_writes(graph, pos, root, end)
    g = graph.replace(nodes)
    g.meta["state_out"] = state_out
    g.meta["buffers"] = assign
    g.meta["buffer_specs"] = specs
    planned = sum(_nbytes(s) for s in specs)
    g.meta["memory"] = {
        "planned_values": len(assign),
        "buffers": len(specs),
        "planned_bytes": planned,  # the planned peak of the intermediates: all buffers live
        "unplanned_bytes": naive,
        "saved_bytes": naive - planned,
        "in_place_state_writes": len(state_out),
    }
    g.meta["memory_detail"] = dict(g.meta["memory"])
    return g


def _in_place_state_writes(graph: Graph, pos: dict[int, int], root: dict[int, int],
                           end: dict[int, int]) -> dict[int, int]:
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
        if not _takes_out(prod.op) or _is_view(prod, by_id) or v in out:
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
    shape, dtype = spec
    count = 1
    for s in shape:
        count *= s
    return count * dtype.itemsize
