"""CPU kernels for fused chains: rendering, results against the NumPy chain, the disk cache
(reuse across processes, corrupt entries, concurrent compiles), fallbacks, and plans with and
without Numba computing the same."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import dlrun
from dlrun import functional as F
from dlrun.engine.prims.fused import _chain
from dlrun.engine.static import cpu_kernels

pytest.importorskip("numba")

ROOT = Path(__file__).resolve().parents[3]
GELU_BACKWARD = (("mul", (0, 0), ()), ("mul", (-1, 1), ()), ("exp", (-1,), ()),
                 ("mul", (-1, 2), ()), ("add", (-1, 3), ()))


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "kernels"
    monkeypatch.setenv("DLRUN_KERNEL_CACHE", str(folder))
    cpu_kernels._MADE.clear()
    return folder


def _numpy(program, *xs):
    return _chain(np, program, len(xs), persistent=False)(*xs)


def test_render_indexes_each_input_by_its_broadcast_pattern() -> None:
    x, row, col, s = (np.zeros(sh, np.float32) for sh in ((4, 3, 5), (4, 3, 1), (5,), ()))
    source, out = cpu_kernels.render((("add", (0, 1), ()), ("mul", (-1, 2), ()),
                                      ("sub", (-1, 3), ())), (x, row, col, s))
    assert out.shape == (4, 3, 5) and out.dtype == np.float32
    assert "x0 = e0[i0, i1, i2]" in source and "x1 = e1[i0, i1, 0]" in source
    assert "x2 = e2[i2]" in source and "x3 = item(e3)" in source


def test_float_literals_take_the_data_dtype() -> None:
    x = np.zeros(3, np.float32)
    source, _ = cpu_kernels.render((("sigmoid", (0,), ()),), (x,))
    assert "np.float32(0.5)" in source and " 0.5" not in source.replace("np.float32(0.5)", "")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_matches_the_numpy_chain_with_broadcasting(cache: Path, dtype) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 7, 33)).astype(dtype)
    c1, c2 = rng.standard_normal((7, 1)).astype(dtype), rng.standard_normal(33).astype(dtype)
    half = np.asarray(-0.5, dtype)
    kernel = cpu_kernels.chain_kernel(GELU_BACKWARD, (x, half, c1, c2), None)
    want = _numpy(GELU_BACKWARD, x, half, c1, c2)
    out = np.empty_like(want)
    assert kernel(x, half, c1, c2, out=out) is out
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(out, want, rtol=tol, atol=tol)


def test_output_may_alias_an_input(cache: Path) -> None:
    x = np.linspace(-3, 3, 40, dtype=np.float32).reshape(5, 8)
    want = _numpy((("tanh", (0,), ()), ("mul", (-1, 0), ())), x)
    kernel = cpu_kernels.chain_kernel((("tanh", (0,), ()), ("mul", (-1, 0), ())), (x,), None)
    kernel(x, out=x)
    np.testing.assert_allclose(x, want, rtol=1e-6, atol=1e-7)


def test_unsupported_dtype_falls_back_with_one_warning(cache: Path, caplog) -> None:
    x = np.ones(4, np.float16)
    cpu_kernels.ORIGIN.set("model.py:12")
    with caplog.at_level(logging.WARNING, logger="dlrun.kernels"):
        assert cpu_kernels.chain_kernel((("exp", (0,), ()), ("neg", (-1,), ())), (x,), None) \
            is None
    (record,) = caplog.records
    assert "exp·neg" in record.message and "model.py:12" in record.message
    assert "float16" in record.message


def test_inputs_laid_out_otherwise_still_run_the_kernel(cache: Path) -> None:
    x = np.linspace(-1, 1, 12).reshape(3, 4)
    program = (("exp", (0,), ()), ("add", (-1, 0), ()))
    kernel = cpu_kernels.chain_kernel(program, (x.T,), None)
    np.testing.assert_allclose(kernel(x.T), _numpy(program, x.T), rtol=1e-13)
    assert not cpu_kernels.STATS.fallbacks or "exp·add" not in cpu_kernels.STATS.fallbacks[-1]


def test_a_kernel_failing_on_its_arguments_hands_over_to_numpy_for_good(caplog) -> None:
    program = (("exp", (0,), ()), ("add", (-1, 0), ()))
    x = np.linspace(-1, 1, 12).reshape(3, 4)
    calls = []

    def broken(*args):
        calls.append(1)
        raise TypeError("No matching definition for argument type(s)")

    run = cpu_kernels._runner(broken, cpu_kernels.Aval(x.shape, x.dtype), program,
                              _chain(np, program, 1, persistent=False))
    with caplog.at_level(logging.WARNING, logger="dlrun.kernels"):
        np.testing.assert_allclose(run(x), _numpy(program, x))
        np.testing.assert_allclose(run(x), _numpy(program, x))
    assert len(calls) == 1 and len(caplog.records) == 1
    assert "exp·add" in caplog.records[0].message


_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from dlrun.engine.static import cpu_kernels
    program = (("mul", (0, 0), ()), ("mul", (-1, 1), ()), ("exp", (-1,), ()),
               ("mul", (-1, 2), ()), ("add", (-1, 3), ()))
    x = np.linspace(-2, 2, 64, dtype=np.float32).reshape(8, 8)
    c = np.asarray(-0.5, np.float32)
    kernel = cpu_kernels.chain_kernel(program, (x, c, x, x), None)
    out = kernel(x, c, x, x)
    print(json.dumps({**cpu_kernels.STATS.as_dict(), "sum": float(out.sum())}))
""")


def _child(cache: Path) -> subprocess.Popen:
    env = {**os.environ, "DLRUN_KERNEL_CACHE": str(cache), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", _CHILD], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _result(proc: subprocess.Popen) -> dict:
    import json

    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_a_later_process_loads_the_kernel_from_disk(cache: Path) -> None:
    first = _result(_child(cache))
    second = _result(_child(cache))
    assert (first["compiled"], first["loaded"]) == (1, 0)
    assert (second["compiled"], second["loaded"]) == (0, 1)
    assert first["sum"] == second["sum"]


def test_corrupt_cache_entries_are_rebuilt_not_run(cache: Path) -> None:
    want = _result(_child(cache))
    for f in [*cache.glob("*.py"), *cache.glob("__pycache__/*")]:
        f.write_bytes(b"\x80garbage" if f.suffix != ".py" else b"raise SystemExit(3)\n")
    again = _result(_child(cache))
    assert again["sum"] == want["sum"] and again["compiled"] == 1


def test_processes_compiling_the_same_kernel_at_once_agree(cache: Path) -> None:
    procs = [_child(cache) for _ in range(3)]
    results = [_result(p) for p in procs]
    assert len({r["sum"] for r in results}) == 1
    assert _result(_child(cache))["loaded"] == 1  # and what they left loads


def _gelu_step(x: dlrun.Tensor) -> dlrun.Tensor:
    return (F.gelu(x) * x + F.tanh(x)).sum()


def test_compiled_step_with_kernels_equals_numpy_plan(cache: Path, monkeypatch) -> None:
    monkeypatch.setattr(cpu_kernels, "MIN_KERNEL_WORK", 0)  # kernels for this small chain too
    x = dlrun.tensor(np.linspace(-3, 3, 96).reshape(8, 12))
    with_kernels = dlrun.compile(_gelu_step)(x).numpy()
    assert cpu_kernels.STATS.compiled + cpu_kernels.STATS.loaded + cpu_kernels.STATS.reused
    monkeypatch.setattr(cpu_kernels, "available", lambda: False)
    without = dlrun.compile(_gelu_step)(x).numpy()
    np.testing.assert_allclose(with_kernels, without, rtol=1e-13)


def test_describe_names_numba_and_the_cache(cache: Path) -> None:
    assert "Numba" in cpu_kernels.describe() and str(cache) in cpu_kernels.describe()


def test_small_chains_stay_numpy_calls(cache: Path) -> None:
    """A kernel call costs more than a few NumPy calls on a small array (same bits either way)."""
    small = dlrun.compile(_gelu_step)
    small(dlrun.tensor(np.linspace(-3, 3, 96).reshape(8, 12)))
    lines = small.last.plan.source
    assert "_0(" in lines  # the chain's steps inlined as NumPy calls
    large = dlrun.compile(_gelu_step)
    large(dlrun.tensor(np.linspace(-3, 3, 96 * 256).reshape(96, 256)))
    assert "_0(" not in large.last.plan.source
