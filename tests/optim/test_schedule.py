"""Learning-rate schedules against closed forms; warm-up composition; plateau; state_dict."""

from __future__ import annotations

import json
import math

import pytest

import dlrun
from dlrun import nn, optim


def _opt(lr: float = 0.1) -> optim.SGD:
    return optim.SGD([nn.Parameter(dlrun.zeros(2))], lr=lr)


def _trace(sched, opt, n: int = 10) -> list[float]:  # noqa: ANN001
    """lr used at epochs 0..n-1 (a scheduler sets epoch 0 on construction)."""
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        assert float(opt.param_groups[0]["lr_t"].item()) == pytest.approx(out[-1], rel=1e-6)
        sched.step()
    return out


@pytest.mark.parametrize("make, expected", [
    (lambda o: optim.ConstantLR(o, factor=1.0), lambda e: 0.1),
    (lambda o: optim.ConstantLR(o, factor=0.5, total_iters=3),
     lambda e: 0.05 if e < 3 else 0.1),
    (lambda o: optim.StepLR(o, step_size=3, gamma=0.5), lambda e: 0.1 * 0.5 ** (e // 3)),
    (lambda o: optim.MultiStepLR(o, milestones=[2, 5], gamma=0.1),
     lambda e: 0.1 * 0.1 ** ((e >= 2) + (e >= 5))),
    (lambda o: optim.ExponentialLR(o, gamma=0.9), lambda e: 0.1 * 0.9**e),
    (lambda o: optim.CosineAnnealingLR(o, T_max=8, eta_min=0.01),
     lambda e: 0.01 + 0.09 * (1 + math.cos(math.pi * e / 8)) / 2),
    (lambda o: optim.LambdaLR(o, lambda e: 1 / (e + 1)), lambda e: 0.1 / (e + 1)),
    (lambda o: optim.LinearWarmup(o, warmup_steps=4, start_factor=0.2),
     lambda e: 0.1 * (0.2 + 0.8 * e / 4) if e < 4 else 0.1),
], ids=["constant", "constant_factor", "step", "multistep", "exponential", "cosine", "lambda",
        "warmup"])
def test_closed_forms(make, expected) -> None:  # noqa: ANN001
    opt = _opt()
    got = _trace(make(opt), opt)
    assert got == pytest.approx([expected(e) for e in range(10)], rel=1e-12)


def test_warmup_then_cosine() -> None:
    opt = _opt()
    sched = optim.LinearWarmup(opt, 3, after=optim.CosineAnnealingLR(opt, T_max=5),
                               start_factor=0.0)
    got = _trace(sched, opt, 9)
    want = [0.0, 0.1 / 3, 0.2 / 3] + [0.05 * (1 + math.cos(math.pi * e / 5)) for e in range(6)]
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_state_dict_round_trip() -> None:
    opt = _opt()
    sched = optim.LinearWarmup(opt, 2, after=optim.StepLR(opt, 2, 0.5))
    for _ in range(5):
        sched.step()
    sd = sched.state_dict()
    json.dumps(sd)
    opt2 = _opt()
    sched2 = optim.LinearWarmup(opt2, 2, after=optim.StepLR(opt2, 2, 0.5))
    sched2.load_state_dict(sd)
    sched.step()
    sched2.step()
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_param_groups_keep_their_own_base_lr() -> None:
    a, b = nn.Parameter(dlrun.zeros(1)), nn.Parameter(dlrun.zeros(1))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    sched = optim.ExponentialLR(opt, 0.5)
    sched.step()
    assert sched.get_last_lr() == pytest.approx([0.05, 0.5])


def test_reduce_on_plateau() -> None:
    opt = _opt(1.0)
    sched = optim.ReduceLROnPlateau(opt, factor=0.5, patience=1, cooldown=1, min_lr=0.2)
    lrs = []
    for metric in [5.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 3.0, 3.0, 3.0, 3.0]:
        sched.step(metric)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.2, 0.2]  # as PyTorch
    assert float(opt.param_groups[0]["lr_t"].item()) == pytest.approx(0.2)
    max_mode = optim.ReduceLROnPlateau(_opt(1.0), mode="max", patience=0, factor=0.1)
    max_mode.step(dlrun.tensor(1.0))
    max_mode.step(0.5)
    assert max_mode.get_last_lr() == pytest.approx([0.1])
    sd = max_mode.state_dict()
    json.dumps(sd)
    fresh = optim.ReduceLROnPlateau(_opt(0.1), mode="max", patience=0, factor=0.1)
    fresh.load_state_dict(sd)
    assert fresh.best == 1.0 and fresh.last_epoch == 2


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="step_size"):
        optim.StepLR(_opt(), 0)
    with pytest.raises(ValueError, match="factor"):
        optim.ReduceLROnPlateau(_opt(), factor=2.0)
    with pytest.raises(TypeError, match="Optimizer"):
        optim.StepLR(object(), 2)  # type: ignore[arg-type]
    other = _opt()
    with pytest.raises(ValueError, match="same optimizer"):
        optim.LinearWarmup(_opt(), 2, after=optim.StepLR(other, 2))
