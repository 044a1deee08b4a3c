"""Algebraic simplification: x*1, x+0, x-0, x/1, -(-x), permute∘permute, reshape∘reshape, no-op
reshape/broadcast/cast, (XY)^T = Y^T X^T, permute(take(x, idx)) = take(x, permute(idx)), and
broadcast_to feeding an elementwise op (which broadcasts itself).
A rewrite applies only when the result keeps the node's shape and dtype."""

from __future__ import annotations

from dataclasses import replace

from dlrun.engine.graph import Graph, Node, renumber_inputs
from dlrun.engine.prims.registry import REGISTRY, Kind, broadcast_shapes


def _const_equals(node: Node | None, value: float) -> bool:
    if node is None or node.op != "const":
        return False
    v = node.attrs["value"]
    return v.size <= 4096 and bool((v == value).all())


def _elementwise(op: str) -> bool:
    prim = REGISTRY.get(op)
    return prim is not None and prim.kind is Kind.ELEMENTWISE


def _skip_broadcasts(n: Node, ins: list[Node | None], by_id: dict[int, Node]) -> Node:
    """Elementwise ops broadcast by themselves: read a broadcast_to's source directly."""
    new = list(n.inputs)
    for k, i in enumerate(ins):
        if i is None or i.op != "broadcast_to":
            continue
        trial = new.copy()
        trial[k] = i.inputs[0]
        shapes = [by_id[j].shape for j in trial]
        if broadcast_shapes(*shapes) == n.shape:
            new = trial
    return n if tuple(new) == n.inputs else replace(n, inputs=tuple(new))


def _permutes_index_dims(axes: tuple[int, ...], k: int) -> bool:
    """A permutation that only reorders the first k axes."""
    return sorted(axes[:k]) == list(range(k)) and all(a == i for i, a in enumerate(axes) if i >= k)


def simplify(graph: Graph) -> Graph:
    by_id: dict[int, Node] = {}
    mapping: dict[int, int] = {}
    out: list[Node] = []
    rewrites = 0

    users = {n.id: 0 for n in graph.nodes}
    for n in graph.nodes:
        for i in n.inputs:
            users[i] += 1
    next_id = graph.next_id()

    def same(n: Node, other_id: int) -> bool:
        o = by_id[other_id]
        return o.shape == n.shape and o.dtype == n.dtype

    def transposed(i: int, where: str) -> int:
        """The id of i^T (2-D): the source of a transpose, or a new transpose node."""
        nonlocal next_id
        node = by_id[i]
        if node.op == "permute" and node.attrs["axes"] == (1, 0):
            return node.inputs[0]
        t = Node(next_id, "permute", (i,), {"axes": (1, 0)}, node.shape[::-1], node.dtype, where)
        next_id += 1
        by_id[t.id] = t
        out.append(t)
        return t.id

    for n in graph.nodes:
        n = renumber_inputs(n, mapping)
        target: int | None = None
        ins = [by_id.get(i) for i in n.inputs]
        if (n.op == "add" and n.inputs[0] == n.inputs[1] and ins[0] is not None
              and ins[0].op == "mul" and users[n.inputs[0]] == 2):
            # k*y + k*y (a gradient used twice, e.g. of x*x) = (2k)*y, k a constant
            k_pos = next((j for j, i in enumerate(ins[0].inputs) if by_id[i].op == "const"), None)
            if k_pos is not None:
                k = by_id[ins[0].inputs[k_pos]]
                two_k = Node(next_id, "const", (), {"value": k.attrs["value"] * 2}, k.shape,
                             k.dtype, k.where)
                next_id += 1
                by_id[two_k.id] = two_k
                out.append(two_k)
                y = ins[0].inputs[1 - k_pos]
                n = replace(n, op="mul", inputs=(two_k.id, y) if k_pos == 0 else (y, two_k.id))
                rewrites += 1
        elif n.op in ("mul", "add"):
            unit = 1.0 if n.op == "mul" else 0.0
            a, b = n.inputs
            if _const_equals(ins[1], unit) and same(n, a):
                target = a
            elif _const_equals(ins[0], unit) and same(n, b):
                target = b
        elif n.op in ("sub", "div"):
            unit = 0.0 if n.op == "sub" else 1.0
            if _const_equals(ins[1], unit) and same(n, n.inputs[0]):
                target = n.inputs[0]
        elif n.op == "neg" and ins[0] is not None and ins[0].op == "neg":
            target = ins[0].inputs[0]
        elif n.op in ("reshape", "broadcast_to") and same(n, n.inputs[0]):
            target = n.inputs[0]
        elif n.op == "cast" and same(n, n.inputs[0]):
            target = n.inputs[0]
        elif n.op == "reshape" and ins[0] is not None and ins[0].op == "reshape":
            n = replace(n, inputs=ins[0].inputs)
            rewrites += 1
        elif n.op == "permute" and ins[0] is not None and ins[0].op == "permute":
            inner, outer = ins[0].attrs["axes"], n.attrs["axes"]
            axes = tuple(inner[a] for a in outer)
            if axes == tuple(range(len(axes))):
                target = ins[0].inputs[0]
            else:
                n = replace(n, inputs=ins[0].inputs, attrs={"axes": axes})
                rewrites += 1
        elif n.op == "permute" and n.attrs["axes"] == tuple(range(len(n.shape))):
            target = n.inputs[0]
        elif (n.op == "permute" and ins[0] is not None and ins[0].op == "take"
              and ins[0].attrs["axis"] == 0 and users[ins[0].id] == 1
              and _permutes_index_dims(n.attrs["axes"], len(by_id[ins[0].inputs[1]].shape))):
            # rows picked by a permuted index array, not a permuted copy of the rows (an
            # embedding of (B, T) tokens fed time-major to an RNN: the copy disappears)
            x, idx = ins[0].inputs
            k = len(by_id[idx].shape)
            axes = n.attrs["axes"][:k]
            pidx = Node(next_id, "permute", (idx,), {"axes": axes},
                        tuple(by_id[idx].shape[a] for a in axes), by_id[idx].dtype, n.where)
            next_id += 1
            by_id[pidx.id] = pidx
            out.append(pidx)
            n = replace(n, op="take", inputs=(x, pidx.id), attrs={"axis": 0})
            rewrites += 1
        elif (n.op == "permute" and n.attrs["axes"] == (1, 0) and ins[0] is not None
              and ins[0].op == "matmul" and len(ins[0].shape) == 2
              and users[ins[0].id] == 1):
            # (X Y)^T = Y^T X^T: the GEMM writes the transposed layout itself (a weight
            # gradient in the weight's own layout, not a strided view of its transpose)
            x, y = ins[0].inputs
            n = replace(n, op="matmul", inputs=(transposed(y, n.where), transposed(x, n.where)),
                        attrs={})
            rewrites += 1
        if target is None and _elementwise(n.op) and any(
                i is not None and i.op == "broadcast_to" for i in ins):
            n2 = _skip_broadcasts(n, ins, by_id)
            if n2 is not n:
                n = n2
                rewrites += 1
        if target is not None:
            mapping[n.id] = target
            rewrites += 1
            continue
        by_id[n.id] = n
        out.append(n)
    g = graph.replace(out)
    g.meta["simplify_detail"] = {"rewrites": rewrites}
    return g
