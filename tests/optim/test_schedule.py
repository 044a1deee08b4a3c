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


# ----- nanoGPT's warm-up + cosine (train.py get_lr) -------------------------------------------

def nanogpt_get_lr(it: int, learning_rate: float = 1e-3, warmup_iters: int = 100,
                   lr_decay_iters: int = 2000, min_lr: float = 1e-4) -> float:
    """karpathy/nanoGPT train.py get_lr, verbatim."""
    # 1) linear warmup for warmup_iters steps
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    # 2) if it > lr_decay_iters, return min learning rate
    if it > lr_decay_iters:
        return min_lr
    # 3) in between, use cosine decay down to min learning rate
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    assert 0 <= decay_ratio <= 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # coeff ranges 0..1
    return min_lr + coeff * (learning_rate - min_lr)


STEPS = [0, 1, 50, 99, 100, 101, 500, 1049, 1050, 1999, 2000, 2001, 2500]


def test_warmup_cosine_is_nanogpt_get_lr() -> None:
    opt = _opt(1e-3)
    sched = optim.WarmupCosineLR(opt, warmup_steps=100, decay_steps=2000, min_lr=1e-4)
    got = _trace(sched, opt, 2600)  # lr used by step k = nanoGPT's get_lr(iter_num=k)
    assert [got[k] for k in STEPS] == pytest.approx([nanogpt_get_lr(k) for k in STEPS],
                                                    rel=1e-12)
    assert got[2000:] == pytest.approx([1e-4] * 600)  # holds min_lr after decay_steps


def test_config_cosine_schedule_is_nanogpt_get_lr() -> None:
    from dlrun.config import validate_config
    from dlrun.runner.experiment.builders import build_scheduler

    def sched_for(schedule: dict, total: int = 2000) -> tuple:
        cfg = validate_config({"data": {"name": "tokens"}, "model": {"type": "lstm"},
                               "optimizer": {"lr": 1e-3}, "schedule": schedule})
        opt = _opt(1e-3)
        return build_scheduler(cfg, opt, total), opt

    base = {"name": "cosine", "warmup_steps": 100, "interval": "step"}
    for schedule, total in [({**base, "min_lr": 1e-4, "decay_steps": 2000}, 5000),
                            ({**base, "eta_min": 1e-4, "t_max": 1900}, 5000),
                            ({**base, "min_lr": 1e-4}, 2000)]:  # default: the end of training
        sched, opt = sched_for(schedule, total)
        got = _trace(sched, opt, 2100)
        assert [got[k] for k in STEPS[:-1]] == pytest.approx(
            [nanogpt_get_lr(k) for k in STEPS[:-1]], rel=1e-12), schedule
    # warm-up before any other schedule follows the same rule: lr * (k + 1) / (warmup + 1)
    sched, opt = sched_for({"name": "step", "step_size": 1000, "warmup_steps": 4})
    assert _trace(sched, opt, 6) == pytest.approx([1e-3 * k / 5 for k in (1, 2, 3, 4)]
                                                  + [1e-3, 1e-3], rel=1e-12)


def test_warmup_cosine_state_dict_and_groups() -> None:
    a, b = nn.Parameter(dlrun.zeros(1)), nn.Parameter(dlrun.zeros(1))
    opt = optim.AdamW([{"params": [a]}, {"params": [b], "weight_decay": 0.0}], lr=1e-3)
    sched = optim.WarmupCosineLR(opt, 10, 50, min_lr=1e-4)
    for _ in range(20):
        sched.step()
    assert sched.get_last_lr() == pytest.approx([nanogpt_get_lr(20, 1e-3, 10, 50, 1e-4)] * 2)
    sd = json.loads(json.dumps(sched.state_dict()))
    opt2 = optim.AdamW([{"params": [a]}, {"params": [b], "weight_decay": 0.0}], lr=1e-3)
    sched2 = optim.WarmupCosineLR(opt2, 10, 50, min_lr=1e-4)
    sched2.load_state_dict(sd)
    sched.step()
    sched2.step()
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    with pytest.raises(ValueError, match="decay_steps"):
        optim.WarmupCosineLR(_opt(), 10, 10)
