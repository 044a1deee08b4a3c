"""Optimizers and schedules step for step against PyTorch's own (float64), where installed."""

from __future__ import annotations

import numpy as np
import pytest

import dlrun
from dlrun import nn, optim

torch = pytest.importorskip("torch")

CASES = [
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.2, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1, amsgrad=True)),
    ("AdamW", dict(lr=0.01, weight_decay=0.05)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01)),
]


@pytest.mark.parametrize("name, kwargs", CASES, ids=[f"{c[0]}{i}" for i, c in enumerate(CASES)])
def test_matches_pytorch_over_steps(name: str, kwargs: dict) -> None:
    rng = np.random.default_rng(0)
    init = rng.standard_normal((3, 4))
    p = nn.Parameter(dlrun.tensor(init))
    tp = torch.nn.Parameter(torch.from_numpy(init.copy()))
    opt = getattr(optim, name)([p], **kwargs)
    topt = getattr(torch.optim, name)([tp], **kwargs)
    sched = optim.StepLR(opt, 2, gamma=0.5)
    tsched = torch.optim.lr_scheduler.StepLR(topt, 2, gamma=0.5)
    for _ in range(6):
        g = rng.standard_normal((3, 4))
        p.grad = dlrun.tensor(g)
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        sched.step()
        tsched.step()
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert sched.get_last_lr() == pytest.approx(tsched.get_last_lr())


def test_cosine_matches_pytorch() -> None:
    opt = optim.SGD([nn.Parameter(dlrun.zeros(1))], lr=0.1)
    topt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    s = optim.CosineAnnealingLR(opt, T_max=7, eta_min=0.001)
    ts = torch.optim.lr_scheduler.CosineAnnealingLR(topt, T_max=7, eta_min=0.001)
    for _ in range(7):
        topt.step()
        s.step()
        ts.step()
        assert s.get_last_lr() == pytest.approx(ts.get_last_lr(), rel=1e-9)
