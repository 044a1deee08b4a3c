"""The engine on CuPy: every op spec's forward and gradients on the GPU equal the NumPy results,
in eager and static mode. Skipped without CUDA."""

from __future__ import annotations

import numpy as np
import pytest

import dlrun
from tests.engine.opcheck import OpSpec, diff_indices, make_inputs
from tests.engine.prims.test_grads import SPECS

pytestmark = pytest.mark.gpu


def _run(spec: OpSpec, arrays, cot, device: str, static: bool):
    diff = diff_indices(spec, arrays)
    dlrun.set_default_device(device)
    try:
        def fn(c, *xs):
            y = spec.fn(*xs)
            (y * c).sum().backward()
            return y, [xs[i].grad for i in diff]

        f = dlrun.compile(fn) if static else fn
        ts = [dlrun.tensor(a, requires_grad=i in diff, device=device)
              for i, a in enumerate(arrays)]
        dlrun.manual_seed(3)
        y, grads = f(dlrun.tensor(cot, device=device), *ts)
        return y.numpy(), [g.numpy() for g in grads]
    finally:
        dlrun.set_default_device("cpu")


@pytest.mark.parametrize("static", [False, True], ids=["eager", "static"])
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("spec", [s for s in SPECS if s.name != "dropout"], ids=lambda s: s.name)
def test_cuda_matches_numpy(spec: OpSpec, dtype, rtol, static: bool) -> None:
    arrays = make_inputs(spec, dtype=dtype)
    y, _ = _run(spec, arrays, np.zeros(()), "cpu", False)
    cot = np.random.default_rng(1).standard_normal(y.shape).astype(y.dtype)
    y_cpu, g_cpu = _run(spec, arrays, cot, "cpu", static)
    y_gpu, g_gpu = _run(spec, arrays, cot, "cuda", static)
    atol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(y_gpu, y_cpu, rtol=rtol, atol=atol)
    for a, b in zip(g_gpu, g_cpu, strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def test_dropout_on_cuda_keeps_expected_fraction() -> None:
    dlrun.manual_seed(0)
    x = dlrun.ones(1000, 100, device="cuda")
    y = dlrun.functional.dropout(x, 0.3).numpy()
    assert abs((y == 0).mean() - 0.3) < 0.01
    np.testing.assert_allclose(y[y != 0], 1 / 0.7, rtol=1e-6)
