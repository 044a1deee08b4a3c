"""Row fusion: elementwise ops and the last-axis reductions around them become one `fused_rows`.

LayerNorm, its backward, softmax's backward and the like are elementwise work over rows of
width N with a few row reductions (sums, maxima) in between. Each group becomes one node that a
CPU kernel runs row by row, every pass over a row while it sits in cache (static/cpu_kernels.py).

Members are found from a group's output backwards: a producer joins when its primitive can run
in a row kernel (a `cpu_expr`, a `row_reduce` over the last axis, or a `same_order` reshape that
only adds or drops the trailing 1 of a row scalar), it lives on the group's rows (shape
lead + (N,) or lead + (1,), lead + () for a reduction without keepdims), and all its users are
already members. A group needs two members and a reduction, or enough elementwise work for a
kernel call (then it is an elementwise DAG `fuse`'s chains cannot take whole). The pass
runs only where row kernels do (passes.CPU_KERNEL_PASSES), so NumPy-only and GPU graphs are
unchanged.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from dlrun.engine.graph import SOURCES, Graph, Node
from dlrun.engine.passes.fuse import program_of
from dlrun.engine.prims.registry import REGISTRY
from dlrun.engine.static.cpu_kernels import MIN_KERNEL_WORK


def _lead_of(n: Node, by_id: dict[int, Node]) -> tuple[tuple[int, ...], int] | None:
    """The rows a row kernel would run node n on, as (lead shape, width): width 0 for a row
    scalar (it fits rows of any width); None when no row kernel can run it."""
    prim = REGISTRY.get(n.op)
    if prim is None or n.op in SOURCES or not n.shape:
        return None
    if prim.row_reduce is not None:
        x = by_id[n.inputs[0]]
        if len(n.inputs) != 1 or not x.shape or n.attrs.get("axis") != (len(x.shape) - 1,):
            return None
        return tuple(x.shape[:-1]), x.shape[-1]
    if prim.same_order:
        x = by_id[n.inputs[0]]
        if tuple(n.shape) == tuple(x.shape) + (1,):
            return tuple(x.shape), 0
        if tuple(x.shape) == tuple(n.shape) + (1,):
            return tuple(n.shape), 0
        return None
    if prim.fusable and prim.cpu_expr is not None:
        return tuple(n.shape[:-1]), (0 if n.shape[-1] == 1 else n.shape[-1])
    return None


def _reads_rows(user: Node, p: Node) -> bool:
    """The user reads p row for row: an elementwise user broadcasts a full-rank p (NumPy aligns
    shapes from the right, so a lead-shaped p would be read as something else)."""
    prim = REGISTRY[user.op]
    if prim.row_reduce is not None or prim.same_order:
        return True
    return len(p.shape) == len(user.shape) and p.shape[:-1] == user.shape[:-1]


def _fits(rows: tuple[tuple[int, ...], int], group: tuple[tuple[int, ...], int]) -> bool:
    return rows[0] == group[0] and (rows[1] == 0 or group[1] == 0 or rows[1] == group[1])


def _grow(out: Node, by_id: dict[int, Node], users: dict[int, list[int]], taken: set[int],
          position: dict[int, int]) -> tuple[list[int], tuple[tuple[int, ...], int]]:
    """The members of the group ending at `out` (ids) and the group's (lead, width)."""
    rows = _lead_of(out, by_id)
    members = {out.id}
    work = [out.id]
    while work:
        n = by_id[work.pop()]
        for i in set(n.inputs):
            p = by_id[i]
            if i in members or i in taken or p.dtype.kind not in "fb":
                continue
            prow = _lead_of(p, by_id)
            if prow is None or not _fits(prow, rows) or not set(users[i]) <= members:
                continue
            if not all(_reads_rows(by_id[u], p) for u in users[i]):
                continue
            rows = (rows[0], rows[1] or prow[1])
            members.add(i)
            work.append(i)
    return sorted(members, key=position.__getitem__), rows


def fuse_rows(graph: Graph) -> tuple[Graph, dict[str, Any]]:
    """Replace each row group (two members or more, worth a kernel: see _worth) by one
    `fused_rows` node."""
    by_id, users = graph.by_id(), graph.users()
    position = {n.id: k for k, n in enumerate(graph.nodes)}
    taken: set[int] = set()
    groups: dict[int, tuple[list[int], int]] = {}  # output id -> (members, width)
    for n in reversed(graph.nodes):
        if n.id in taken or n.dtype.kind != "f" or _lead_of(n, by_id) is None:
            continue
        members, (_, width) = _grow(n, by_id, users, taken, position)
        if len(members) >= 2 and width >= 2 and _worth(members, by_id, n):
            taken.update(members)
            groups[n.id] = (members, width)
    out: list[Node] = []
    for n in graph.nodes:
        if n.id in groups:
            out.append(_fused_rows_node([by_id[m] for m in groups[n.id][0]], groups[n.id][1]))
        elif n.id not in taken:
            out.append(n)
    return graph.replace(out), {"row_groups": len(groups),
                                "ops_fused": sum(len(m) for m, _ in groups.values())}


def _worth(members: list[int], by_id: dict[int, Node], out: Node) -> bool:
    """A group with a reduction always pays (it saves whole passes over memory); one of
    elementwise ops only (a DAG `fuse` cannot chain) when it is large enough for a kernel."""
    if any(REGISTRY[by_id[m].op].row_reduce is not None for m in members):
        return True
    return math.prod(out.shape) * len(members) >= MIN_KERNEL_WORK


def _fused_rows_node(members: list[Node], width: int) -> Node:
    """One node for the group: its steps as fuse.program_of writes them."""
    externals, program = program_of(members)
    return replace(members[-1], op="fused_rows", inputs=externals,
                   attrs={"program": program, "width": width})
