"""Every primitive's `cpu_expr` computes what its NumPy forward computes, as a compiled kernel.

The cases are test_cuda_expr.py's (every sample value, NaN and infinities included, every dtype
combination, and the composed chains), rendered by static/cpu_kernels.py and compiled by Numba.
float64 runs `math`'s exact functions (rtol 1e-12); float32 runs the vectorizable polynomials of
engine/vecmath.py, within 1e-6 relative or absolute of NumPy (a few float32 ulp).
"""

from __future__ import annotations

import numpy as np
import pytest

from dlrun.engine.prims.registry import REGISTRY
from dlrun.engine.static import cpu_kernels
from tests.engine.prims.test_cuda_expr import (
    CHAINS,
    Case,
    _chain_case,
    _expected,
    _mismatches,
    _missing_attrs,
    _prim_cases,
)

pytest.importorskip("numba")

CHECKED = sorted(n for n, p in REGISTRY.items() if p.cpu_expr is not None)


def _run(case: Case) -> np.ndarray:
    def numpy_chain(*ext, out):
        raise AssertionError(f"{case.name}: the kernel fell back to NumPy")

    kernel = cpu_kernels.chain_kernel(case.program, tuple(case.inputs), numpy_chain)
    assert kernel is not None, f"{case.name}: no kernel ({cpu_kernels.STATS.fallbacks[-1:]})"
    return kernel(*case.inputs)


def _check(cases: list[Case]) -> None:
    failures = []
    for case in cases:
        want = _expected(case)
        got = _run(case)
        assert got.dtype == want.dtype, f"{case.name}: kernel gives {got.dtype}, not {want.dtype}"
        bad = _mismatches(want, got, case.zero_sign_free)
        if want.dtype == np.float32:  # the float32 polynomials: a few ulp, absolute near 0
            with np.errstate(all="ignore"):
                near = np.abs(got.astype(np.float64) - want) <= 1e-6 * np.maximum(1, abs(want))
            bad &= ~(near & np.isfinite(want))
        for i in np.flatnonzero(bad)[:8]:
            args = ", ".join(repr(a[i].item()) for a in case.inputs)
            failures.append(f"{case.name}({args}): numpy {want[i].item()!r}, "
                            f"kernel {got[i].item()!r}")
    assert not failures, "\n".join(failures)


@pytest.fixture(autouse=True)
def _kernel_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    monkeypatch.setenv("DLRUN_KERNEL_CACHE", str(tmp_path_factory.getbasetemp() / "kernels"))


@pytest.mark.parametrize("name", CHECKED)
def test_cpu_expr_matches_numpy_forward(name: str) -> None:
    missing = _missing_attrs(name)
    if missing is not None:
        pytest.fail(missing)
    _check(_prim_cases(name))


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_composed_cpu_exprs_match_the_fused_forward(name: str) -> None:
    _check([_chain_case(name)])


def test_every_fusable_primitive_has_a_cpu_expr() -> None:
    missing = sorted(n for n, p in REGISTRY.items() if p.fusable and p.cpu_expr is None)
    assert not missing, f"fusable primitives without cpu_expr (they stay NumPy calls): {missing}"
