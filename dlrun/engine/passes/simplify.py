"""Algebraic simplification, as a table of small named rules (RULES, keyed by op).

Identities: x*1 = 1*x = x, x+0 = 0+x = x, x-0 = x, x/1 = x, -(-x) = x, k*y + k*y = (2k)*y,
permute∘permute = one permute (or x), reshape∘reshape = one reshape, no-op reshape/broadcast/cast/
permute = x, (XY)^T = Y^T X^T, permute(take(x, idx)) = take(x, permute(idx)), and broadcast_to
feeding an elementwise op (which broadcasts itself) = its source.
A rewrite that forwards a node to another value applies only when that value keeps the node's
shape and dtype; the first rule of the node's op that applies wins, and ELEMENTWISE_RULES run on
any elementwise node (asked of the primitive registry) that no rule of its op rewrote.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from dlrun.engine.graph import Graph, Node, renumber_inputs
from dlrun.engine.prims.registry import REGISTRY, Kind, broadcast_shapes


@dataclass
class RuleContext:
    """What a rule may read (the nodes kept so far, use counts) and how it makes new nodes."""

    by_id: dict[int, Node]
    users: dict[int, int]
    next_id: int
    out: list[Node] = field(default_factory=list)

    def arg(self, n: Node, k: int) -> Node | None:
        """The node feeding n's k-th input, when it has been kept."""
        return self.by_id.get(n.inputs[k])

    def same(self, n: Node, other_id: int) -> bool:
        """Whether value other_id has n's shape and dtype (so n may be forwarded to it)."""
        o = self.by_id[other_id]
        return o.shape == n.shape and o.dtype == n.dtype

    def emit(self, op: str, inputs: tuple[int, ...], attrs: dict[str, Any],
             shape: tuple[int, ...], dtype: np.dtype, where: str) -> Node:
        """A new node with a fresh id, placed before the node being rewritten."""
        node = Node(self.next_id, op, inputs, attrs, shape, dtype, where)
        self.next_id += 1
        self.by_id[node.id] = node
        self.out.append(node)
        return node

    def transposed(self, i: int, where: str) -> int:
        """The id of i^T (2-D): the source of a transpose, or a new transpose node."""
        node = self.by_id[i]
        if node.op == "permute" and node.attrs["axes"] == (1, 0):
            return node.inputs[0]
        return self.emit("permute", (i,), {"axes": (1, 0)}, node.shape[::-1], node.dtype,
                         where).id


# A rule returns the node rewritten, the id of a value to forward the node to, or None.
Rule = Callable[[RuleContext, Node], Node | int | None]


def _const_equals(node: Node | None, value: float) -> bool:
    if node is None or node.op != "const":
        return False
    v = node.attrs["value"]
    return v.size <= 4096 and bool((v == value).all())


def _past_unit(cx: RuleContext, n: Node, k: int, unit: float) -> int | None:
    """n's other input when input k is the constant `unit` and the other keeps n's type."""
    other = n.inputs[1 - k]
    return other if _const_equals(cx.arg(n, k), unit) and cx.same(n, other) else None


def mul_by_one(cx: RuleContext, n: Node) -> int | None:
    """x * 1 -> x"""
    return _past_unit(cx, n, 1, 1.0)


def one_mul(cx: RuleContext, n: Node) -> int | None:
    """1 * x -> x"""
    return _past_unit(cx, n, 0, 1.0)


def add_zero(cx: RuleContext, n: Node) -> int | None:
    """x + 0 -> x"""
    return _past_unit(cx, n, 1, 0.0)


def zero_add(cx: RuleContext, n: Node) -> int | None:
    """0 + x -> x"""
    return _past_unit(cx, n, 0, 0.0)


def sub_zero(cx: RuleContext, n: Node) -> int | None:
    """x - 0 -> x"""
    return _past_unit(cx, n, 1, 0.0)


def div_by_one(cx: RuleContext, n: Node) -> int | None:
    """x / 1 -> x"""
    return _past_unit(cx, n, 1, 1.0)


def doubled_constant_product(cx: RuleContext, n: Node) -> Node | None:
    """k*y + k*y -> (2k)*y, k a constant (a gradient used twice, e.g. of x*x)."""
    m = cx.arg(n, 0)
    if n.inputs[0] != n.inputs[1] or m is None or m.op != "mul" or cx.users[m.id] != 2:
        return None
    k_pos = next((j for j, i in enumerate(m.inputs) if cx.by_id[i].op == "const"), None)
    if k_pos is None:
        return None
    k = cx.by_id[m.inputs[k_pos]]
    two_k = cx.emit("const", (), {"value": k.attrs["value"] * 2}, k.shape, k.dtype, k.where).id
    y = m.inputs[1 - k_pos]
    return replace(n, op="mul", inputs=(two_k, y) if k_pos == 0 else (y, two_k))


def double_negation(cx: RuleContext, n: Node) -> int | None:
    """-(-x) -> x"""
    inner = cx.arg(n, 0)
    return inner.inputs[0] if inner is not None and inner.op == "neg" else None


def no_op(cx: RuleContext, n: Node) -> int | None:
    """reshape/broadcast_to/cast(x) -> x when it keeps x's shape and dtype."""
    return n.inputs[0] if cx.same(n, n.inputs[0]) else None


def reshape_of_reshape(cx: RuleContext, n: Node) -> Node | None:
    """reshape(reshape(x)) -> reshape(x)"""
    inner = cx.arg(n, 0)
    return replace(n, inputs=inner.inputs) if inner is not None and inner.op == "reshape" else None


def permute_of_permute(cx: RuleContext, n: Node) -> Node | int | None:
    """permute(permute(x, p), q) -> permute(x, p∘q), or x when p∘q is the identity."""
    inner = cx.arg(n, 0)
    if inner is None or inner.op != "permute":
        return None
    axes = tuple(inner.attrs["axes"][a] for a in n.attrs["axes"])
    if axes == tuple(range(len(axes))):
        return inner.inputs[0]
    return replace(n, inputs=inner.inputs, attrs={"axes": axes})


def identity_permute(cx: RuleContext, n: Node) -> int | None:
    """permute(x, identity) -> x"""
    return n.inputs[0] if n.attrs["axes"] == tuple(range(len(n.shape))) else None


def _permutes_index_dims(axes: tuple[int, ...], k: int) -> bool:
    """A permutation that only reorders the first k axes."""
    return sorted(axes[:k]) == list(range(k)) and all(a == i for i, a in enumerate(axes) if i >= k)


def permute_of_take(cx: RuleContext, n: Node) -> Node | None:
    """permute(take(x, idx, 0)) -> take(x, permute(idx), 0) when only index dims move."""
    # rows picked by a permuted index array, not a permuted copy of the rows (an embedding of
    # (B, T) tokens fed time-major to an RNN: the copy disappears)
    t = cx.arg(n, 0)
    if t is None or t.op != "take" or t.attrs["axis"] != 0 or cx.users[t.id] != 1:
        return None
    x, idx = t.inputs
    index = cx.by_id[idx]
    k = len(index.shape)
    if not _permutes_index_dims(n.attrs["axes"], k):
        return None
    axes = n.attrs["axes"][:k]
    pidx = cx.emit("permute", (idx,), {"axes": axes}, tuple(index.shape[a] for a in axes),
                   index.dtype, n.where)
    return replace(n, op="take", inputs=(x, pidx.id), attrs={"axis": 0})


def transpose_of_product(cx: RuleContext, n: Node) -> Node | None:
    """(X Y)^T -> Y^T X^T (2-D), so the GEMM writes the transposed layout itself."""
    # a weight gradient in the weight's own layout, not a strided view of its transpose
    mm = cx.arg(n, 0)
    if (n.attrs["axes"] != (1, 0) or mm is None or mm.op != "matmul" or len(mm.shape) != 2
            or cx.users[mm.id] != 1):
        return None
    x, y = mm.inputs
    yt = cx.transposed(y, n.where)
    xt = cx.transposed(x, n.where)
    return replace(n, op="matmul", inputs=(yt, xt), attrs={})


def skip_broadcasts(cx: RuleContext, n: Node) -> Node | None:
    """f(broadcast_to(x), ...) -> f(x, ...) for elementwise f, which broadcasts by itself."""
    new = list(n.inputs)
    for k in range(len(n.inputs)):
        i = cx.arg(n, k)
        if i is None or i.op != "broadcast_to":
            continue
        trial = new.copy()
        trial[k] = i.inputs[0]
        if broadcast_shapes(*(cx.by_id[j].shape for j in trial)) == n.shape:
            new = trial
    return None if tuple(new) == n.inputs else replace(n, inputs=tuple(new))


RULES: dict[str, tuple[Rule, ...]] = {
    "add": (doubled_constant_product, add_zero, zero_add),
    "mul": (mul_by_one, one_mul),
    "sub": (sub_zero,),
    "div": (div_by_one,),
    "neg": (double_negation,),
    "reshape": (no_op, reshape_of_reshape),
    "broadcast_to": (no_op,),
    "cast": (no_op,),
    "permute": (permute_of_permute, identity_permute, permute_of_take, transpose_of_product),
}
ELEMENTWISE_RULES: tuple[Rule, ...] = (skip_broadcasts,)


def _rules_for(op: str) -> tuple[Rule, ...]:
    """The op's own rules, then the elementwise ones when its primitive is elementwise."""
    prim = REGISTRY.get(op)
    extra = ELEMENTWISE_RULES if prim is not None and prim.kind is Kind.ELEMENTWISE else ()
    return RULES.get(op, ()) + extra


def _count_users(graph: Graph) -> dict[int, int]:
    users = {n.id: 0 for n in graph.nodes}
    for n in graph.nodes:
        for i in n.inputs:
            users[i] += 1
    return users


def simplify(graph: Graph) -> tuple[Graph, dict[str, Any]]:
    """Apply the first matching rule to each node, in order; record the rewrite count."""
    cx = RuleContext({}, _count_users(graph), graph.next_id())
    mapping: dict[int, int] = {}
    rewrites = 0
    for n in graph.nodes:
        n = renumber_inputs(n, mapping)
        result = next((r for rule in _rules_for(n.op) if (r := rule(cx, n)) is not None), None)
        rewrites += result is not None
        if isinstance(result, int):
            mapping[n.id] = result
            continue
        n = n if result is None else result
        cx.by_id[n.id] = n
        cx.out.append(n)
    return graph.replace(cx.out), {"rewrites": rewrites}
