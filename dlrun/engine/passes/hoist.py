"""Hoist time-independent GEMMs out of unrolled recurrences: T small products, one large one.

An RNN unrolled over T steps that projects each input step on its own computes
`x[t] @ W` for t = 0..T-1 (its forward), and, in the backward, `g[t] @ W'` for each step, the
results gathered into the input's gradient by one `assemble_slices`. Neither depends on the
recurrence, so a static graph can do each as one GEMM over all T·B rows:

- forward: matmuls whose left operands are the rows `x[t]` of one tensor and whose right operand
  is one node become `y = x @ W` and the rows `y[t]`;
- backward: an `assemble_slices` whose every part at row t is `g_t @ W'` (one W') becomes
  `assemble_slices(g_0 .. g_T-1) @ W'` (the memory plan computes each g_t straight into its row).

Only a static graph can do this: eager mode meets the steps one at a time. (dlrun's own RNN
layers already project the whole sequence at once by default; this is for step-wise loops,
`projection = "step"` and user code.) The weight gradient's sum over steps is matmul_sum's.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Any

from dlrun.engine.graph import Graph, Node

MIN_STEPS = 3  # fewer products than this are not worth a regrouping


def _row(node: Node | None) -> int | None:
    """t when node is `getitem(x, index=(("i", t),))` (one row of its input), else None."""
    if node is None or node.op != "getitem":
        return None
    index = node.attrs["index"]
    if len(index) == 1 and index[0][0] == "i":
        return index[0][1]
    return None


def _forward_groups(graph: Graph, by_id: dict[int, Node]) -> dict[tuple[int, int], list[Node]]:
    """matmul(x[t], W) nodes grouped by (x, W), one per row t."""
    groups: dict[tuple[int, int], dict[int, Node]] = defaultdict(dict)
    for n in graph.nodes:
        if n.op != "matmul":
            continue
        a = by_id[n.inputs[0]]
        t = _row(a)
        w = by_id[n.inputs[1]]
        if t is None or len(w.shape) != 2 or len(a.shape) != 2:
            continue
        groups[(a.inputs[0], n.inputs[1])].setdefault(t, n)
    return {k: list(v.values()) for k, v in groups.items() if len(v) >= MIN_STEPS}


def _hoist_forward(graph: Graph) -> tuple[Graph, int]:
    by_id = graph.by_id()
    groups = _forward_groups(graph, by_id)
    if not groups:
        return graph, 0
    next_id = graph.next_id()
    position = {n.id: k for k, n in enumerate(graph.nodes)}
    first: dict[int, Node] = {}  # id of the first matmul of a group -> the hoisted GEMM
    rewrite: dict[int, Node] = {}
    for (x, w), members in groups.items():
        xs, ws = by_id[x].shape, by_id[w].shape
        head = min(members, key=lambda m: position[m.id])
        gemm = Node(next_id, "matmul", (x, w), {}, (*xs[:-1], ws[-1]), head.dtype, head.where)
        next_id += 1
        first[head.id] = gemm
        for m in members:
            index = by_id[m.inputs[0]].attrs["index"]
            rewrite[m.id] = replace(m, op="getitem", inputs=(gemm.id,), attrs={"index": index})
    nodes: list[Node] = []
    for n in graph.nodes:
        if n.id in first:
            nodes.append(first[n.id])
        nodes.append(rewrite.get(n.id, n))
    return graph.replace(nodes), len(groups)


def _backward_match(n: Node, by_id: dict[int, Node], users: dict[int, list[int]]
                    ) -> int | None:
    """W' when every part of the assemble_slices n is a row `g_t @ W'` used only there."""
    indices = n.attrs["indices"]
    if len(n.inputs) < MIN_STEPS or any(len(ix) != 1 or ix[0][0] != "i" for ix in indices):
        return None
    ws = set()
    for part in n.inputs:
        p = by_id[part]
        if p.op != "matmul" or users[part] != [n.id] or len(p.shape) != 2:
            return None
        ws.add(p.inputs[1])
    return ws.pop() if len(ws) == 1 else None


def _hoist_backward(graph: Graph) -> tuple[Graph, int]:
    by_id, users = graph.by_id(), graph.users()
    next_id = graph.next_id()
    out: list[Node] = []
    done = 0
    for n in graph.nodes:
        w = _backward_match(n, by_id, users) if n.op == "assemble_slices" else None
        if w is None:
            out.append(n)
            continue
        lefts = tuple(by_id[p].inputs[0] for p in n.inputs)
        g0 = by_id[lefts[0]]
        stacked = Node(next_id, "assemble_slices", lefts,
                       {**n.attrs, "shape": (*n.shape[:-1], g0.shape[-1])},
                       (*n.shape[:-1], g0.shape[-1]), g0.dtype, n.where)
        next_id += 1
        out += [stacked, replace(n, op="matmul", inputs=(stacked.id, w), attrs={})]
        done += 1
    return graph.replace(out), done


def hoist(graph: Graph) -> tuple[Graph, dict[str, Any]]:
    """Hoist the per-step input projections (forward) and their input gradients (backward)."""
    graph, forward = _hoist_forward(graph)
    graph, backward = _hoist_backward(graph)
    return graph, {"hoisted_gemms": forward, "hoisted_grad_gemms": backward}
