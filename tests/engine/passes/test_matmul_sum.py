from __future__ import annotations

import numpy as np

import dlrun
from dlrun.engine.passes import dce, matmul_sum
from tests.engine.passes.helpers import assert_same_results, ops, traced


def _bptt_like(w, hs, gs):
    """sum_t (h_t^T @ g_t)^T: a weight gradient accumulated over time steps."""
    total = None
    for h, g in zip(hs, gs, strict=True):
        term = (h.transpose(0, 1) @ g).transpose(0, 1)
        total = term if total is None else total + term
    return total + w


def test_sum_of_transposed_products_becomes_one_matmul() -> None:
    rng = np.random.default_rng(0)
    hs = [dlrun.tensor(rng.standard_normal((4, 3))) for _ in range(5)]
    gs = [dlrun.tensor(rng.standard_normal((4, 6))) for _ in range(5)]
    w = dlrun.tensor(rng.standard_normal((6, 3)))
    args = (w, *hs, *gs)
    r = traced(lambda w, *xs: _bptt_like(w, xs[:5], xs[5:]), *args)
    rewritten, detail = matmul_sum(r.graph)
    g = dce(rewritten)[0]
    assert ops(r.graph).count("matmul") == 5 and ops(g).count("matmul") == 1
    assert ops(g).count("concat") == 2 and ops(g).count("add") == 1  # + w
    assert detail["rewritten"] == 1
    assert_same_results(r.graph, g, r, args)


def test_too_few_terms_are_left_alone() -> None:
    rng = np.random.default_rng(1)
    a, b = dlrun.tensor(rng.standard_normal((4, 3))), dlrun.tensor(rng.standard_normal((4, 2)))
    r = traced(lambda a, b: a.transpose(0, 1) @ b + a.transpose(0, 1) @ (b * 2.0), a, b)
    g, detail = matmul_sum(r.graph)
    assert detail["rewritten"] == 0 and ops(g) == ops(r.graph)


def test_per_step_column_sums_become_one_reduction_sharing_the_products_rows() -> None:
    from dlrun.engine.passes import cse

    rng = np.random.default_rng(2)
    hs = [dlrun.tensor(rng.standard_normal((4, 3))) for _ in range(5)]
    gs = [dlrun.tensor(rng.standard_normal((4, 6))) for _ in range(5)]
    b = dlrun.tensor(rng.standard_normal(6))

    def fn(b, *xs):
        weight = _bptt_like(dlrun.zeros(6, 3, dtype="float64"), xs[:5], xs[5:])
        bias = None
        for g in xs[5:]:  # a bias used at every step: its gradient sums each step's columns
            s = g.sum(0)
            bias = s if bias is None else bias + s
        return weight, bias + b

    args = (b, *hs, *gs)
    r = traced(fn, *args)
    merged, detail = cse(matmul_sum(r.graph)[0])
    g = dce(merged)[0]
    assert ops(r.graph).count("sum") == 5 and ops(g).count("sum") == 1
    assert ops(g).count("concat") == 2  # the g's rows shared by the product and the sum
    assert detail["merged"] >= 1
    assert_same_results(r.graph, g, r, args)


def _five_step_graph():
    rng = np.random.default_rng(3)
    hs = [dlrun.tensor(rng.standard_normal((4, 3))) for _ in range(5)]
    gs = [dlrun.tensor(rng.standard_normal((4, 6))) for _ in range(5)]
    w = dlrun.tensor(rng.standard_normal((6, 3)))
    args = (w, *hs, *gs)
    return traced(lambda w, *xs: _bptt_like(w, xs[:5], xs[5:]), *args), args


def test_an_add_tree_has_one_root_and_its_terms_as_leaves() -> None:
    from dlrun.engine.passes.matmul_sum import _collect_leaves, _Scan, _tree_roots

    r, _ = _five_step_graph()
    g = r.graph
    scan = _Scan(g.by_id(), g.users(), {n.id: k for k, n in enumerate(g.nodes)}, g.next_id())
    roots = list(_tree_roots(g, scan))
    final = g.by_id()[g.nodes[-1].inputs[0]]  # (sum of the 5 products) + w
    assert [n.id for n in roots] == [final.id]
    leaves = _collect_leaves(final, scan)
    assert len(leaves) == 6 and [g.by_id()[i].op for i in leaves].count("permute") == 5


def test_the_rewrite_keeps_the_roots_id_and_place_and_takes_fresh_ids() -> None:
    r, args = _five_step_graph()
    g, detail = matmul_sum(r.graph)
    root = r.graph.nodes[-2]  # the last add, read by the output
    fresh = r.graph.next_id()
    old_ids = {n.id for n in r.graph.nodes}
    new = [n for n in g.nodes if n.id not in old_ids]
    assert new and [n.id for n in new] == list(range(fresh, fresh + len(new)))
    assert g.nodes[g.nodes.index(g.by_id()[root.id]) + 1].op == "output"
    assert detail == {"rewritten": 1}
    assert_same_results(r.graph, g, r, args)
