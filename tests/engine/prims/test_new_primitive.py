"""A newcomer's op: primitives registered from this test module alone (forward, vjp, facts) run
eager, static fused and unfused, and through the memory plan, with no other file touched."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

import dlrun
from dlrun.engine.prims import REGISTRY, Kind, MissingFact, primitive
from dlrun.engine.prims.strides import view_of
from tests.engine.opcheck import OpSpec, check_gradients


@pytest.fixture(scope="module")
def toys() -> Iterator[tuple]:
    """softsign (elementwise: fusable, in place) and flip_last (a view), removed afterwards."""

    @primitive("toy_softsign", Kind.ELEMENTWISE, cuda_expr="({0} / (1 + abs({0})))")
    def softsign(xp, x, out=None):
        d = xp.abs(x)
        d += 1
        return xp.divide(x, d, out=out)

    @softsign.defvjp
    def _softsign_vjp(g, y, x):
        d = x.abs() + 1.0
        return (g / (d * d),)

    def _flip_rule(x):
        return x.shape, x.dtype

    @primitive("toy_flip_last", Kind.MOVEMENT, _flip_rule, view=True,
               layout=view_of(lambda x: x[..., ::-1]))
    def flip_last(xp, x):
        return x[..., ::-1]

    @flip_last.defvjp
    def _flip_vjp(g, y, x):
        return (flip_last(g),)

    yield softsign, flip_last
    del REGISTRY["toy_softsign"], REGISTRY["toy_flip_last"]


def _ref(x: np.ndarray) -> np.ndarray:
    s = x / (1 + np.abs(x))
    return np.tanh(s * 2.0 + 1.0)[..., ::-1] * 3.0


def _model(toys: tuple, x: dlrun.Tensor) -> dlrun.Tensor:
    softsign, flip_last = toys
    return flip_last((softsign(x) * 2.0 + 1.0).tanh()) * 3.0


def test_toy_gradients_match_finite_differences(toys: tuple) -> None:
    softsign, flip_last = toys
    check_gradients(OpSpec("toy_softsign", softsign, [(3, 4)]))
    check_gradients(OpSpec("toy_flip_last", flip_last, [(2, 5)]))
    check_gradients(OpSpec("toy_model", lambda x: _model(toys, x), [(2, 3)]))


@pytest.mark.parametrize("passes", [True, False, ("dce", "cse", "fold", "memory")],
                         ids=["fused", "unoptimized", "unfused"])
def test_toy_runs_eager_and_static_alike(toys: tuple, passes: bool | tuple) -> None:
    rng = np.random.default_rng(0)
    w = dlrun.tensor(rng.standard_normal((4, 6)), requires_grad=True)

    def step(x: dlrun.Tensor) -> tuple:
        loss = (_model(toys, x @ w) ** 2).sum()
        loss.backward()
        g = w.grad
        w.grad = None
        return loss, g

    x = dlrun.tensor(rng.standard_normal((5, 4)))
    np.testing.assert_allclose(_model(toys, x @ w).numpy(), _ref(x.numpy() @ w.numpy()),
                               rtol=1e-12)
    eager = step(x)
    f = dlrun.compile(step, passes=passes)
    for _ in range(3):  # planned buffers are reused across calls
        static = f(x)
        np.testing.assert_allclose(static[0].numpy(), eager[0].numpy(), rtol=1e-12)
        np.testing.assert_allclose(static[1].numpy(), eager[1].numpy(), rtol=1e-12)
    graph = f.last.graph
    ops = {n.op for n in graph.nodes}
    if passes is True:  # fusable: absorbed into chains with its neighbours
        fused = [n for n in graph.nodes if n.op == "fused"]
        assert any(step[0] == "toy_softsign" for n in fused for step in n.attrs["program"])
    elif passes is not False:
        assert "toy_softsign" in ops and "toy_flip_last" in ops
        mem = f.last.memory
        soft = [n.id for n in graph.nodes if n.op == "toy_softsign"]
        flips = [n.id for n in graph.nodes if n.op == "toy_flip_last"]
        assert all(i in mem.buffers for i in soft)  # a planned buffer: it takes out=
        assert not any(i in mem.buffers for i in flips)  # a view: no buffer of its own


def test_a_missing_fact_is_a_clear_error(toys: tuple) -> None:
    _, flip_last = toys
    assert not flip_last.fusable
    with pytest.raises(MissingFact, match="'toy_flip_last' declares no cuda_expr"):
        flip_last.cuda_code(["in0"], {})
    with pytest.raises(MissingFact, match="'toy_flip_last' declares no onnx"):
        flip_last.fact("onnx", "dlrun export")
