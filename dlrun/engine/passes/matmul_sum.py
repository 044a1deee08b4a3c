"""Sums of per-step products and reductions -> one of each over the stacked steps:
sum_t A_t^T @ B_t == concat(A)^T @ concat(B) and sum_t sum(X_t, 0) == sum(concat(X), 0).

Backpropagation through time accumulates a weight's gradient as a sum of one small product per
time step (h_{t-1}^T @ g_t, often wrapped in the transpose of the weight's use), and a bias used
at every step (a GRU's b_hh) as a sum of per-step column sums. This pass turns such an add tree
into one GEMM, or one reduction, over the concatenated operands: one call instead of T calls
and T-1 additions (the concatenations of the same values are merged by the cse that follows).
"""

from __future__ import annotations

from dataclasses import replace

from dlrun.engine.graph import Graph, Node

MIN_TERMS = 3  # below this the concatenation is not worth it
T2 = (1, 0)


def _is_t(node: Node | None) -> bool:
    return node is not None and node.op == "permute" and node.attrs["axes"] == T2


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
                 found: tuple[Node, list[int]] | None, by_id: dict[int, Node],
                 pos: dict[int, int], root: Node, moved: set[int]
                 ) -> tuple[int, tuple[int, ...] | None]:
    """(the rows of `ids` stacked, `other` permuted alike): a reshape of the assemble_slices
    that already stacks them (`found`, from _row_assembly: moved up before the root if it came
    later, in its row order), else a concat in the given order."""
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


def matmul_sum(graph: Graph) -> Graph:
    by_id = graph.by_id()
    users = graph.users()
    pos = {n.id: k for k, n in enumerate(graph.nodes)}

    def is_tree_add(nid: int, shape: tuple[int, ...]) -> bool:
        n = by_id[nid]
        return n.op == "add" and n.shape == shape and len(users[nid]) == 1

    replacements: dict[int, list[Node]] = {}  # root id -> nodes replacing it
    moved: set[int] = set()  # assemble_slices nodes emitted earlier, with a replacement
    next_id = graph.next_id()
    for root in graph.nodes:
        if root.op != "add" or len(root.shape) not in (1, 2):
            continue
        if is_tree_add(root.id, root.shape) and by_id[users[root.id][0]].op == "add" \
                and by_id[users[root.id][0]].shape == root.shape:
            continue  # not the root of its add tree
        leaves, stack = [], [root.id]
        while stack:
            nid = stack.pop()
            node = by_id[nid]
            for i in node.inputs:
                if is_tree_add(i, root.shape):
                    stack.append(i)
                else:
                    leaves.append(i)
        groups: dict[tuple, list[tuple[int, int, int]]] = {}
        sums: dict[tuple, list[tuple[int, int]]] = {}
        rest: list[int] = []
        for leaf in sorted(leaves, key=pos.get):
            single = len(users[leaf]) == 1
            m = _match(by_id[leaf], by_id, users) if single and len(root.shape) == 2 else None
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
        if not big and not big_sums:
            continue
        for g in groups.values():
            if len(g) < MIN_TERMS:
                rest.extend(leaf for leaf, _, _ in g)
        for g in sums.values():
            if len(g) < MIN_TERMS:
                rest.extend(leaf for leaf, _ in g)
        build = _Builder(next_id, root.where)
        add_node = build.add

        terms: list[int] = []
        for group in big:
            outer = _is_t(by_id[group[0][0]])
            a_ids = tuple(a for _, a, _ in group)
            b_ids = tuple(b for _, _, b in group)
            a0, b0 = by_id[a_ids[0]], by_id[b_ids[0]]
            rows = sum(by_id[a].shape[0] for a in a_ids)
            found_a = _row_assembly(a_ids, by_id, users)
            found_b = None if found_a is not None else _row_assembly(b_ids, by_id, users)
            if found_b is None:  # a's assembly, or neither side has one
                cat_a, b_ids = _gather_rows(build, a_ids, b_ids, found_a, by_id, pos, root,
                                            moved)
                cat_b = _rows(build, None, b_ids, rows, by_id)
            else:
                cat_b, a_ids = _gather_rows(build, b_ids, a_ids, found_b, by_id, pos, root,
                                            moved)
                cat_a = _rows(build, None, a_ids, rows, by_id)
            if outer:  # (A^T B)^T = B^T A: the product in the root's layout, no transpose after
                bt = add_node("permute", (cat_b,), {"axes": T2}, (b0.shape[1], rows), b0.dtype)
                prod = add_node("matmul", (bt, cat_a), {}, root.shape, root.dtype)
            else:
                at = add_node("permute", (cat_a,), {"axes": T2}, (a0.shape[1], rows), a0.dtype)
                prod = add_node("matmul", (at, cat_b), {}, root.shape, root.dtype)
            terms.append(prod)
        for group in big_sums:
            x_ids = tuple(x for _, x in group)
            cat, _ = _gather_rows(build, x_ids, None, _row_assembly(x_ids, by_id, users),
                                  by_id, pos, root, moved)
            terms.append(add_node("sum", (cat,), {"axis": (0,), "keepdims": False}, root.shape,
                                  root.dtype))
        terms += sorted(rest, key=pos.get)
        acc = terms[0]
        for t in terms[1:]:
            acc = add_node("add", (acc, t), {}, root.shape, root.dtype)
        new = build.nodes
        next_id = build.next_id
        assert acc == new[-1].id  # the final product or add
        new[-1] = replace(new[-1], id=root.id)  # so the root's users need no change
        replacements[root.id] = new
    if not replacements:
        out = graph.replace(graph.nodes)
        out.meta["matmul_sum_detail"] = {"rewritten": 0}
        return out
    nodes: list[Node] = []
    for n in graph.nodes:
        if n.id in replacements:
            nodes.extend(replacements[n.id])
        elif n.id not in moved:
            nodes.append(n)
    out = graph.replace(nodes)
    out.meta["matmul_sum_detail"] = {"rewritten": len(replacements)}
    return out
