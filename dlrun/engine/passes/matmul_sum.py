"""Sums of per-step products and reductions -> one of each over the stacked steps:
sum_t A_t^T @ B_t == concat(A)^T @ concat(B) and sum_t sum(X_t, 0) == sum(concat(X), 0).

Backpropagation through time accumulates a weight's gradient as a sum of one small product per
time step (h_{t-1}^T @ g_t, often wrapped in the transpose of the weight's use), and a bias used
at every step (a GRU's b_hh) as a sum of per-step column sums. This pass turns such an add tree
into one GEMM, or one reduction, over the concatenated operands: one call instead of T calls
and T-1 additions (the concatenations of the same values are merged by the cse that follows).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from dlrun.engine.graph import Graph, Node

MIN_TERMS = 3  # below this the concatenation is not worth it
T2 = (1, 0)


def _is_t(node: Node | None) -> bool:
    return node is not None and node.op == "permute" and node.attrs["axes"] == T2


@dataclass
class _Scan:
    """The graph as matmul_sum reads it, plus what it carries from one add tree to the next."""

    by_id: dict[int, Node]
    users: dict[int, list[int]]
    pos: dict[int, int]
    next_id: int
    moved: set[int] = field(default_factory=set)  # assemble_slices emitted earlier

    def is_tree_add(self, nid: int, shape: tuple[int, ...]) -> bool:
        """Whether nid is an inner add of a tree of `shape` (an add whose one user is in it)."""
        n = self.by_id[nid]
        return n.op == "add" and n.shape == shape and len(self.users[nid]) == 1


# (leaf, a, b) of a leaf [permute](matmul(permute(a), b)); (leaf, x) of a leaf sum(x, 0)
GemmGroup = list[tuple[int, int, int]]
SumGroup = list[tuple[int, int]]


def _match(leaf: Node, by_id: dict[int, Node], users: dict[int, list[int]]
           ) -> tuple[bool, int, int] | None:
    """(outer transpose?, a, b) when leaf is [permute](matmul(permute(a), b)) with 2-D a, b
    and single-user intermediates; else None."""
    outer = _is_t(leaf)
    mm = by_id[leaf.inputs[0]] if outer else leaf
    if mm.op != "matmul" or len(mm.shape) != 2 or (outer and len(users[mm.id]) != 1):
        return None
    lhs, b = by_id[mm.inputs[0]], by_id[mm.inputs[1]]
    if not _is_t(lhs) or len(b.shape) != 2:
        return None
    a = by_id[lhs.inputs[0]]
    return outer, a.id, b.id


def _row_assembly(ids: tuple[int, ...], by_id: dict[int, Node], users: dict[int, list[int]]
                  ) -> tuple[Node, list[int]] | None:
    """(B, each id's row) when some assemble_slices B stacks exactly these values as its rows
    (an RNN's per-step gradients also gathered for its input's gradient): then their
    concatenation in row order is a reshape of B, and each value is computed into B once."""
    for u in users[ids[0]]:
        b = by_id[u]
        if (b.op != "assemble_slices" or len(b.inputs) != len(ids)
                or set(b.inputs) != set(ids) or len(set(ids)) != len(ids)):
            continue
        indices = b.attrs["indices"]
        if not all(len(ix) == 1 and ix[0][0] == "i" for ix in indices):
            continue
        rows = {i: ix[0][1] for i, ix in zip(b.inputs, indices, strict=True)}
        if sorted(rows.values()) == list(range(b.shape[0])) and all(
                by_id[i].shape == b.shape[1:] for i in ids):
            return b, [rows[i] for i in ids]
    return None


class _Builder:
    """New nodes with fresh ids, all attributed to the source line of the tree they replace."""

    def __init__(self, next_id: int, where: str) -> None:
        self.next_id, self.where, self.nodes = next_id, where, []

    def add(self, op: str, inputs: tuple[int, ...], attrs: dict, shape: tuple, dtype) -> int:
        node = Node(self.next_id, op, inputs, attrs, tuple(shape), dtype, self.where)
        self.next_id += 1
        self.nodes.append(node)
        return node.id


def _match_sum(leaf: Node, by_id: dict[int, Node]) -> int | None:
    """x when leaf is sum(x, axis=(0,)) over a 2-D x (a per-step bias gradient); else None."""
    if leaf.op != "sum" or leaf.attrs["keepdims"] or tuple(leaf.attrs["axis"] or ()) != (0,):
        return None
    x = by_id[leaf.inputs[0]]
    return x.id if len(x.shape) == 2 else None


def _gather_rows(build: _Builder, ids: tuple[int, ...], other: tuple[int, ...] | None,
                 found: tuple[Node, list[int]] | None, scan: _Scan, root: Node
                 ) -> tuple[int, tuple[int, ...] | None]:
    """(the rows of `ids` stacked, `other` permuted alike): a reshape of the assemble_slices
    that already stacks them (`found`, from _row_assembly: moved up before the root if it came
    later, in its row order), else a concat in the given order."""
    by_id, pos, moved = scan.by_id, scan.pos, scan.moved
    rows = sum(by_id[i].shape[0] for i in ids)
    if found is None:
        return _rows(build, None, ids, rows, by_id), other
    assembled, order = found
    perm = sorted(range(len(order)), key=order.__getitem__)
    ids = tuple(ids[k] for k in perm)
    if pos[assembled.id] > pos[root.id] and assembled.id not in moved:
        build.nodes.append(assembled)  # moved up: its parts all exist by now
        moved.add(assembled.id)
    return (_rows(build, assembled, ids, rows, by_id),
            None if other is None else tuple(other[k] for k in perm))


def _rows(build: _Builder, assembled: Node | None, ids: tuple[int, ...], rows: int,
          by_id: dict[int, Node]) -> int:
    """The values `ids` stacked as rows: a reshape of their assembly, else a concat."""
    ref = by_id[ids[0]]
    shape = (rows, ref.shape[1])
    if assembled is not None:
        return build.add("reshape", (assembled.id,), {"shape": shape}, shape, ref.dtype)
    return build.add("concat", ids, {"axis": 0}, shape, ref.dtype)


def _tree_roots(graph: Graph, scan: _Scan) -> Iterator[Node]:
    """The adds of 1-D or 2-D values that are not an inner add of a larger add tree."""
    for root in graph.nodes:
        if root.op != "add" or len(root.shape) not in (1, 2):
            continue
        if scan.is_tree_add(root.id, root.shape):
            user = scan.by_id[scan.users[root.id][0]]
            if user.op == "add" and user.shape == root.shape:
                continue
        yield root


def _collect_leaves(root: Node, scan: _Scan) -> list[int]:
    """The terms the add tree under root sums (the inputs of its adds that are not its adds)."""
    leaves, stack = [], [root.id]
    while stack:
        for i in scan.by_id[stack.pop()].inputs:
            if scan.is_tree_add(i, root.shape):
                stack.append(i)
            else:
                leaves.append(i)
    return leaves


def _group_leaves(root: Node, leaves: list[int], scan: _Scan
                  ) -> tuple[list[GemmGroup], list[SumGroup], list[int]]:
    """(products to stack, column sums to stack, the other terms), grouped by operand type;
    groups of fewer than MIN_TERMS terms join the other terms."""
    by_id = scan.by_id
    groups: dict[tuple, GemmGroup] = {}
    sums: dict[tuple, SumGroup] = {}
    rest: list[int] = []
    for leaf in sorted(leaves, key=scan.pos.get):
        single = len(scan.users[leaf]) == 1
        m = _match(by_id[leaf], by_id, scan.users) if single and len(root.shape) == 2 else None
        x = _match_sum(by_id[leaf], by_id) if single and m is None else None
        if m is not None:
            outer, a, b = m
            key = (outer, by_id[a].shape[1:], by_id[b].shape[1:], by_id[a].dtype)
            groups.setdefault(key, []).append((leaf, a, b))
        elif x is not None and by_id[x].shape[1:] == root.shape:
            sums.setdefault((by_id[x].dtype,), []).append((leaf, x))
        else:
            rest.append(leaf)
    big = [g for g in groups.values() if len(g) >= MIN_TERMS]
    big_sums = [g for g in sums.values() if len(g) >= MIN_TERMS]
    rest += [t[0] for g in (*groups.values(), *sums.values()) if len(g) < MIN_TERMS for t in g]
    return big, big_sums, rest


def _stacked_gemm(build: _Builder, group: GemmGroup, root: Node, scan: _Scan) -> int:
    """One GEMM for sum_t [(]A_t^T @ B_t[)^T]: concat(A)^T @ concat(B) (or its transpose)."""
    by_id = scan.by_id
    outer = _is_t(by_id[group[0][0]])
    a_ids = tuple(a for _, a, _ in group)
    b_ids = tuple(b for _, _, b in group)
    a0, b0 = by_id[a_ids[0]], by_id[b_ids[0]]
    rows = sum(by_id[a].shape[0] for a in a_ids)
    found_a = _row_assembly(a_ids, by_id, scan.users)
    found_b = None if found_a is not None else _row_assembly(b_ids, by_id, scan.users)
    if found_b is None:  # a's assembly, or neither side has one
        cat_a, b_ids = _gather_rows(build, a_ids, b_ids, found_a, scan, root)
        cat_b = _rows(build, None, b_ids, rows, by_id)
    else:
        cat_b, a_ids = _gather_rows(build, b_ids, a_ids, found_b, scan, root)
        cat_a = _rows(build, None, a_ids, rows, by_id)
    if outer:  # (A^T B)^T = B^T A: the product in the root's layout, no transpose after
        bt = build.add("permute", (cat_b,), {"axes": T2}, (b0.shape[1], rows), b0.dtype)
        return build.add("matmul", (bt, cat_a), {}, root.shape, root.dtype)
    at = build.add("permute", (cat_a,), {"axes": T2}, (a0.shape[1], rows), a0.dtype)
    return build.add("matmul", (at, cat_b), {}, root.shape, root.dtype)


def _stacked_sum(build: _Builder, group: SumGroup, root: Node, scan: _Scan) -> int:
    """One reduction for sum_t sum(X_t, 0): sum(concat(X), 0)."""
    x_ids = tuple(x for _, x in group)
    found = _row_assembly(x_ids, scan.by_id, scan.users)
    cat, _ = _gather_rows(build, x_ids, None, found, scan, root)
    return build.add("sum", (cat,), {"axis": (0,), "keepdims": False}, root.shape, root.dtype)


def _rewrite_tree(root: Node, scan: _Scan) -> list[Node] | None:
    """The nodes replacing the add tree under root (the last one taking root's id), or None
    when it has no group of MIN_TERMS stackable terms."""
    gemms, sums, rest = _group_leaves(root, _collect_leaves(root, scan), scan)
    if not gemms and not sums:
        return None
    build = _Builder(scan.next_id, root.where)
    terms = [_stacked_gemm(build, g, root, scan) for g in gemms]
    terms += [_stacked_sum(build, g, root, scan) for g in sums]
    terms += sorted(rest, key=scan.pos.get)
    acc = terms[0]
    for t in terms[1:]:
        acc = build.add("add", (acc, t), {}, root.shape, root.dtype)
    scan.next_id = build.next_id
    new = build.nodes
    assert acc == new[-1].id  # the final product or add
    new[-1] = replace(new[-1], id=root.id)  # so the root's users need no change
    return new


def _splice(graph: Graph, replacements: dict[int, list[Node]], moved: set[int]) -> Graph:
    """The graph with each rewritten root replaced by its nodes, and moved nodes dropped."""
    nodes: list[Node] = []
    for n in graph.nodes:
        if n.id in replacements:
            nodes.extend(replacements[n.id])
        elif n.id not in moved:
            nodes.append(n)
    return graph.replace(nodes)


def matmul_sum(graph: Graph) -> tuple[Graph, dict[str, Any]]:
    """Rewrite each add tree with MIN_TERMS or more stackable terms to sum their stacks."""
    scan = _Scan(graph.by_id(), graph.users(), {n.id: k for k, n in enumerate(graph.nodes)},
                 graph.next_id())
    replacements: dict[int, list[Node]] = {}  # root id -> nodes replacing it
    for root in _tree_roots(graph, scan):
        new = _rewrite_tree(root, scan)
        if new is not None:
            replacements[root.id] = new
    return _splice(graph, replacements, scan.moved), {"rewritten": len(replacements)}
