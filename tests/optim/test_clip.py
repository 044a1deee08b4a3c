"""clip_grad_norm_ / clip_grad_value_ against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

import dlrun
from dlrun import nn, optim


def _params(seed: int = 0) -> tuple[list[nn.Parameter], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    grads = [rng.standard_normal(s) for s in [(3, 4), (4,), (2, 2)]]
    params = [nn.Parameter(dlrun.zeros(g.shape, dtype=np.float64)) for g in grads]
    for p, g in zip(params, grads, strict=True):
        p.grad = dlrun.tensor(g)
    return params, grads


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
def test_clip_grad_norm_scales_all_gradients(norm_type: float) -> None:
    params, grads = _params()
    flat = np.concatenate([g.ravel() for g in grads])
    total = np.linalg.norm(flat, ord=norm_type)
    out = optim.clip_grad_norm_(params, max_norm=0.5, norm_type=norm_type)
    assert isinstance(out, dlrun.Tensor) and out.shape == ()
    assert float(out.item()) == pytest.approx(total, rel=1e-12)
    coef = 0.5 / (total + 1e-6)
    for p, g in zip(params, grads, strict=True):
        np.testing.assert_allclose(p.grad.numpy(), g * coef, rtol=1e-12)


def test_clip_grad_norm_leaves_small_gradients_alone() -> None:
    params, grads = _params()
    optim.clip_grad_norm_(params, max_norm=100.0)
    for p, g in zip(params, grads, strict=True):
        np.testing.assert_array_equal(p.grad.numpy(), g)


def test_clip_grad_norm_skips_missing_grads_and_accepts_one_tensor() -> None:
    params, grads = _params()
    params[1].grad = None
    total = optim.clip_grad_norm_(iter(params), 1.0)
    assert float(total.item()) == pytest.approx(
        np.sqrt(sum((g**2).sum() for i, g in enumerate(grads) if i != 1)))
    assert params[1].grad is None
    before = params[0].grad.numpy().copy()
    single = optim.clip_grad_norm_(params[0], 1e9)
    assert float(single.item()) == pytest.approx(np.linalg.norm(before), rel=1e-12)
    assert float(optim.clip_grad_norm_([nn.Parameter(dlrun.zeros(1))], 1.0).item()) == 0.0


def test_clip_grad_value() -> None:
    params, grads = _params()
    optim.clip_grad_value_(params, 0.3)
    for p, g in zip(params, grads, strict=True):
        np.testing.assert_array_equal(p.grad.numpy(), np.clip(g, -0.3, 0.3))
