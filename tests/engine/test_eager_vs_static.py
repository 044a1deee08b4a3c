"""Static (dlrun.compile) forward values and gradients equal eager, for every op spec."""

from __future__ import annotations

import numpy as np
import pytest

import dlrun
from tests.engine.opcheck import OpSpec, diff_indices, eager_value_and_grads, make_inputs
from tests.engine.prims.test_grads import SPECS


def static_value_and_grads(spec: OpSpec, arrays: list[np.ndarray], cot: np.ndarray,
                           passes: bool = True) -> tuple[np.ndarray, list[np.ndarray]]:
    diff = diff_indices(spec, arrays)

    def fn(c, *xs):
        y = spec.fn(*xs)
        (y * c).sum().backward()
        return y, [xs[i].grad for i in diff]

    compiled = dlrun.compile(fn, passes=passes)
    ts = [dlrun.tensor(a, requires_grad=i in diff) for i, a in enumerate(arrays)]
    dlrun.manual_seed(3)  # the dropout spec draws after seeding 3 (a Python side effect of fn
    y, grads = compiled(dlrun.tensor(cot), *ts)  # that only runs while tracing)
    dlrun.manual_seed(3)
    y2, grads2 = compiled(dlrun.tensor(cot), *ts)  # the replayed plan, not the trace
    assert compiled.trace_count == 1
    np.testing.assert_array_equal(y.numpy(), y2.numpy())
    return y2.numpy(), [g.numpy() for g in grads2]


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-5)])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_static_matches_eager(spec: OpSpec, dtype, rtol) -> None:
    arrays = make_inputs(spec, dtype=dtype)
    y_e, _ = eager_value_and_grads(spec, arrays, None)
    cot = np.random.default_rng(1).standard_normal(y_e.shape).astype(y_e.dtype)
    y_e, g_e = eager_value_and_grads(spec, arrays, cot)
    y_s, g_s = static_value_and_grads(spec, arrays, cot)
    atol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(y_s, y_e, rtol=rtol, atol=atol)
    assert len(g_s) == len(g_e)
    for a, b in zip(g_s, g_e, strict=True):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_all_passes_on_equals_all_passes_off(spec: OpSpec) -> None:
    arrays = make_inputs(spec)
    y_e, _ = eager_value_and_grads(spec, arrays, None)
    cot = np.random.default_rng(2).standard_normal(y_e.shape)
    y_on, g_on = static_value_and_grads(spec, arrays, cot, passes=True)
    y_off, g_off = static_value_and_grads(spec, arrays, cot, passes=False)
    np.testing.assert_allclose(y_on, y_off, rtol=1e-12, atol=1e-14)
    for a, b in zip(g_on, g_off, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
