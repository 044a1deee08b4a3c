"""SGD, Adam, AdamW and RMSprop against NumPy references of the published update rules."""

from __future__ import annotations

import json

import numpy as np
import pytest

import dlrun
from dlrun import nn, optim
from dlrun.errors import CheckpointError

STEPS = 6


def _np_sgd(lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False):
    state = {}

    def step(p, g):
        g = -g if maximize else g
        g = g + weight_decay * p
        if momentum:
            if "buf" not in state:
                state["buf"] = g.copy()
            else:
                state["buf"] = momentum * state["buf"] + (1 - dampening) * g
            g = g + momentum * state["buf"] if nesterov else state["buf"]
        return p - lr * g

    return step


def _np_adam(lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False,
             maximize=False):
    b1, b2 = betas
    st = {"t": 0, "m": 0.0, "v": 0.0, "vmax": 0.0}

    def step(p, g):
        g = -g if maximize else g
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        st["t"] += 1
        st["m"] = b1 * st["m"] + (1 - b1) * g
        st["v"] = b2 * st["v"] + (1 - b2) * g * g
        v = st["v"]
        if amsgrad:
            st["vmax"] = np.maximum(st["vmax"], v)
            v = st["vmax"]
        m_hat = st["m"] / (1 - b1 ** st["t"])
        v_hat = v / (1 - b2 ** st["t"])
        return p - lr * m_hat / (np.sqrt(v_hat) + eps)

    return step


def _np_rmsprop(lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    st = {"sq": 0.0, "ga": 0.0, "buf": 0.0}

    def step(p, g):
        g = g + weight_decay * p
        st["sq"] = alpha * st["sq"] + (1 - alpha) * g * g
        if centered:
            st["ga"] = alpha * st["ga"] + (1 - alpha) * g
            avg = np.sqrt(st["sq"] - st["ga"] ** 2) + eps
        else:
            avg = np.sqrt(st["sq"]) + eps
        if momentum > 0:
            st["buf"] = momentum * st["buf"] + g / avg
            return p - lr * st["buf"]
        return p - lr * g / avg

    return step


CASES = [
    ("sgd", optim.SGD, dict(lr=0.1), _np_sgd),
    ("sgd_wd", optim.SGD, dict(lr=0.1, weight_decay=0.05), _np_sgd),
    ("sgd_momentum", optim.SGD, dict(lr=0.1, momentum=0.9), _np_sgd),
    ("sgd_momentum_dampening_wd", optim.SGD,
     dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01), _np_sgd),
    ("sgd_nesterov_wd", optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True,
                                        weight_decay=0.02), _np_sgd),
    ("sgd_maximize", optim.SGD, dict(lr=0.1, momentum=0.5, maximize=True), _np_sgd),
    ("adam", optim.Adam, dict(lr=0.01), _np_adam),
    ("adam_wd_betas", optim.Adam, dict(lr=0.02, betas=(0.8, 0.95), weight_decay=0.1,
                                       eps=1e-6), _np_adam),
    ("adam_amsgrad", optim.Adam, dict(lr=0.01, amsgrad=True), _np_adam),
    ("adamw", optim.AdamW, dict(lr=0.01, weight_decay=0.1), lambda **k: _np_adam(
        decoupled=True, **k)),
    ("adamw_amsgrad", optim.AdamW, dict(lr=0.01, amsgrad=True), lambda **k: _np_adam(
        decoupled=True, weight_decay=1e-2, **k)),
    ("rmsprop", optim.RMSprop, dict(lr=0.01), _np_rmsprop),
    ("rmsprop_centered_momentum_wd", optim.RMSprop,
     dict(lr=0.01, alpha=0.9, centered=True, momentum=0.9, weight_decay=0.1), _np_rmsprop),
    ("rmsprop_momentum", optim.RMSprop, dict(lr=0.005, momentum=0.5), _np_rmsprop),
]


def _grads(shape: tuple[int, ...], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(STEPS)]


@pytest.mark.parametrize("name, cls, kwargs, ref", CASES, ids=[c[0] for c in CASES])
def test_update_matches_published_formula(name, cls, kwargs, ref) -> None:  # noqa: ANN001
    shapes = [(3, 4), (4,)]
    init = [np.random.default_rng(i).standard_normal(s) for i, s in enumerate(shapes)]
    params = [nn.Parameter(dlrun.tensor(a)) for a in init]
    opt = cls(params, **kwargs)
    refs = [ref(**kwargs) for _ in params]
    expected = [a.copy() for a in init]
    grads = [_grads(s, 10 + i) for i, s in enumerate(shapes)]
    for t in range(STEPS):
        for i, p in enumerate(params):
            p.grad = dlrun.tensor(grads[i][t])
            expected[i] = refs[i](expected[i], grads[i][t])
        opt.step()
        opt.zero_grad()
        for p, e in zip(params, expected, strict=True):
            np.testing.assert_allclose(p.numpy(), e, rtol=1e-12, atol=1e-12,
                                       err_msg=f"{name} step {t}")


def test_state_is_created_eagerly_and_updated_in_place() -> None:
    p = nn.Parameter(dlrun.randn(3))
    opt = optim.Adam([p], lr=0.1, amsgrad=True)
    state = opt.state[p]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    objects = opt.state_tensors()  # the parameter and the flat state
    lr_t = opt.param_groups[0]["lr_t"]
    p.grad = dlrun.ones(3)
    opt.step()
    assert all(a is b for a, b in zip(opt.state_tensors(), objects, strict=True))
    assert opt.param_groups[0]["lr_t"] is lr_t
    assert float(state["step"].item()) == 1.0 and state["step"].shape == ()
    sgd = optim.SGD([nn.Parameter(dlrun.zeros(2))], lr=0.1, momentum=0.9)
    assert set(next(iter(sgd.state.values()))) == {"momentum_buffer"}


def test_parameters_without_grad_are_skipped() -> None:
    a, b = nn.Parameter(dlrun.ones(2)), nn.Parameter(dlrun.ones(2))
    opt = optim.Adam([a, b], lr=0.1)
    a.grad = dlrun.ones(2)
    opt.step()
    np.testing.assert_array_equal(b.numpy(), 1.0)
    assert float(opt.state[b]["step"].item()) == 0.0 and float(opt.state[a]["step"].item()) == 1


def test_setting_lr_updates_the_lr_tensor() -> None:
    p = nn.Parameter(dlrun.zeros(2, dtype=np.float64))
    opt = optim.SGD([p], lr=0.1)
    lr_t = opt.param_groups[0]["lr_t"]
    opt.param_groups[0]["lr"] = 0.5
    assert opt.param_groups[0]["lr_t"] is lr_t and float(lr_t.item()) == 0.5
    p.grad = dlrun.ones(2, dtype=np.float64)
    opt.step()
    np.testing.assert_allclose(p.numpy(), -0.5)


def test_param_groups_have_their_own_hyperparameters() -> None:
    a, b = nn.Parameter(dlrun.zeros(1)), nn.Parameter(dlrun.zeros(1))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    a.grad, b.grad = dlrun.ones(1), dlrun.ones(1)
    opt.step()
    assert a.numpy()[0] == pytest.approx(-0.1) and b.numpy()[0] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="more than one"):
        opt.add_param_group({"params": [a]})


@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3),
    lambda ps: optim.Adam(ps, lr=0.01, amsgrad=True),
    lambda ps: optim.AdamW(ps, lr=0.01),
    lambda ps: optim.RMSprop(ps, lr=0.01, centered=True, momentum=0.5),
], ids=["sgd", "adam", "adamw", "rmsprop"])
def test_state_dict_round_trip_gives_identical_next_steps(make) -> None:  # noqa: ANN001
    dlrun.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    opt = make(list(model.parameters()))
    x, y = dlrun.randn(8, 3), dlrun.randn(8, 1)

    def train_step(m: nn.Module, o: optim.Optimizer) -> None:
        o.zero_grad()
        ((m(x) - y) ** 2).mean().backward()
        o.step()

    for _ in range(3):
        train_step(model, opt)
    saved_model, saved_opt = model.state_dict(), opt.state_dict()
    json.dumps(saved_opt["param_groups"])  # hyper-parameters are plain JSON
    assert all(isinstance(v, np.ndarray) for s in saved_opt["state"].values()
               for v in s.values())
    clone = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    clone.load_state_dict(saved_model)
    clone_opt = make(list(clone.parameters()))
    clone_opt.param_groups[0]["lr"] = 123.0  # overwritten by the load
    clone_opt.load_state_dict(saved_opt)
    assert float(clone_opt.param_groups[0]["lr_t"].item()) == pytest.approx(
        opt.param_groups[0]["lr"])
    for _ in range(2):
        train_step(model, opt)
        train_step(clone, clone_opt)
    for a, b in zip(model.parameters(), clone.parameters(), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_load_state_dict_rejects_a_mismatch() -> None:
    opt = optim.Adam([nn.Parameter(dlrun.zeros(3))])
    other = optim.Adam([nn.Parameter(dlrun.zeros(4))]).state_dict()
    with pytest.raises(CheckpointError, match="exp_avg.*\\(4,\\).*\\(3,\\)"):
        opt.load_state_dict(other)
    two = optim.Adam([nn.Parameter(dlrun.zeros(3)), nn.Parameter(dlrun.zeros(3))]).state_dict()
    with pytest.raises(CheckpointError, match="2 parameters"):
        opt.load_state_dict(two)


@pytest.mark.parametrize("make, match", [
    (lambda p: optim.SGD(p, lr=-1.0), "learning rate"),
    (lambda p: optim.SGD(p, nesterov=True), "nesterov.*needs momentum"),
    (lambda p: optim.Adam(p, betas=(1.0, 0.9)), "beta"),
    (lambda p: optim.RMSprop(p, momentum=-0.1), "momentum"),
    (lambda p: optim.SGD([], lr=0.1), "empty"),
])
def test_bad_hyperparameters(make, match) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=match):
        make([nn.Parameter(dlrun.zeros(1))])


def test_float32_params_keep_their_dtype() -> None:
    p = nn.Parameter(dlrun.randn(4))
    opt = optim.Adam([p], lr=0.01)
    p.grad = dlrun.randn(4, dtype=np.float64)
    opt.step()
    assert p.dtype == np.float32 and opt.state[p]["exp_avg"].dtype == np.float32
