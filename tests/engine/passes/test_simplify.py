from __future__ import annotations

import dlrun
from dlrun.engine.passes import dce, simplify
from tests.engine.passes.helpers import assert_same_results, ops, traced


def test_removes_identities() -> None:
    def fn(x):
        y = (x * 1.0 + 0.0 - 0.0) / 1.0
        z = -y.transpose(0, 1).transpose(0, 1)
        return -z

    x = dlrun.tensor([[1.0, 2.0], [3.0, 4.0]], dtype="float64")
    r = traced(fn, x)
    g = dce(simplify(r.graph)[0])[0]
    assert [op for op in ops(g) if op not in ("input", "output")] == []
    assert_same_results(r.graph, g, r, (x,))


def test_keeps_broadcasting_multiplications() -> None:
    x = dlrun.ones(3, dtype="float64")
    r = traced(lambda x: x * dlrun.ones(2, 3, dtype="float64"), x)
    g = dce(simplify(r.graph)[0])[0]
    assert "mul" in ops(g)  # x*1 here changes the shape, so it must stay
    assert_same_results(r.graph, g, r, (x,))


def test_composes_reshapes_and_permutes() -> None:
    x = dlrun.tensor(dlrun.arange(24).numpy().reshape(2, 3, 4), dtype="float64")
    r = traced(lambda x: x.reshape(6, 4).reshape(4, 6).permute(1, 0).permute(1, 0) * 2.0, x)
    g = dce(simplify(r.graph)[0])[0]
    assert ops(g).count("reshape") == 1 and ops(g).count("permute") == 0
    assert_same_results(r.graph, g, r, (x,))


def test_elementwise_reads_through_broadcast_to() -> None:
    x = dlrun.ones(4, 3, dtype="float64")
    r = traced(lambda x: x * dlrun.tensor([1.0, 2.0, 3.0], dtype="float64").expand(4, 3), x)
    g = dce(simplify(r.graph)[0])[0]
    assert "broadcast_to" not in ops(g)
    assert_same_results(r.graph, g, r, (x,))


def test_transpose_of_a_product_is_the_product_of_transposes() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    a = dlrun.tensor(rng.standard_normal((5, 3)))
    b = dlrun.tensor(rng.standard_normal((5, 4)))
    r = traced(lambda a, b: (a.transpose(0, 1) @ b).transpose(0, 1) * 2.0, a, b)
    g = dce(simplify(r.graph)[0])[0]
    # (a^T b)^T = b^T a: one transpose of b feeding the matmul, no transpose after it
    assert ops(g).count("permute") == 1 and ops(g).count("matmul") == 1
    mm = next(n for n in g.nodes if n.op == "matmul")
    assert mm.shape == (4, 3)
    assert_same_results(r.graph, g, r, (a, b))


def test_doubled_constant_product_folds_into_one_multiply() -> None:
    import numpy as np

    x = dlrun.tensor(np.arange(4.0))
    r = traced(lambda x: (lambda t: t + t)(x * 3.0), x)
    g = dce(simplify(r.graph)[0])[0]
    assert ops(g).count("mul") == 1 and "add" not in ops(g)
    assert_same_results(r.graph, g, r, (x,))


def test_permuted_take_picks_rows_by_a_permuted_index() -> None:
    import numpy as np

    w = dlrun.tensor(np.random.default_rng(0).standard_normal((7, 3)))
    idx = dlrun.tensor(np.random.default_rng(1).integers(0, 7, (4, 5)))
    r = traced(lambda i: dlrun.functional.embedding(i, w).permute(1, 0, 2) * 2.0, idx)
    g = dce(simplify(r.graph)[0])[0]
    by_id = g.by_id()
    take = next(n for n in g.nodes if n.op == "take")
    assert take.shape == (5, 4, 3) and by_id[take.inputs[1]].op == "permute"
    assert_same_results(r.graph, g, r, (idx,))
    # a permutation that moves the row dim is left alone
    r2 = traced(lambda i: dlrun.functional.embedding(i, w).permute(2, 0, 1) * 2.0, idx)
    g2 = dce(simplify(r2.graph)[0])[0]
    assert next(n for n in g2.nodes if n.op == "take").shape == (4, 5, 3)


# --- the rule table ---------------------------------------------------------------------------

def _graph_with(r, *extra):
    """r's traced graph with nodes (op, inputs, attrs, shape) appended before its output, the
    output reading the last of them."""
    from dataclasses import replace

    from dlrun.engine.graph import Node

    *body, out = r.graph.nodes
    src = r.graph.by_id()[out.inputs[0]]
    nodes, next_id = list(body), r.graph.next_id()
    for op, inputs, attrs, shape in extra:
        nodes.append(Node(next_id, op, inputs, attrs, shape, src.dtype, "test"))
        next_id += 1
    return r.graph.replace([*nodes, replace(out, inputs=(next_id - 1,))])


def test_every_rule_has_a_one_line_docstring_naming_its_identity() -> None:
    from dlrun.engine.passes.simplify import ELEMENTWISE_RULES, RULES
    from dlrun.engine.prims.registry import REGISTRY

    for op, rules in RULES.items():
        assert op in REGISTRY, op  # keyed by primitive name
        for rule in (*rules, *ELEMENTWISE_RULES):
            doc = rule.__doc__ or ""
            assert "->" in doc and "\n" not in doc.strip(), (op, rule.__name__)


def test_ops_without_rules_pass_through_unchanged() -> None:
    x = dlrun.tensor([[1.0, 2.0], [3.0, 4.0]], dtype="float64")
    r = traced(lambda x: (x.exp() @ x).sum(0), x)
    g = _graph_with(r, ("no_such_op", (r.graph.nodes[-2].id,), {}, (2,)))
    out, detail = simplify(g)
    assert [(n.id, n.op, n.inputs) for n in out.nodes] == [(n.id, n.op, n.inputs) for n in g.nodes]
    assert detail == {"rewrites": 0}


def test_constant_on_the_left_is_a_unit_too() -> None:
    x = dlrun.tensor([[1.0, 2.0], [3.0, 4.0]], dtype="float64")
    r = traced(lambda x: 1.0 * (0.0 + x.exp()), x)
    g, detail = simplify(r.graph)
    assert detail == {"rewrites": 2}
    assert [op for op in ops(dce(g)[0]) if op not in ("input", "output")] == ["exp"]
    assert_same_results(r.graph, g, r, (x,))


def test_no_op_movements_and_casts_are_forwarded() -> None:
    x = dlrun.tensor([[1.0, 2.0], [3.0, 4.0]], dtype="float64")
    r = traced(lambda x: x.exp(), x)
    e = r.graph.nodes[-2].id
    n = r.graph.next_id()
    g = _graph_with(r, ("reshape", (e,), {"shape": (2, 2)}, (2, 2)),
                    ("broadcast_to", (n,), {"shape": (2, 2)}, (2, 2)),
                    ("permute", (n + 1,), {"axes": (0, 1)}, (2, 2)),
                    ("cast", (n + 2,), {"dtype": x.dtype}, (2, 2)))
    out, detail = simplify(g)
    assert detail == {"rewrites": 4}
    assert ops(out)[-2:] == ["exp", "output"] and out.nodes[-1].inputs == (e,)


def test_first_matching_rule_wins() -> None:
    # reshape(reshape(x)) to its own shape: forwarded to the inner reshape (no_op comes first),
    # not rewritten to read x
    x = dlrun.tensor([[1.0, 2.0], [3.0, 4.0]], dtype="float64")
    r = traced(lambda x: x.exp().reshape(4), x)
    inner = r.graph.nodes[-2]
    g = _graph_with(r, ("reshape", (inner.id,), {"shape": (4,)}, (4,)))
    out, detail = simplify(g)
    assert detail == {"rewrites": 1}
    assert out.nodes[-1].inputs == (inner.id,) and ops(out).count("reshape") == 1


def test_broadcast_skipping_asks_the_registry_which_ops_are_elementwise() -> None:
    x = dlrun.ones(4, 3, dtype="float64")
    b = dlrun.tensor([1.0, 2.0, 3.0], dtype="float64")
    r = traced(lambda x: dlrun.maximum(x, b.expand(4, 3)), x)
    g = dce(simplify(r.graph)[0])[0]  # maximum has no rules of its own, but is elementwise
    assert "broadcast_to" not in ops(g)
    assert_same_results(r.graph, g, r, (x,))
    r2 = traced(lambda x: b.expand(4, 3) @ x.transpose(0, 1), x)
    assert "broadcast_to" in ops(dce(simplify(r2.graph)[0])[0])  # matmul is not elementwise


def test_new_nodes_take_fresh_ids_before_the_node_they_rewrite() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    a = dlrun.tensor(rng.standard_normal((3, 5)))
    b = dlrun.tensor(rng.standard_normal((4, 5)))
    r = traced(lambda a, b: (a @ b.transpose(0, 1)).transpose(0, 1) * 2.0, a, b)
    g = simplify(r.graph)[0]
    fresh = r.graph.next_id()
    pos = {n.id: k for k, n in enumerate(g.nodes)}
    outer = [n for n in r.graph.nodes if n.op == "permute"][-1]
    mm = g.by_id()[outer.id]  # the rewritten node keeps its id and place
    assert mm.op == "matmul" and pos[mm.id] == [n.id for n in r.graph.nodes].index(mm.id) + 1
    # (a b^T)^T = b a^T: b read directly, one new transpose of a (the first fresh id)
    t = g.by_id()[mm.inputs[1]]
    b_in = next(n.id for n in r.graph.nodes if n.op == "input" and n.attrs["index"] == 1)
    assert mm.inputs[0] == b_in and t.id == fresh and t.op == "permute"
    assert pos[t.id] < pos[mm.id]
    assert_same_results(r.graph, g, r, (a, b))
