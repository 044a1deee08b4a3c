from __future__ import annotations

import numpy as np

import dlrun
from dlrun import functional as F
from dlrun.engine.passes import run
from dlrun.engine.prims import REGISTRY
from dlrun.engine.static.memory import plan_memory


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
    mem = f.last.memory.stats
    assert 0 < mem["buffers"] < mem["planned_values"]
    assert mem["planned_bytes"] < mem["unplanned_bytes"]
    sinks = {n.inputs[0] for n in g.nodes if n.op in ("output", "state_write", "grad_write")}
    assert not sinks & set(f.last.memory.buffers)


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
    g, _ = run(r.graph, ("dce", "cse", "fold"))
    buffers = plan_memory(g).buffers
    first = {}
    for n in g.nodes:
        first.setdefault(n.op, n.id)
    assert buffers[first["matmul"]] == buffers[first["mul"]] == buffers[first["exp"]]
    assert {op for op, p in REGISTRY.items() if p.view} >= {"reshape", "permute"}


def _rnn_like(x, w, h):
    """Per-step values gathered by stack (concat) and their slice gradients (assemble_slices)."""
    hs = []
    for t in range(x.shape[0]):
        h = F.tanh(x[t] + h @ w)
        hs.append(h)
    return F.stack(hs, 0)


def test_parts_are_computed_into_their_container_and_results_match_eager() -> None:
    rng = np.random.default_rng(1)
    x = dlrun.tensor(rng.standard_normal((6, 3, 4)))
    scale = dlrun.tensor(rng.standard_normal(4), requires_grad=True)
    w = dlrun.tensor(rng.standard_normal((4, 4)) * 0.5, requires_grad=True)
    h0 = dlrun.tensor(rng.standard_normal((3, 4)))

    def step(x):
        out = _rnn_like(x * scale, w, h0)  # the slices' gradients are assembled internally
        (out * out).sum().backward()
        return out.sum() * 1.0, scale.grad * 1.0, w.grad * 1.0

    eager = [t.numpy().copy() for t in step(x)]
    f = dlrun.compile(step)
    for _ in range(2):  # the second call reuses the buffers the parts were written into
        scale.grad = w.grad = None
        got = [t.numpy() for t in f(x)]
        for a, b in zip(got, eager, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12)
    g = f.last.graph
    placed = f.last.memory.placed
    containers = {c for c, _, _ in placed.values()}
    by_id = g.by_id()
    assert {by_id[c].op for c in containers} == {"concat", "assemble_slices"}
    # the weight gradient's per-step sum reads the assembled gradients (matmul_sum): no concat
    assert sum(n.op == "concat" for n in g.nodes) == 2  # the stacked outputs, the h's
    # a fully placed container is not computed: its line just names the buffer
    source = f.last.plan.source
    for c in containers:
        assert f"v{c} = f{c}(" not in source
    assert f.last.memory.stats["written_into_place"] == len(placed)


def test_an_escaping_container_is_not_placed() -> None:
    from tests.engine.passes.helpers import traced

    def fn(a, b):
        return F.cat([a.exp(), b.exp()], 0)  # the concat is the result: never a planned buffer

    r = traced(fn, dlrun.ones(2, 3, dtype="float64"), dlrun.ones(2, 3, dtype="float64"))
    g, _ = run(r.graph, ("dce",))
    assert plan_memory(g).placed == {}


def test_a_part_used_after_its_container_keeps_the_buffer_alive() -> None:
    def fn(a, b):
        p, q = a.exp(), b.exp()
        joined = F.cat([p, q], 0) * 2.0
        late = (joined.sum() * p).exp()  # p read after the concat's last use, buffers reused
        return (late * 3.0).sum() + q.sum()

    rng = np.random.default_rng(2)
    a = dlrun.tensor(rng.standard_normal((3, 5)))
    b = dlrun.tensor(rng.standard_normal((2, 5)))
    want = fn(a, b).item()
    f = dlrun.compile(fn)
    assert f(a, b).item() == want and f(a, b).item() == want
    assert len(f.last.memory.placed) == 2
