"""dlrun.compile behaviour: caching, retracing, state, side effects, errors, training."""

from __future__ import annotations

import logging
import weakref

import numpy as np
import pytest

import dlrun
from dlrun import functional as F
from dlrun.errors import ExecutionError, TraceError


def _mlp_params(rng: np.random.Generator, sizes: list[int], dtype=np.float32) -> list[dlrun.Tensor]:
    params = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        params.append(dlrun.tensor(rng.standard_normal((b, a)) / np.sqrt(a), dtype=dtype,
                                   requires_grad=True))
        params.append(dlrun.tensor(np.zeros(b), dtype=dtype, requires_grad=True))
    return params


def _mlp(x, params, p_drop=0.0):
    h = x
    for k in range(0, len(params), 2):
        h = F.linear(h, params[k], params[k + 1])
        if k + 2 < len(params):
            h = F.dropout(F.relu(h), p_drop, training=p_drop > 0)
    return h


def _sgd_step_fn(params, loss_fn, lr=0.05):
    def step(x, y):
        loss = loss_fn(x, y)
        loss.backward()
        with dlrun.no_grad():
            for p in params:
                p.sub_(p.grad * lr)
                p.grad = None
        return loss

    return step


def test_body_runs_once_then_the_plan_replays() -> None:
    calls = []
    w = dlrun.tensor([[1.0, 2.0]])

    @dlrun.compile
    def f(x):
        calls.append(1)
        return (x * w).sum(1)

    x = dlrun.tensor([[1.0, 1.0], [2.0, 0.0]])
    for _ in range(5):
        out = f(x)
    assert len(calls) == 1 and f.trace_count == 1
    np.testing.assert_allclose(out.numpy(), [3.0, 2.0])


def test_new_shape_retraces_and_old_shape_is_reused(caplog) -> None:
    f = dlrun.compile(lambda x: x * 2.0)
    a, b = dlrun.ones(4, 3), dlrun.ones(2, 3)
    with caplog.at_level(logging.INFO, logger="dlrun.compile"):
        f(a)
        f(b)
        f(a)
        f(b)
    assert f.trace_count == 2
    assert f.traces[1].reason == "argument 0: shape (4, 3) -> (2, 3)"
    assert "retrace #2: argument 0: shape (4, 3) -> (2, 3)" in caplog.text


def test_dtype_change_is_a_reason() -> None:
    f = dlrun.compile(lambda x: x + 1.0)
    f(dlrun.ones(2))
    f(dlrun.ones(2, dtype="float64"))
    assert "dtype" in f.traces[1].reason and "float64" in f.traces[1].reason


def test_trace_cap_error_and_eager_fallback() -> None:
    f = dlrun.compile(lambda x: x * 2.0, max_traces=2)
    f(dlrun.ones(1))
    f(dlrun.ones(2))
    with pytest.raises(TraceError, match="max_traces=2.*shape \\(2,\\) -> \\(3,\\)"):
        f(dlrun.ones(3))
    g = dlrun.compile(lambda x: x * 2.0, max_traces=1, fallback="eager")
    g(dlrun.ones(1))
    out = g(dlrun.ones(5))
    assert g.fallbacks == 1 and out.shape == (5,)


def test_state_is_read_live_not_frozen() -> None:
    w = dlrun.tensor([1.0, 2.0])
    f = dlrun.compile(lambda x: x * w)
    x = dlrun.ones(2)
    np.testing.assert_allclose(f(x).numpy(), [1.0, 2.0])
    with dlrun.no_grad():
        w.copy_(dlrun.tensor([10.0, 20.0]))
    np.testing.assert_allclose(f(x).numpy(), [10.0, 20.0])
    assert f.trace_count == 1


def test_state_writes_are_applied_every_call() -> None:
    counter = dlrun.zeros(())

    @dlrun.compile
    def tick(x):
        with dlrun.no_grad():
            counter.add_(x)
        return counter * 1.0

    for _ in range(3):
        out = tick(dlrun.tensor(2.0))
    assert counter.item() == 6.0 and out.item() == 6.0


def test_returns_structures_and_input_grads() -> None:
    def fn(x, w):
        loss = (x @ w).tanh().sum()
        loss.backward()
        return {"loss": loss, "grads": (x.grad, w.grad)}

    rng = np.random.default_rng(0)
    xs, ws = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    compiled = dlrun.compile(fn)
    out = compiled(dlrun.tensor(xs, requires_grad=True), dlrun.tensor(ws, requires_grad=True))
    x, w = dlrun.tensor(xs, requires_grad=True), dlrun.tensor(ws, requires_grad=True)
    (x @ w).tanh().sum().backward()
    np.testing.assert_allclose(out["grads"][0].numpy(), x.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(out["grads"][1].numpy(), w.grad.numpy(), rtol=1e-12)


def test_parameter_grads_accumulate_like_eager() -> None:
    w = dlrun.tensor([1.0, -1.0], requires_grad=True)

    @dlrun.compile
    def fn(x):
        (x * w).sum().backward()

    fn(dlrun.tensor([2.0, 3.0]))
    fn(dlrun.tensor([2.0, 3.0]))
    np.testing.assert_allclose(w.grad.numpy(), [4.0, 6.0])


def test_data_dependent_branch_is_a_clear_error() -> None:
    def fn(x):
        if x.sum() > 0:  # data-dependent: cannot be traced
            return x
        return -x

    with pytest.raises(TraceError) as info:
        dlrun.compile(fn)(dlrun.ones(3))
    msg = str(info.value)
    assert "bool()" in msg and "test_compile.py:" in msg and "dlrun.where" in msg


def test_item_inside_compiled_function_is_a_clear_error() -> None:
    with pytest.raises(TraceError, match=r"Tensor.item\(\).*test_compile.py"):
        dlrun.compile(lambda x: x * x.sum().item())(dlrun.ones(3))


def test_execution_error_names_node_op_and_source_line() -> None:
    table = dlrun.tensor(np.arange(10.0).reshape(5, 2))
    f = dlrun.compile(lambda idx: table[idx] * 2.0)
    f(dlrun.tensor([0, 4]))
    with pytest.raises(ExecutionError, match=r"%\d+ = take\(.*test_compile.py:\d+.*IndexError"):
        f(dlrun.tensor([0, 7]))


def test_shape_errors_while_tracing_name_the_line() -> None:
    with pytest.raises(TraceError, match=r"matmul at .*test_compile.py:\d+"):
        dlrun.compile(lambda a, b: a @ b)(dlrun.ones(2, 3), dlrun.ones(4, 5))


def test_python_loop_over_fixed_length_unrolls() -> None:
    w = dlrun.tensor(np.full((3, 3), 0.1), requires_grad=True)

    def rnn(xs):
        h = dlrun.zeros(2, 3)
        for t in range(xs.shape[1]):
            h = (xs[:, t] + h @ w).tanh()
        return h.sum()

    xs = dlrun.tensor(np.random.default_rng(0).standard_normal((2, 5, 3)))
    f = dlrun.compile(rnn)
    np.testing.assert_allclose(f(xs).numpy(), rnn(xs).numpy(), rtol=1e-6)
    assert sum(1 for n in f.last.graph.nodes if n.op == "matmul") == 5


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_mlp_training_trajectories_match_eager(dropout: float) -> None:
    rng = np.random.default_rng(0)
    x = dlrun.tensor(rng.standard_normal((32, 10)), dtype="float32")
    y = dlrun.tensor(rng.integers(0, 3, 32))
    losses = {}
    for mode in ("eager", "static"):
        params = _mlp_params(np.random.default_rng(1), [10, 16, 3])
        step = _sgd_step_fn(
            params, lambda a, b, params=params: F.cross_entropy(_mlp(a, params, dropout), b))
        if mode == "static":
            step = dlrun.compile(step)
        dlrun.manual_seed(5)
        losses[mode] = np.array([step(x, y).item() for _ in range(50)])
    np.testing.assert_allclose(losses["static"], losses["eager"], rtol=1e-5)
    assert losses["eager"][-1] < 0.8 * losses["eager"][0]


def test_linear_regression_trajectories_match_eager() -> None:
    rng = np.random.default_rng(0)
    true_w = rng.standard_normal((5, 1))
    xs = rng.standard_normal((64, 5))
    x = dlrun.tensor(xs, dtype="float32")
    y = dlrun.tensor(xs @ true_w + 0.01 * rng.standard_normal((64, 1)), dtype="float32")
    losses = {}
    for mode in ("eager", "static"):
        w = dlrun.zeros(5, 1, requires_grad=True)
        b = dlrun.zeros(1, requires_grad=True)
        step = _sgd_step_fn([w, b], lambda a, t, w=w, b=b: F.mse_loss(a @ w + b, t), lr=0.1)
        if mode == "static":
            step = dlrun.compile(step)
        losses[mode] = np.array([step(x, y).item() for _ in range(50)])
    np.testing.assert_allclose(losses["static"], losses["eager"], rtol=1e-5)
    assert losses["static"][-1] < 1e-3 * losses["static"][0]


def test_graph_prints_and_exports_dot() -> None:
    w = dlrun.ones(3, requires_grad=True)
    f = dlrun.compile(lambda x: (x * w).sum())
    f(dlrun.ones(3))
    text = str(f.last.graph)
    assert "= input(index=0)" in text and "= state(slot=0)" in text and "= output(" in text
    dot = f.last.graph.to_dot()
    assert dot.startswith("digraph") and "->" in dot


def test_in_place_parameter_updates_do_not_leak_into_shared_arrays() -> None:
    w = dlrun.tensor([1.0, 2.0], requires_grad=True)
    twin = dlrun.tensor([0.0, 0.0])
    with dlrun.no_grad():
        twin.copy_(w)  # eager copy_ may share the array
    held = w.numpy()

    @dlrun.compile
    def step():
        (w * w).sum().backward()
        with dlrun.no_grad():
            w.sub_(w.grad * 0.25)
            w.grad = None

    step()
    step()
    assert step.last.plan.inplace_slots  # the update is written in place
    np.testing.assert_allclose(w.numpy(), [0.25, 0.5])
    np.testing.assert_allclose(twin.numpy(), [1.0, 2.0])
    np.testing.assert_allclose(held, [1.0, 2.0])


def test_parameters_are_updated_in_their_own_arrays_step_after_step() -> None:
    rng = np.random.default_rng(0)
    params = _mlp_params(rng, [6, 8, 3])
    step = dlrun.compile(_sgd_step_fn(params, lambda a, b: F.cross_entropy(_mlp(a, params), b)))
    x = dlrun.tensor(rng.standard_normal((5, 6)), dtype="float32")
    y = dlrun.tensor(rng.integers(0, 3, 5))
    step(x, y)
    refs = [weakref.ref(p._value) for p in params]  # weak: holding the arrays forces copies
    before = [p.numpy().copy() for p in params]
    for _ in range(3):
        step(x, y)
    assert all(p._value is r() for p, r in zip(params, refs, strict=True))  # no copies
    assert all(not np.array_equal(p.numpy(), b) for p, b in zip(params, before, strict=True))


def test_a_failing_plan_can_run_again() -> None:
    table = dlrun.tensor(np.arange(10.0).reshape(5, 2))
    f = dlrun.compile(lambda idx: table[idx] * 2.0)
    with pytest.raises(ExecutionError):
        f(dlrun.tensor([9]))
    np.testing.assert_allclose(f(dlrun.tensor([1])).numpy(), [[4.0, 6.0]])


def test_a_compiled_function_called_inside_another_is_inlined() -> None:
    inner = dlrun.compile(lambda x: x.tanh() * 2.0)
    outer = dlrun.compile(lambda x: inner(x) + 1.0)
    x = dlrun.tensor([0.5, -1.0])
    np.testing.assert_allclose(outer(x).numpy(), np.tanh([0.5, -1.0]) * 2 + 1, rtol=1e-6)
    assert outer.trace_count == 1 and inner.trace_count == 0
    assert "tanh" in str(outer.last.graph)


def test_keyword_and_python_arguments_join_the_signature() -> None:
    f = dlrun.compile(lambda x, *, scale: x * scale)
    x = dlrun.ones(2)
    assert f(x, scale=2.0).numpy().tolist() == [2.0, 2.0]
    assert f(x, scale=3.0).numpy().tolist() == [3.0, 3.0]
    assert f(x, scale=2.0).numpy().tolist() == [2.0, 2.0]
    assert f.trace_count == 2 and "2.0 -> 3.0" in f.traces[1].reason


def test_views_in_plans_match_their_primitives() -> None:
    x = dlrun.tensor(np.arange(24.0).reshape(2, 3, 4))
    f = dlrun.compile(lambda x: (x.reshape(6, 4).permute(1, 0)[1:, ::2] * 1.5).sum(0))
    np.testing.assert_array_equal(f(x).numpy(), (x.reshape(6, 4).permute(1, 0)[1:, ::2]
                                                 * 1.5).sum(0).numpy())
    plan = f.last.plan
    assert {n.op for n in plan.line_nodes.values()} >= {"reshape", "permute", "getitem"}
    assert ".transpose" not in plan.source  # no op's math written as plan text


def test_a_reshape_of_a_transpose_copies_into_a_planned_buffer() -> None:
    x = dlrun.tensor(np.arange(24.0).reshape(2, 3, 4))
    for axes, copies in (((2, 1, 0), True), ((2, 0, 1), False)):  # (2, 0, 1): (2, 3) merge
        f = dlrun.compile(lambda x, axes=axes: x.permute(*axes).reshape(4, 6) * 2.0 + 1.0)
        for _ in range(2):
            np.testing.assert_array_equal(
                f(x).numpy(), x.numpy().transpose(axes).reshape(4, 6) * 2.0 + 1.0)
        g = f.last.graph
        reshape = next(n for n in g.nodes if n.op == "reshape")
        assert (reshape.id in f.last.memory.buffers) is copies
