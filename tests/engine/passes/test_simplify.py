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
    g = dce(simplify(r.graph))
    assert [op for op in ops(g) if op not in ("input", "output")] == []
    assert_same_results(r.graph, g, r, (x,))


def test_keeps_broadcasting_multiplications() -> None:
    x = dlrun.ones(3, dtype="float64")
    r = traced(lambda x: x * dlrun.ones(2, 3, dtype="float64"), x)
    g = dce(simplify(r.graph))
    assert "mul" in ops(g)  # x*1 here changes the shape, so it must stay
    assert_same_results(r.graph, g, r, (x,))


def test_composes_reshapes_and_permutes() -> None:
    x = dlrun.tensor(dlrun.arange(24).numpy().reshape(2, 3, 4), dtype="float64")
    r = traced(lambda x: x.reshape(6, 4).reshape(4, 6).permute(1, 0).permute(1, 0) * 2.0, x)
    g = dce(simplify(r.graph))
    assert ops(g).count("reshape") == 1 and ops(g).count("permute") == 0
    assert_same_results(r.graph, g, r, (x,))


def test_elementwise_reads_through_broadcast_to() -> None:
    x = dlrun.ones(4, 3, dtype="float64")
    r = traced(lambda x: x * dlrun.tensor([1.0, 2.0, 3.0], dtype="float64").expand(4, 3), x)
    g = dce(simplify(r.graph))
    assert "broadcast_to" not in ops(g)
    assert_same_results(r.graph, g, r, (x,))


def test_transpose_of_a_product_is_the_product_of_transposes() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    a = dlrun.tensor(rng.standard_normal((5, 3)))
    b = dlrun.tensor(rng.standard_normal((5, 4)))
    r = traced(lambda a, b: (a.transpose(0, 1) @ b).transpose(0, 1) * 2.0, a, b)
    g = dce(simplify(r.graph))
    # (a^T b)^T = b^T a: one transpose of b feeding the matmul, no transpose after it
    assert ops(g).count("permute") == 1 and ops(g).count("matmul") == 1
    mm = next(n for n in g.nodes if n.op == "matmul")
    assert mm.shape == (4, 3)
    assert_same_results(r.graph, g, r, (a, b))


def test_doubled_constant_product_folds_into_one_multiply() -> None:
    import numpy as np

    x = dlrun.tensor(np.arange(4.0))
    r = traced(lambda x: (lambda t: t + t)(x * 3.0), x)
    g = dce(simplify(r.graph))
    assert ops(g).count("mul") == 1 and "add" not in ops(g)
    assert_same_results(r.graph, g, r, (x,))


def test_permuted_take_picks_rows_by_a_permuted_index() -> None:
    import numpy as np

    w = dlrun.tensor(np.random.default_rng(0).standard_normal((7, 3)))
    idx = dlrun.tensor(np.random.default_rng(1).integers(0, 7, (4, 5)))
    r = traced(lambda i: dlrun.functional.embedding(i, w).permute(1, 0, 2) * 2.0, idx)
    g = dce(simplify(r.graph))
    by_id = g.by_id()
    take = next(n for n in g.nodes if n.op == "take")
    assert take.shape == (5, 4, 3) and by_id[take.inputs[1]].op == "permute"
    assert_same_results(r.graph, g, r, (idx,))
    # a permutation that moves the row dim is left alone
    r2 = traced(lambda i: dlrun.functional.embedding(i, w).permute(2, 0, 1) * 2.0, idx)
    g2 = dce(simplify(r2.graph))
    assert next(n for n in g2.nodes if n.op == "take").shape == (4, 5, 3)
