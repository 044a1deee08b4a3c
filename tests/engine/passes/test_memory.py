from __future__ import annotations

import numpy as np

import dlrun
from dlrun import functional as F
from dlrun.engine.passes import memory, run


def _mlp_step():
    rng = np.random.default_rng(0)
    w1 = dlrun.tensor(rng.standard_normal((16, 8)), requires_grad=True)
    w2 = dlrun.tensor(rng.standard_normal((4, 16)), requires_grad=True)

    def step(x, y):
        loss = F.cross_entropy(F.linear(F.relu(F.linear(x, w1)), w2), y)
        loss.backward()
        with dlrun.no_grad():
            for p in (w1, w2):
                p.sub_(p.grad * 0.1)
                p.grad = None
        return loss, F.relu(F.linear(x, w1))

    x = dlrun.tensor(rng.standard_normal((32, 8)))
    y = dlrun.tensor(rng.integers(0, 4, 32))
    return step, x, y, (w1, w2)


def test_buffers_are_reused_and_escaping_values_are_not_planned() -> None:
    step, x, y, _ = _mlp_step()
    f = dlrun.compile(step)
    f(x, y)
    g = f.last.graph
    mem = g.meta["memory"]
    assert 0 < mem["buffers"] < mem["planned_values"]
    assert mem["planned_bytes"] < mem["unplanned_bytes"]
    sinks = {n.inputs[0] for n in g.nodes if n.op in ("output", "state_write", "grad_write")}
    assert not sinks & set(g.meta["buffers"])


def test_results_survive_the_next_call() -> None:
    step, x, y, _ = _mlp_step()
    f = dlrun.compile(step)
    loss1, h1 = f(x, y)
    kept = h1.numpy().copy()
    f(x * 2.0, y)
    np.testing.assert_array_equal(h1.numpy(), kept)  # not overwritten by the reused buffers


def test_planned_and_unplanned_runs_agree_over_steps() -> None:
    results = {}
    for which in (True, tuple(n for n in ("dce", "cse", "fold", "simplify", "fuse"))):
        step, x, y, params = _mlp_step()
        f = dlrun.compile(step, passes=which)
        results[which is True] = [f(x, y)[0].item() for _ in range(5)] + [
            p.numpy().copy() for p in params]
    a, b = results[True], results[False]
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-12)


def test_in_place_elementwise_reuses_its_input_buffer() -> None:
    from tests.engine.passes.helpers import traced

    r = traced(lambda x: ((x @ x) * 2.0).exp() @ x, dlrun.ones(4, 4, dtype="float64"))
    g, _ = run(r.graph, ("dce", "cse", "fold", "memory"))
    buffers = g.meta["buffers"]
    first = {}
    for n in g.nodes:
        first.setdefault(n.op, n.id)
    assert buffers[first["matmul"]] == buffers[first["mul"]] == buffers[first["exp"]]
    assert memory.VIEW_OPS >= {"reshape", "permute"}
