"""Every primitive's `cuda_expr` computes what its NumPy forward computes, checked on the CPU.

The GPU fusion pass composes the CUDA expressions into one kernel whose body is
`out = (O)(expr)` over inputs `T0 in0, T1 in1, ...`; the expression is a second definition of
the op, so it must agree with `forward` on 0, -0, ±inf and NaN too. Here each (primitive,
dtypes, attrs) case becomes one `extern "C"` function in a single C++ translation unit, with that
same body (from `cuda_kernel_source`) in a loop and a prelude giving the device functions the
expressions call CUDA's overloads (`max`/`min` on floats are fmaxf/fmax, `exp(float)` is expf,
...). g++ compiles it once per session; each function runs over a grid of awkward values and is
compared against the forward. The host libm stands in for CUDA's, so this checks the expression's
semantics (which branch, which operand, NaN and signed-zero handling), not the device's ulps.

Every registered primitive with a `cuda_expr` is checked, so a new one is covered without edits
here, except that a primitive with attributes needs sample values in ATTR_SAMPLES (its test fails
until it has them).

Deliberate exception: for `maximum`, `minimum` and `relu` (np.maximum(x, 0)) the sign of a zero
result is not compared. Which of two equal operands NumPy returns for max(0.0, -0.0) depends on
its build (x86 SIMD returns the second operand: maximum(0.0, -0.0) is -0.0, maximum(-0.0, 0.0)
is 0.0; ARM's FMAX returns +0.0; IEEE 754 leaves it open). The expressions follow the x86 NumPy:
ties give the second operand, and relu(-0.0) is +0.0.
"""

from __future__ import annotations

import ctypes
import inspect
import itertools
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import dlrun  # noqa: F401  (importing dlrun registers every primitive)
from dlrun.engine.prims.fused import cuda_kernel_source
from dlrun.engine.prims.registry import C_TYPES, REGISTRY, predicate_rule

FLOAT_VALUES = (0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.5, -2.5, 1e-30, -1e-30, 1e30, -1e30,
                np.inf, -np.inf, np.nan)
FLOATS = (np.dtype("float32"), np.dtype("float64"))
BOOL = np.dtype(bool)

# Sample attribute values for every primitive that has attributes.
ATTR_SAMPLES: dict[str, list[dict[str, Any]]] = {
    "leaky_relu": [{"negative_slope": 0.01}],
    "cast": [{"dtype": np.dtype(name)} for name in ("float32", "float64", "int64", "bool")],
}
# Inputs that are bool rather than the case's float dtype ("f").
INPUT_KINDS: dict[str, tuple[str, ...]] = {"where": ("bool", "f", "f")}
# Input dtypes checked besides all-float32 and all-float64 (predicates also get all-bool).
EXTRA_INPUTS: dict[str, list[tuple[str, ...]]] = {"cast": [("bool",)]}
ZERO_SIGN_FREE = {"maximum", "minimum", "relu"}  # see the module docstring

# Fused chains (the passes/fuse.py program format; as there, every step has the chain's dtype):
# checks that the expressions compose.
CHAINS: dict[str, tuple[tuple[str, ...], tuple]] = {
    "mul_tanh_add_relu": (("float32", "float32"), (
        ("mul", (0, 1), ()), ("tanh", (-1,), ()), ("add", (-1, 0), ()), ("relu", (-1,), ()))),
    "max_relu_grad_sigmoid": (("float64", "float64", "float64"), (
        ("maximum", (0, 1), ()), ("relu_grad", (2, -1), ()), ("sigmoid", (-1,), ()))),
    "cast_mul_sub_abs_pow": (("float64", "float32"), (
        ("cast", (0,), (("dtype", np.dtype("float32")),)), ("mul", (-1, 1), ()),
        ("sub", (1, -1), ()), ("abs", (-1,), ()), ("pow", (-1, 1), ()))),
    "sign_mul_min_neg_div": (("float32", "float32"), (
        ("sign", (0,), ()), ("mul", (-1, 1), ()), ("minimum", (-1, 0), ()), ("neg", (-1,), ()),
        ("div", (1, -1), ()))),
}

PRELUDE = r"""
#include <cmath>
// The device functions the CUDA expressions call, with CUDA's overloads.
namespace dev {
inline float max(float a, float b) { return fmaxf(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline int max(int a, int b) { return a < b ? b : a; }
inline long long max(long long a, long long b) { return a < b ? b : a; }
inline float min(float a, float b) { return fminf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline int min(int a, int b) { return b < a ? b : a; }
inline long long min(long long a, long long b) { return b < a ? b : a; }
inline float abs(float x) { return fabsf(x); }
inline double abs(double x) { return fabs(x); }
inline int abs(int x) { return x < 0 ? -x : x; }
inline long long abs(long long x) { return x < 0 ? -x : x; }
#define DEV_UNARY(name) \
    inline float name(float x) { return name##f(x); } \
    inline double name(double x) { return ::name(x); }
DEV_UNARY(exp) DEV_UNARY(log) DEV_UNARY(sqrt) DEV_UNARY(tanh) DEV_UNARY(erf)
inline float pow(float a, float b) { return powf(a, b); }
inline double pow(double a, double b) { return ::pow(a, b); }
"""


@dataclass
class Case:
    """One generated function: a program over typed flat inputs, and its NumPy reference."""

    name: str  # what a failure reports
    program: tuple
    inputs: list[np.ndarray]
    out_dtype: np.dtype
    zero_sign_free: bool

    def source(self, fn: str) -> str:
        """The extern "C" function running the kernel body over n elements."""
        _, _, body = cuda_kernel_source(self.program, len(self.inputs))
        types = [*(C_TYPES[a.dtype.name] for a in self.inputs), C_TYPES[self.out_dtype.name]]
        typedefs = " ".join(f"typedef {t} T{k};" for k, t in enumerate(types[:-1]))
        loads = " ".join(f"T{k} in{k} = ((const T{k} *)ins[{k}])[i];"
                         for k in range(len(self.inputs)))
        return (f'extern "C" void {fn}(long long n, void **ins, void *res) {{\n'
                f"    {typedefs} typedef {types[-1]} O;\n"
                f"    for (long long i = 0; i < n; ++i) {{\n"
                f"        {loads}\n        O out;\n        {body};\n"
                f"        ((O *)res)[i] = out;\n    }}\n}}\n")


def _arity(name: str) -> int:
    params = list(inspect.signature(REGISTRY[name].forward).parameters.values())[1:]  # no xp
    return sum(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.name != "out"
               for p in params)


def _grid(dtypes: list[np.dtype]) -> list[np.ndarray]:
    """Every combination of the sample values, one flat contiguous array per input."""
    values = [(False, True) if dt == BOOL else FLOAT_VALUES for dt in dtypes]
    cols = zip(*itertools.product(*values), strict=True)
    return [np.array(col, dtype=dt) for col, dt in zip(cols, dtypes, strict=True)]


def _representable(inputs: list[np.ndarray], out_dtype: np.dtype) -> list[np.ndarray]:
    """Drop rows whose float inputs do not fit an integer result: converting NaN, ±inf or an
    out-of-range float to an integer is undefined in C and in NumPy alike."""
    if out_dtype.kind not in "iu":
        return inputs
    info = np.iinfo(out_dtype)
    keep = np.ones(len(inputs[0]), dtype=bool)
    for a in inputs:
        if a.dtype.kind == "f":
            with np.errstate(invalid="ignore"):
                keep &= np.isfinite(a) & (a > info.min) & (a < info.max)
    return [a[keep] for a in inputs]


def _input_dtypes(name: str) -> list[list[np.dtype]]:
    kinds = INPUT_KINDS.get(name, ("f",) * _arity(name))
    cases = [[dt if k == "f" else np.dtype(k) for k in kinds] for dt in FLOATS]
    if REGISTRY[name].shape_rule is predicate_rule:
        cases.append([BOOL] * len(kinds))
    cases += [[np.dtype(k) for k in extra] for extra in EXTRA_INPUTS.get(name, [])]
    return cases


def _prim_cases(name: str) -> list[Case]:
    prim = REGISTRY[name]
    cases = []
    for attrs in ATTR_SAMPLES.get(name, [{}]) if prim.attr_names else [{}]:
        for dtypes in _input_dtypes(name):
            inputs = _grid(dtypes)
            out_dtype = np.dtype(prim.shape_rule(*inputs, **attrs)[1])
            program = ((name, tuple(range(len(inputs))), tuple(attrs.items())),)
            label = f"{name}({', '.join(dt.name for dt in dtypes)}"
            label += "".join(f", {k}={v}" for k, v in attrs.items()) + ")"
            cases.append(Case(label, program, _representable(inputs, out_dtype), out_dtype,
                              name in ZERO_SIGN_FREE))
    return cases


def _chain_case(name: str) -> Case:
    dtypes, program = CHAINS[name]
    inputs = _grid([np.dtype(d) for d in dtypes])
    out_dtype = np.dtype(REGISTRY["fused"].shape_rule(*inputs, program=program)[1])
    for k in range(len(program)):  # the fusion pass only chains steps of the final dtype
        step = REGISTRY["fused"].shape_rule(*inputs, program=program[:k + 1])[1]
        assert step == out_dtype, f"chain {name}: step {k} gives {step}, the chain {out_dtype}"
    return Case(f"chain {name}", program, inputs, out_dtype,
                any(op in ZERO_SIGN_FREE for op, _, _ in program))


CHECKED = sorted(n for n, p in REGISTRY.items() if p.cuda_expr is not None)


def _missing_attrs(name: str) -> str | None:
    """Why the primitive's attributes cannot be sampled, or None when they can."""
    prim = REGISTRY[name]
    if not prim.attr_names:
        return None
    samples = ATTR_SAMPLES.get(name)
    if not samples:
        return (f"primitive {name!r} has attributes {prim.attr_names} but no sample values: "
                f"add an entry to ATTR_SAMPLES in {__name__} so its cuda_expr is checked")
    for attrs in samples:
        if set(attrs) != set(prim.attr_names):
            return (f"ATTR_SAMPLES[{name!r}] gives {sorted(attrs)}, but the primitive's "
                    f"attributes are {sorted(prim.attr_names)}")
    return None


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[Case, Any]]]:
    """Every case compiled into one shared library: {primitive or chain: [(case, function)]}."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not installed")
    groups = {n: _prim_cases(n) for n in CHECKED if _missing_attrs(n) is None}
    groups.update({f"chain:{n}": [_chain_case(n)] for n in CHAINS})
    flat = [case for cases in groups.values() for case in cases]
    src = PRELUDE + "".join(c.source(f"case_{k}") for k, c in enumerate(flat)) + "}\n"
    folder = tmp_path_factory.mktemp("cuda_expr")
    (folder / "cases.cpp").write_text(src)
    cmd = [gxx, "-std=c++17", "-O1", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC",
           "-w", "-o", str(folder / "cases.so"), str(folder / "cases.cpp")]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"the CUDA expressions do not compile as C++ ({folder / 'cases.cpp'}):\n"
                    f"{done.stderr[-4000:]}")
    lib = ctypes.CDLL(str(folder / "cases.so"))
    fns = iter(getattr(lib, f"case_{k}") for k in range(len(flat)))
    return {n: [(c, next(fns)) for c in cases] for n, cases in groups.items()}


def _run_c(fn: Any, case: Case) -> np.ndarray:
    out = np.empty(len(case.inputs[0]), dtype=case.out_dtype)
    ptrs = (ctypes.c_void_p * len(case.inputs))(*(a.ctypes.data for a in case.inputs))
    fn(ctypes.c_longlong(out.size), ptrs, ctypes.c_void_p(out.ctypes.data))
    return out


def _expected(case: Case) -> np.ndarray:
    with np.errstate(all="ignore"):
        if len(case.program) == 1:
            (op, _, attrs), = case.program
            return np.asarray(REGISTRY[op].forward(np, *case.inputs, **dict(attrs)))
        return np.asarray(REGISTRY["fused"].forward(np, *case.inputs, program=case.program))


def _mismatches(want: np.ndarray, got: np.ndarray, zero_sign_free: bool) -> np.ndarray:
    """Mask of elements where the expression's result disagrees with NumPy's."""
    if want.dtype.kind not in "fc":
        return want != got
    rtol = 1e-6 if want.dtype == np.float32 else 1e-12
    atol = np.finfo(want.dtype).tiny  # room for the last ulp of a transcendental near 0
    with np.errstate(all="ignore"):
        finite = np.isfinite(want)
        close = np.abs(got - want) <= atol + rtol * np.abs(want)
        bad = np.isnan(want) != np.isnan(got)
        bad |= np.isinf(want) & (got != want)
        bad |= finite & ~(np.isfinite(got) & close)
        if not zero_sign_free:
            bad |= (want == 0) & (got == 0) & (np.signbit(want) != np.signbit(got))
    return bad


def _report(case: Case, want: np.ndarray, got: np.ndarray, bad: np.ndarray) -> str:
    body = cuda_kernel_source(case.program, len(case.inputs))[2]
    lines = [f"{case.name}: {int(bad.sum())} of {bad.size} elements disagree with NumPy; "
             f"kernel body {body!r}"]
    for i in np.flatnonzero(bad)[:12]:
        args = ", ".join(repr(a[i].item()) for a in case.inputs)
        lines.append(f"  inputs ({args}): numpy {want[i].item()!r}, cuda_expr {got[i].item()!r}")
    return "\n".join(lines)


def _check(cases: list[tuple[Case, Any]]) -> None:
    failures = []
    for case, fn in cases:
        want = _expected(case)
        assert want.dtype == case.out_dtype, (
            f"{case.name}: forward gives {want.dtype}, the shape rule says {case.out_dtype}")
        got = _run_c(fn, case)
        bad = _mismatches(want, got, case.zero_sign_free)
        if bad.any():
            failures.append(_report(case, want, got, bad))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", CHECKED)
def test_cuda_expr_matches_numpy_forward(name: str, compiled: dict) -> None:
    missing = _missing_attrs(name)
    if missing is not None:
        pytest.fail(missing)
    _check(compiled[name])


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_composed_cuda_exprs_match_the_fused_forward(name: str, compiled: dict) -> None:
    assert all(REGISTRY[op].fusable for op, _, _ in CHAINS[name][1])
    _check(compiled[f"chain:{name}"])


def test_attr_samples_name_registered_primitives() -> None:
    stale = sorted(set(ATTR_SAMPLES) - set(CHECKED))
    assert not stale, f"ATTR_SAMPLES names primitives without a cuda_expr: {stale}"
