"""What a compiled function's signature guards: a captured tensor's `.grad` None-ness only when
the traced body reads that gradient before it sets it (grads.GradTracker)."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

import dlrun
from dlrun import functional as F
from dlrun import nn, optim
from dlrun.engine import mode as engine_mode
from dlrun.engine.eager import EAGER, EagerMode
from dlrun.engine.static.trace import TraceMode

OPTIMIZERS = {
    "sgd_momentum": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
    "adam": lambda ps: optim.Adam(ps, lr=0.01),
}
MODELS = {
    "linear": lambda: nn.Linear(4, 2),
    "mlp": lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)),
}


def _data(calls: int) -> list[tuple[dlrun.Tensor, dlrun.Tensor]]:
    rng = np.random.default_rng(0)
    return [(dlrun.tensor(rng.standard_normal((6, 4))), dlrun.tensor(rng.standard_normal((6, 2))))
            for _ in range(calls)]


def _setup(model: str, opt: str):
    dlrun.manual_seed(0)
    m = MODELS[model]().double()
    return m, OPTIMIZERS[opt](list(m.parameters()))


def _train_step(model, opt, order: str):
    def step(x, y):
        if order == "zero_grad_first":
            opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        if order == "zero_grad_last":
            opt.zero_grad()
        return loss

    return step


@pytest.mark.parametrize("order", ["zero_grad_first", "zero_grad_last"])
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("model", list(MODELS))
def test_a_training_step_traces_once_in_either_loop_order(order: str, opt: str,
                                                          model: str) -> None:
    data = _data(5)
    runs = {}
    for mode in ("eager", "static"):
        m, o = _setup(model, opt)
        step = _train_step(m, o, order)
        if mode == "static":
            step = dlrun.compile(step)
        losses = [step(x, y).item() for x, y in data]
        runs[mode] = (losses, [p.numpy().copy() for p in m.parameters()],
                      [None if p.grad is None else p.grad.numpy() for p in m.parameters()], step)
    compiled = runs["static"][3]
    assert compiled.trace_count == 1, [t.reason for t in compiled.traces]
    np.testing.assert_allclose(runs["static"][0], runs["eager"][0], rtol=1e-12)
    for a, b in zip(runs["static"][1], runs["eager"][1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    for a, b in zip(runs["static"][2], runs["eager"][2], strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def _accumulate_step(model):
    def step(x, y):
        loss = F.mse_loss(model(x), y)
        loss.backward()  # no zero_grad: gradients accumulate over calls
        return loss

    return step


def _grads(model) -> list[np.ndarray]:
    return [p.grad.numpy().copy() for p in model.parameters()]


@pytest.mark.parametrize("warm", [False, True], ids=["grads_none_first", "grads_present"])
def test_gradient_accumulation_matches_eager(warm: bool) -> None:
    data = _data(4)
    runs = {}
    for mode in ("eager", "static"):
        m, _ = _setup("mlp", "adam")
        if warm:  # an eager backward first: the compiled calls start with gradients present
            F.mse_loss(m(data[0][0]), data[0][1]).backward()
        step = _accumulate_step(m)
        if mode == "static":
            step = dlrun.compile(step)
        runs[mode] = ([(step(x, y).item(), _grads(m)) for x, y in data], step)
    for (la, ga), (lb, gb) in zip(runs["static"][0], runs["eager"][0], strict=True):
        np.testing.assert_allclose(la, lb, rtol=1e-12)
        for a, b in zip(ga, gb, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    compiled = runs["static"][1]
    if warm:
        assert compiled.trace_count == 1
    else:  # backward() starts a gradient on the first call, adds to it later: two programs
        assert compiled.trace_count == 2
        reason = compiled.traces[1].reason
        assert ".grad" in reason and "None -> a tensor" in reason, reason


def test_a_gradient_the_body_reads_is_guarded_one_it_sets_first_is_not() -> None:
    w = dlrun.tensor([1.0, 2.0], dtype="float64", requires_grad=True)
    v = dlrun.tensor([3.0, 4.0], dtype="float64", requires_grad=True)

    def fn(x):
        v.grad = None  # set first: v's gradient at call time does not matter
        (x * v).sum().backward()
        seen = v.grad * 1.0  # the body's own gradient, not a read from the caller
        return seen + (w.grad if w.grad is not None else 0.0)

    f = dlrun.compile(fn)
    x = dlrun.tensor([1.0, 1.0], dtype="float64")
    np.testing.assert_allclose(f(x).numpy(), [1.0, 1.0])
    v.grad = dlrun.tensor([9.0, 9.0], dtype="float64")
    np.testing.assert_allclose(f(x).numpy(), [1.0, 1.0])
    assert f.trace_count == 1
    w.grad = dlrun.tensor([10.0, 20.0], dtype="float64")  # w's None-ness is read: retrace
    np.testing.assert_allclose(f(x).numpy(), [11.0, 21.0])
    w.grad = dlrun.tensor([5.0, 6.0], dtype="float64")  # read live: same plan, new values
    np.testing.assert_allclose(f(x).numpy(), [6.0, 7.0])
    assert f.trace_count == 2 and "shape (2,)" in f.traces[1].reason


def test_a_gradient_only_read_is_left_as_the_caller_set_it() -> None:
    w = dlrun.tensor([1.0, 2.0], dtype="float64", requires_grad=True)
    w.grad = dlrun.tensor([1.0, 1.0], dtype="float64")
    f = dlrun.compile(lambda x: x * w.grad)
    x = dlrun.tensor([2.0, 3.0], dtype="float64")
    np.testing.assert_allclose(f(x).numpy(), [2.0, 3.0])
    mine = dlrun.tensor([4.0, 5.0], dtype="float64")
    w.grad = mine
    np.testing.assert_allclose(f(x).numpy(), [8.0, 15.0])
    assert w.grad is mine and f.trace_count == 1


def test_zero_grad_without_set_to_none_matches_eager() -> None:
    data = _data(4)
    runs = {}
    for mode in ("eager", "static"):
        m, o = _setup("linear", "sgd_momentum")

        def step(x, y, m=m, o=o):
            o.zero_grad(set_to_none=False)  # reads each gradient: None stays None, else zeros
            loss = F.mse_loss(m(x), y)
            loss.backward()
            o.step()
            return loss

        if mode == "static":
            step = dlrun.compile(step)
        runs[mode] = [step(x, y).item() for x, y in data]
        runs[mode + "_params"] = [p.numpy().copy() for p in m.parameters()]
    np.testing.assert_allclose(runs["static"], runs["eager"], rtol=1e-12)
    for a, b in zip(runs["static_params"], runs["eager_params"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


# ----- the mode protocol ---------------------------------------------------------------------


def _hooks() -> list[str]:
    return [name for name, v in vars(engine_mode.Mode).items()
            if inspect.isfunction(v) and not name.startswith("_")]


def test_both_modes_implement_every_hook_of_the_protocol() -> None:
    hooks = _hooks()
    assert {"apply", "constant", "assign", "read_grad", "note_grad", "note_module"} <= set(hooks)
    for cls in (EagerMode, TraceMode):
        missing = [h for h in hooks if h not in vars(cls)]
        assert not missing, f"{cls.__name__} lacks {missing}"
        for h in hooks:
            assert inspect.signature(getattr(cls, h)).parameters.keys() == \
                inspect.signature(getattr(engine_mode.Mode, h)).parameters.keys()
    assert EAGER.tracing is False and TraceMode.tracing is True
    assert engine_mode.current() is EAGER and engine_mode.MODE.get(None) is None


def test_callers_call_hooks_and_never_test_for_eager() -> None:
    engine = Path(dlrun.__file__).parent / "engine"
    for name in ("tensor.py", "creation.py", "mode.py", "static/compile.py"):
        source = (engine / name).read_text(encoding="utf-8")
        assert "is EAGER" not in source and "is not EAGER" not in source, name
        assert "is mode.EAGER" not in source and "is not mode.EAGER" not in source, name


def test_eager_hooks_do_the_eager_thing() -> None:
    t = dlrun.tensor([1.0, 2.0])
    src = dlrun.tensor([3.0, 4.0])
    EAGER.assign(t, src)
    assert t._value is src._value
    g = dlrun.tensor([0.5, 0.5])
    t.grad = g
    assert EAGER.read_grad(t) is g and t.grad is g
    EAGER.note_grad(t)
    EAGER.note_module(object())
    assert t.grad is g


def test_detach_of_a_captured_tensor_is_its_value_at_that_point_of_each_call() -> None:
    """detach() inside a compiled step reads the tensor as the step finds it, every call (it
    used to keep the array seen while tracing, a snapshot that went stale)."""
    def step(p: dlrun.Tensor) -> dlrun.Tensor:
        snap = p.detach()
        p.copy_(p + 1)
        return snap * 2 + p.detach()

    eager_p = dlrun.tensor(np.array([1.0, 2.0]))
    static_p = dlrun.tensor(np.array([1.0, 2.0]))
    compiled = dlrun.compile(lambda: step(static_p))
    for _ in range(3):
        np.testing.assert_array_equal(compiled().numpy(), step(eager_p).numpy())
    np.testing.assert_array_equal(static_p.numpy(), [4.0, 5.0])
