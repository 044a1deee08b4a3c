from __future__ import annotations

import numpy as np

import dlrun
from dlrun.engine.passes import dce, fold
from tests.engine.passes.helpers import assert_same_results, traced


def test_folds_constant_subgraphs() -> None:
    def fn(x):
        c = dlrun.tensor([1.0, 2.0], dtype="float64")
        return x * (c.exp() + 1.0)

    x = dlrun.tensor([3.0, 4.0], dtype="float64")
    r = traced(fn, x)
    g = dce(fold(r.graph)[0])[0]
    compute = [n.op for n in g.nodes if n.op not in ("input", "const", "output")]
    assert compute == ["mul"]
    assert_same_results(r.graph, g, r, (x,))


def test_never_folds_state() -> None:
    w = dlrun.tensor([1.0, 2.0], dtype="float64")
    r = traced(lambda x: x * w.exp(), dlrun.ones(2, dtype="float64"))
    g, detail = fold(r.graph)
    assert "exp" in [n.op for n in g.nodes] and detail["folded"] == 0


def test_does_not_materialize_broadcasts() -> None:
    r = traced(lambda x: x + dlrun.tensor(2.0).expand(100, 100), dlrun.ones(100, 100))
    g, detail = fold(r.graph)
    assert all(n.attrs["value"].size == 1 for n in g.nodes if n.op == "const")
    np.testing.assert_equal(detail["folded"], 0)
