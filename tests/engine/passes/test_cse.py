from __future__ import annotations

import dlrun
from dlrun.engine.passes import cse
from tests.engine.passes.helpers import assert_same_results, ops, traced


def test_merges_identical_pure_nodes_and_constants() -> None:
    def fn(x):
        return (x.exp() * 2.0) + (x.exp() * 2.0)

    x = dlrun.tensor([0.5, 1.0], dtype="float64")
    r = traced(fn, x)
    g = cse(r.graph)[0]
    assert ops(r.graph).count("exp") == 2 and ops(g).count("exp") == 1
    assert ops(g).count("const") == 1 and ops(g).count("mul") == 1
    assert_same_results(r.graph, g, r, (x,))


def test_never_merges_random_draws() -> None:
    r = traced(lambda x: x + dlrun.rand(2) + dlrun.rand(2), dlrun.ones(2))
    assert ops(cse(r.graph)[0]).count("uniform") == 2
