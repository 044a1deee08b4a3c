"""Mixed precision on the CPU: float16 (NumPy) and bfloat16 (ml_dtypes) compute, float32 masters,
dynamic loss scaling with in-graph skipping, eager == static, checkpoints keep the masters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import dlrun
from dlrun import nn, optim
from dlrun.config import load_config
from dlrun.errors import ConfigError
from dlrun.optim.amp import GradScaler, MixedPrecision, cast_parameters, compute_dtype
from dlrun.runner.experiment import batch_tensors, build_experiment
from dlrun.runner.train import train


def _scaler_step(scaler: GradScaler, opt: optim.Optimizer, params, grads) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = dlrun.tensor(g)
    scaler.step(opt)
    opt.zero_grad()


@pytest.mark.parametrize("static", [False, True], ids=["eager", "static"])
def test_scaler_skips_bad_steps_and_adapts_the_scale(static: bool) -> None:
    dlrun.manual_seed(0)
    model = nn.Linear(3, 2)
    params = list(model.parameters())
    opt = optim.Adam(params, lr=0.1)
    scaler = GradScaler(growth_interval=2)
    good = [np.ones(p.shape, np.float32) for p in params]
    bad = [np.full(p.shape, np.inf, np.float32) for p in params]
    bad[1][0] = np.nan

    def step(*gs):
        for p, g in zip(params, gs, strict=True):
            p.grad = g
        scaler.step(opt)
        opt.zero_grad()

    run = dlrun.compile(step) if static else step
    before = [p.numpy().copy() for p in params]
    state = {k: v.numpy().copy() for k, v in opt.state[params[0]].items()}
    run(*[dlrun.tensor(g) for g in bad])  # skipped: nothing moves, the scale backs off
    for p, b in zip(params, before, strict=True):
        np.testing.assert_array_equal(p.numpy(), b)
    for k, v in opt.state[params[0]].items():
        np.testing.assert_array_equal(v.numpy(), state[k])
    assert scaler.scale.item() == 2.0**15 and scaler.growth_tracker.item() == 0
    run(*[dlrun.tensor(g) for g in good])
    assert scaler.scale.item() == 2.0**15 and scaler.growth_tracker.item() == 1
    assert not np.array_equal(params[0].numpy(), before[0])
    assert opt.state[params[0]]["step"].item() == 1
    run(*[dlrun.tensor(g) for g in good])  # the second good step in a row: the scale grows
    assert scaler.scale.item() == 2.0**16 and scaler.growth_tracker.item() == 0
    if static:
        assert run.trace_count == 1  # good and bad steps replay one graph: no host decision


def test_scaler_matches_torch_grad_scaler_rule() -> None:
    """torch.amp.GradScaler's schedule: x0.5 on inf, x2 after growth_interval good steps."""
    scaler = GradScaler(init_scale=8.0, growth_interval=3)
    model = nn.Linear(1, 1)
    params = list(model.parameters())
    opt = optim.SGD(params, lr=0.0)
    pattern = [True, True, False, True, True, True, True]  # finite?
    expected, scale, run = [], 8.0, 0
    for ok in pattern:
        if ok:
            run += 1
            if run == 3:
                scale, run = scale * 2, 0
        else:
            scale, run = scale * 0.5, 0
        expected.append(scale)
    seen = []
    for ok in pattern:
        g = [np.ones(p.shape, np.float32) * (1 if ok else np.inf) for p in params]
        _scaler_step(scaler, opt, params, g)
        seen.append(scaler.scale.item())
    assert seen == expected


def test_cast_parameters_keeps_tied_weights_tied_and_restores() -> None:
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight
    model = nn.Sequential(a, b)
    masters = list(model.parameters())
    with cast_parameters(model, np.dtype(np.float16)):
        assert a.weight.dtype == np.float16 and a.weight is b.weight
    assert list(model.parameters()) == masters
    assert all(p.dtype == np.float32 for p in masters)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_gradients_reach_the_float32_masters(precision: str) -> None:
    dlrun.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = optim.SGD(model.parameters(), lr=0.1)
    amp = MixedPrecision(precision, model, opt)
    x = dlrun.tensor(np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32))
    out = amp.run(model, x)
    assert out.dtype == np.float32
    amp.backward((out * out).mean())  # fp16: the gradients keep the loss scale until step
    amp.unscale_()  # ... or until unscale_ (PyTorch's scaler.unscale_ before reading them)
    ref = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    ref.load_state_dict(model.state_dict())
    y = ref(x)
    (y * y).mean().backward()
    tol = 1e-2 if precision == "fp16" else 5e-2
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert p.grad.dtype == np.float32  # unscaled, on the master
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=tol, atol=tol)
    assert compute_dtype(precision) == amp.dtype


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_eager_equals_static_and_learns(precision: str, tiny_config) -> None:
    losses = {}
    for mode in ("eager", "static"):
        cfg = load_config(tiny_config(), [f"mode={mode}", f"precision={precision}",
                                          "model.dropout=0.0"])
        exp = build_experiment(cfg)
        trace = []
        for epoch in range(4):
            exp.train_loader.set_epoch(epoch)
            for xb, yb in exp.train_loader:
                trace.append(float(exp.train_step(*batch_tensors(exp, xb, yb)).item()))
        losses[mode] = np.array(trace)
        assert all(p.dtype == np.float32 for p in exp.model.parameters())
        assert all(t.dtype == np.float32 for s in exp.optimizer.state.values()
                   for t in s.values())
    tol = {"fp16": 1e-3, "bf16": 1e-2}[precision]
    np.testing.assert_allclose(losses["static"], losses["eager"], rtol=tol)
    first, last = losses["eager"][:5].mean(), losses["eager"][-5:].mean()
    assert last < 0.5 * first


def test_fp16_run_checkpoints_float32_masters_and_the_scale(tiny_config, tmp_path) -> None:
    cfg = load_config(tiny_config(), ["precision=fp16"])
    summary = train(cfg, runs_dir=tmp_path)
    assert summary.status == "completed"
    from dlrun.runner.io.checkpoint import load_checkpoint

    arrays, meta = load_checkpoint(Path(summary.run_dir))
    assert all(a.dtype == np.float32 for a in arrays.values() if a.dtype.kind == "f")
    scale = meta["amp"]["scale"]  # backed off from 2**16 on the early overflows of fp16
    assert 1.0 <= scale <= 2.0**16 and float(np.log2(scale)).is_integer()


def test_precision_needs_float32_masters(tiny_config) -> None:
    with pytest.raises(ConfigError, match="precision"):
        load_config(tiny_config(), ["precision=fp16", "dtype=float64"])
