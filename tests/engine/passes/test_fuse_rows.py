"""Row fusion: LayerNorm, softmax-style backward groups become fused_rows nodes; the graph after
the pass computes what it did before (interpreted, with and without row kernels); the pass
leaves graphs alone where row kernels do not run."""

from __future__ import annotations

import numpy as np
import pytest

import dlrun
from dlrun import functional as F
from dlrun.engine import passes
from dlrun.engine.passes.fuse_rows import fuse_rows
from dlrun.engine.static import cpu_kernels
from dlrun.engine.static.interpret import interpret

pytest.importorskip("numba")


def _layer_norm_step(x, w, b):
    def step():
        y = F.layer_norm(x, (x.shape[-1],), w, b)
        loss = (F.softmax(y, -1) * y * y).sum()
        loss.backward()
        return loss
    return step


@pytest.fixture()
def tensors():
    rng = np.random.default_rng(0)
    x = dlrun.tensor(rng.standard_normal((3, 5, 20)), requires_grad=True)
    w = dlrun.tensor(rng.standard_normal(20), requires_grad=True)
    b = dlrun.tensor(rng.standard_normal(20), requires_grad=True)
    return x, w, b


def test_layer_norm_forward_and_backward_become_row_groups(tensors) -> None:
    f = dlrun.compile(_layer_norm_step(*tensors))
    f()
    stats = {s.name: s.detail for s in f.traces[0].report.stats}
    assert stats["fuse_rows"]["row_groups"] >= 3
    programs = [n.attrs["program"] for n in f.last.graph.nodes if n.op == "fused_rows"]
    assert any(sum(op == "sum" for op, _, _ in p) == 2 for p in programs)  # the LN backward


def test_the_pass_keeps_the_numbers(tensors) -> None:
    f = dlrun.compile(_layer_norm_step(*tensors), passes=False)
    f()
    entry = f.last
    graph = entry.graph
    state = [t._value for t in entry.result.state]
    before = interpret(graph, np, [], state)
    fused, detail = fuse_rows(graph)
    assert detail["row_groups"] >= 1
    after = interpret(fused.verify(), np, [], state)
    outs = [n for n in graph.nodes if n.op in ("output", "grad_write")]
    for n in outs:
        np.testing.assert_allclose(after[n.id], before[n.id], rtol=1e-12, atol=1e-12)


def test_row_groups_equal_eager_to_the_bit_in_float32() -> None:
    rng = np.random.default_rng(1)
    vals = [rng.standard_normal(s).astype(np.float32) for s in ((4, 7, 37), (37,), (37,))]

    def run(mode):
        x, w, b = (dlrun.tensor(v.copy(), requires_grad=True) for v in vals)
        step = _layer_norm_step(x, w, b)
        loss = (dlrun.compile(step) if mode == "static" else step)()
        return [loss.numpy(), x.grad.numpy(), w.grad.numpy(), b.grad.numpy()]

    for got, want in zip(run("static"), run("eager"), strict=True):
        np.testing.assert_array_equal(got, want)


def test_not_run_without_cpu_kernels(tensors, monkeypatch) -> None:
    monkeypatch.setattr(cpu_kernels, "available", lambda: False)
    f = dlrun.compile(_layer_norm_step(*tensors))
    f()
    assert "fuse_rows" not in {s.name for s in f.traces[0].report.stats}
    assert not any(n.op == "fused_rows" for n in f.last.graph.nodes)
    assert "fuse_rows" in passes.CPU_KERNEL_PASSES


def test_a_member_used_outside_ends_its_group(tensors) -> None:
    x, w, b = tensors

    def step():
        mu = x.mean(-1, keepdim=True)
        centered = x - mu
        return (centered * centered).sum(), centered  # centered leaves: a group output

    f = dlrun.compile(step)
    loss, centered = f()
    np.testing.assert_allclose(centered.numpy(), x.numpy() - x.numpy().mean(-1, keepdims=True),
                               rtol=1e-12)
    np.testing.assert_allclose(loss.numpy(), (centered.numpy() ** 2).sum(), rtol=1e-10)
