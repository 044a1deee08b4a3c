"""The flat optimizer step (one vector per group and dtype) against the per-parameter formulas,
its per-parameter state_dict, and the fixed-order sum of squares behind clipping."""

from __future__ import annotations

import numpy as np
import pytest

import dlrun
from dlrun import nn, optim
from dlrun.engine.prims.reduce import sum_squares
from dlrun.optim import optimizer as optimizer_module
from tests.optim.test_optimizers import CASES

SHAPES = [(3, 4), (4,), (2, 3, 2)]
STEPS = 5


@pytest.fixture(autouse=True)
def _one_flat_bucket(monkeypatch: pytest.MonkeyPatch) -> None:
    """These three parameters share one flat bucket (a group that small would otherwise get a
    bucket per parameter, which test_small_groups_update_per_parameter_with_the_same_bits
    covers)."""
    monkeypatch.setattr(optimizer_module, "FLAT_MIN_PARAMS", 1)
SCALE = 1024.0  # a loss scale: the gradients arrive multiplied by it


def _grads(seed: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s) for s in SHAPES] for _ in range(STEPS)]


def _expected(ref, kwargs, init, grads, max_norm):  # noqa: ANN001, ANN202
    """The published per-parameter update of each parameter after clipping its true gradient
    by the global norm of all of them (PyTorch's clip_grad_norm_ formula)."""
    refs = [ref(**kwargs) for _ in init]
    values = [a.copy() for a in init]
    for gs in grads:
        norm = np.sqrt(sum(float((g * g).sum()) for g in gs))
        coef = min(max_norm / (norm + 1e-6), 1.0)
        values = [r(v, g * coef) for r, v, g in zip(refs, values, gs, strict=True)]
    return values


@pytest.mark.parametrize("mode", ["eager", "static"])
@pytest.mark.parametrize("name, cls, kwargs, ref", CASES, ids=[c[0] for c in CASES])
def test_flat_step_with_unscaling_and_clipping_matches_per_parameter_formulas(
        name, cls, kwargs, ref, mode) -> None:  # noqa: ANN001
    init = [np.random.default_rng(i).standard_normal(s) for i, s in enumerate(SHAPES)]
    params = [nn.Parameter(dlrun.tensor(a)) for a in init]
    opt = cls(params, **kwargs)
    grads = _grads(7)
    max_norm = 1.5  # below every step's norm: clipping acts

    def step(*gs: dlrun.Tensor) -> None:
        for p, g in zip(params, gs, strict=True):
            p.grad = g
        opt.step(grad_scale=1.0 / SCALE, max_norm=max_norm)
        opt.zero_grad()

    run = dlrun.compile(step) if mode == "static" else step
    for gs in grads:
        run(*[dlrun.tensor(g * SCALE) for g in gs])
    expected = _expected(ref, kwargs, init, grads, max_norm)
    for p, e in zip(params, expected, strict=True):
        np.testing.assert_allclose(p.numpy(), e, rtol=1e-12, atol=1e-12, err_msg=name)


def test_two_groups_and_a_float32_group_share_one_global_norm() -> None:
    rng = np.random.default_rng(0)
    a, b = (nn.Parameter(dlrun.tensor(rng.standard_normal(s))) for s in [(4, 3), (3,)])
    c = nn.Parameter(dlrun.tensor(rng.standard_normal(5).astype(np.float32)))
    opt = optim.SGD([{"params": [a, c]}, {"params": [b], "lr": 0.5}], lr=0.1)
    assert [len(bs) for bs in opt._buckets] == [2, 1]  # float64 and float32 apart
    grads = [rng.standard_normal(p.shape) for p in (a, b, c)]
    for p, g in zip((a, b, c), grads, strict=True):
        p.grad = dlrun.tensor(g.astype(p.dtype))
    before = [p.numpy().copy() for p in (a, b, c)]
    stats = opt.apply_gradients(max_norm=0.1)
    total = np.sqrt(sum(float((g.astype(p.dtype) ** 2).sum()) for p, g in zip((a, c, b), (
        grads[0], grads[2], grads[1]), strict=True)))
    assert float(stats.norm.item()) == pytest.approx(total, rel=1e-6)
    coef = 0.1 / (total + 1e-6)
    for p, g, old, lr in zip((a, b, c), grads, before, (0.1, 0.5, 0.1), strict=True):
        np.testing.assert_allclose(p.numpy(), old - lr * g * coef, rtol=1e-5, atol=1e-7)


def test_step_with_max_norm_equals_clip_grad_norm_then_step_bitwise() -> None:
    dlrun.manual_seed(0)
    models = [nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 2)) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [optim.AdamW(m.parameters(), lr=0.01) for m in models]
    x = dlrun.randn(6, 5)
    for _ in range(3):
        for m in models:
            (m(x) ** 2).mean().backward()
        n0 = optim.clip_grad_norm_(models[0].parameters(), 0.05)
        opts[0].step()
        n1 = opts[1].apply_gradients(max_norm=0.05).norm
        assert n0.item() == n1.item()
        for o in opts:
            o.zero_grad()
    for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
        np.testing.assert_array_equal(p.numpy(), q.numpy())


def test_state_is_per_parameter_slices_in_pytorchs_format() -> None:
    params = [nn.Parameter(dlrun.randn(*s, dtype=np.float64)) for s in SHAPES]
    opt = optim.Adam(params, lr=0.01, amsgrad=True)
    for gs in _grads(3)[:2]:
        for p, g in zip(params, gs, strict=True):
            p.grad = dlrun.tensor(g)
        opt.step()
    sd = opt.state_dict()
    assert sorted(sd["state"]) == [0, 1, 2]
    flat = opt._buckets[0][0].buffers["exp_avg"].numpy()
    at = 0
    for i, p in enumerate(params):
        st = sd["state"][i]
        assert list(st) == ["step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
        assert st["step"].shape == () and float(st["step"]) == 2.0
        assert all(st[k].shape == p.shape for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"))
        np.testing.assert_array_equal(st["exp_avg"].ravel(), flat[at:at + p.numel()])
        np.testing.assert_array_equal(opt.state[p]["exp_avg"].numpy(), st["exp_avg"])
        at += p.numel()


@pytest.mark.parametrize("mode", ["eager", "static"])
def test_parameters_without_grad_keep_their_own_step_counts_and_round_trip(mode: str) -> None:
    def build() -> tuple[list[nn.Parameter], optim.Optimizer]:
        ps = [nn.Parameter(dlrun.tensor(np.full(s, 0.5))) for s in SHAPES]
        return ps, optim.Adam(ps, lr=0.1, weight_decay=0.01)

    params, opt = build()
    grads = _grads(5)

    def partial_step(g0: dlrun.Tensor, g2: dlrun.Tensor) -> None:
        params[0].grad, params[2].grad = g0, g2  # params[1] has no gradient
        opt.step()
        opt.zero_grad()

    run = dlrun.compile(partial_step) if mode == "static" else partial_step
    for gs in grads[:2]:
        run(dlrun.tensor(gs[0]), dlrun.tensor(gs[2]))
    np.testing.assert_array_equal(params[1].numpy(), 0.5)
    steps = [float(opt.state[p]["step"].item()) for p in params]
    assert steps == [2.0, 0.0, 2.0]
    # a full step now: every parameter with its own bias correction
    ref_params, ref_opt = build()
    ref_opt.load_state_dict(opt.state_dict())
    with dlrun.no_grad():
        for p, q in zip(params, ref_params, strict=True):
            q.copy_(p.detach())
    assert not ref_opt._buckets[0][0].lockstep
    for o, ps in ((opt, params), (ref_opt, ref_params)):
        for p, g in zip(ps, grads[2], strict=True):
            p.grad = dlrun.tensor(g)
        o.step()
    for p, q in zip(params, ref_params, strict=True):
        np.testing.assert_array_equal(p.numpy(), q.numpy())
    m = optim.Adam([nn.Parameter(dlrun.tensor(np.full(4, 0.5)))], lr=0.1, weight_decay=0.01)
    m.param_groups[0]["params"][0].grad = dlrun.tensor(grads[2][1])
    m.step()  # params[1]'s first step: it must match a fresh optimizer's first step
    np.testing.assert_allclose(params[1].numpy(), m.param_groups[0]["params"][0].numpy(),
                               rtol=1e-15)


def _reference_sum_squares(flat: np.ndarray, lanes: int = 1024, block: int = 64) -> np.floating:
    """The documented order, one addition at a time: lane i % lanes of row i // lanes; each
    lane sums its squares row by row within blocks of `block` rows, then the block sums in
    order, then the partial last row; then the lanes in a halving tree."""
    rows = flat.size // lanes
    sq = (flat * flat)[:rows * lanes].reshape(rows, lanes)
    acc = np.zeros(lanes, flat.dtype)
    for b0 in range(0, rows, block):
        part = sq[b0].copy()
        for r in range(b0 + 1, min(b0 + block, rows)):
            part += sq[r]
        acc += part
    tail = flat[rows * lanes:]
    acc[:tail.size] += tail * tail
    h = lanes // 2
    while h:
        acc = acc[:h] + acc[h:]
        h //= 2
    return acc[0]


@pytest.mark.parametrize("n", [1, 1000, 1024, 4099, 100_003, 200_000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_squares_is_independent_of_layout_and_alignment(n: int, dtype: type) -> None:
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n).astype(dtype)
    want = _reference_sum_squares(x)
    assert sum_squares.forward(np, x) == want
    big = np.zeros(3 * n + 5, dtype)
    strided = big[1::3][:n]  # every third element, starting one element off
    strided[:] = x
    assert n == 1 or not strided.flags.c_contiguous
    assert sum_squares.forward(np, strided) == want
    raw = np.zeros(n * x.itemsize + 3, np.uint8)  # misaligned by 3 bytes
    unaligned = raw[3:].view(dtype)
    unaligned[:] = x
    assert sum_squares.forward(np, unaligned) == want
    cut = [x[: n // 3], x[n // 3: n // 2], x[n // 2:]]  # split and reshaped anyhow
    assert sum_squares.forward(np, cut[0], cut[1].reshape(1, -1), cut[2]) == want
    t = dlrun.tensor(x.reshape(1, -1))
    eager = sum_squares(t).item()
    static = dlrun.compile(lambda a: sum_squares(a.transpose(0, 1)))(t).item()
    assert eager == static == want


@pytest.mark.parametrize("mode", ["eager", "static"])
def test_small_groups_update_per_parameter_with_the_same_bits(mode: str, monkeypatch) -> None:
    """Below FLAT_MIN_PARAMS every parameter is its own bucket: the same numbers, no concat."""

    def run(flat_min: int) -> tuple[list[np.ndarray], int]:
        monkeypatch.setattr(optimizer_module, "FLAT_MIN_PARAMS", flat_min)
        params = [nn.Parameter(dlrun.tensor(np.random.default_rng(i).standard_normal(s)))
                  for i, s in enumerate(SHAPES)]
        opt = optim.AdamW(params, lr=0.01, weight_decay=0.1)

        def step(*gs):
            for p, g in zip(params, gs, strict=True):
                p.grad = g
            opt.step(max_norm=0.5)
            return params[0]

        fn = dlrun.compile(step) if mode == "static" else step
        for gs in _grads(7):
            fn(*(dlrun.tensor(g) for g in gs))
        return [p.numpy() for p in params], len(opt._buckets[0])

    flat, one = run(1)
    split, three = run(len(SHAPES) + 1)
    assert (one, three) == (1, len(SHAPES))
    for a, b in zip(flat, split, strict=True):
        np.testing.assert_array_equal(a, b)
