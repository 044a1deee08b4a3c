"""Hoisting an unrolled RNN's per-step input projections (and their input gradients) into one
GEMM each: fewer products, the same numbers, reported by the pass."""

from __future__ import annotations

import numpy as np
import pytest

import dlrun
from dlrun import functional as F
from dlrun import nn
from dlrun.engine import passes


def _model(kind: str) -> tuple[nn.Module, nn.Module]:
    dlrun.manual_seed(0)
    rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[kind](8, 16)
    rnn.projection = "step"  # one input GEMM per time step, as user loops write it
    return rnn, nn.Linear(8, 8)


def _compiled(kind: str, which) -> tuple[dict, int, list[np.ndarray]]:
    rnn, lin = _model(kind)
    x = dlrun.tensor(np.random.default_rng(0).standard_normal((12, 4, 8)))

    def step():
        out, _ = rnn(F.tanh(lin(x)))
        loss = (out * out).sum()
        loss.backward()
        return loss

    f = dlrun.compile(step, passes=which)
    loss = f()
    detail = {s.name: s.detail for s in f.traces[0].report.stats}.get("hoist", {})
    matmuls = sum(n.op == "matmul" for n in f.last.graph.nodes)
    grads = [loss.numpy()] + [p.grad.numpy() for p in [*rnn.parameters(), *lin.parameters()]]
    return detail, matmuls, grads


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_step_projections_become_one_gemm_forward_and_backward(kind: str) -> None:
    without = tuple(n for n in passes.PASS_NAMES if n != "hoist") + ("memory",)
    detail, matmuls, grads = _compiled(kind, True)
    _, matmuls_before, want = _compiled(kind, without)
    assert detail == {"hoisted_gemms": 1, "hoisted_grad_gemms": 1}
    assert matmuls <= matmuls_before - 2 * (12 - 1)
    for got, expected in zip(grads, want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_short_loops_are_left_alone() -> None:
    rnn, lin = _model("lstm")
    x = dlrun.tensor(np.ones((2, 3, 8)))
    f = dlrun.compile(lambda: rnn(lin(x))[0].sum())
    f()
    assert {s.name: s.detail for s in f.traces[0].report.stats}["hoist"] == {
        "hoisted_gemms": 0, "hoisted_grad_gemms": 0}
