from __future__ import annotations

import dlrun
from dlrun.engine.passes import dce
from tests.engine.passes.helpers import assert_same_results, ops, traced


def test_removes_unused_values_keeps_outputs_and_random_draws() -> None:
    def fn(x):
        _unused = (x * 3.0).exp()
        _mask = dlrun.rand(3)  # impure: kept so the RNG stream matches eager
        return x + 1.0

    x = dlrun.ones(3)
    r = traced(fn, x)
    g, detail = dce(r.graph)
    assert "exp" not in ops(g) and "uniform" in ops(g) and "add" in ops(g)
    assert detail["removed"] == 3  # const 3.0, mul, exp
    assert_same_results(r.graph, g, r, (x,))


def test_keeps_state_writes() -> None:
    w = dlrun.zeros(2)

    def fn(x):
        with dlrun.no_grad():
            w.copy_(x * 2.0)
        return x

    r = traced(fn, dlrun.ones(2))
    g = dce(r.graph)[0]
    assert "mul" in ops(g) and "state_write" in ops(g)
