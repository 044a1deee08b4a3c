"""Shared op checker: forward against NumPy references, gradients against central differences."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import dlrun


@dataclass
class Int:
    """An integer (index) argument: values in [0, high) of `shape`, never differentiated."""

    high: int
    shape: tuple[int, ...]


@dataclass
class OpSpec:
    name: str
    fn: Callable[..., dlrun.Tensor]
    args: list[Any]  # shapes (random normal floats), np.ndarray (used as is), or Int
    ref: Callable[..., np.ndarray] | None = None
    positive: bool = False  # draw floats from [0.5, 2) instead of N(0, 1)
    eps: float = 1e-6
    rtol: float = 1e-6
    atol: float = 1e-8
    nondiff: tuple[int, ...] = field(default_factory=tuple)  # float args not differentiated

    def __repr__(self) -> str:
        return self.name


def make_inputs(spec: OpSpec, dtype: Any = np.float64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for a in spec.args:
        if isinstance(a, Int):
            out.append(rng.integers(0, a.high, size=a.shape).astype(np.int64))
        elif isinstance(a, np.ndarray):
            out.append(a.astype(dtype) if a.dtype.kind == "f" else a)
        elif spec.positive:
            out.append(rng.uniform(0.5, 2.0, size=a).astype(dtype))
        else:
            out.append(rng.standard_normal(a).astype(dtype))
    return out


def diff_indices(spec: OpSpec, arrays: list[np.ndarray]) -> list[int]:
    return [i for i, a in enumerate(arrays) if a.dtype.kind == "f" and i not in spec.nondiff]


def eager_value_and_grads(
    spec: OpSpec, arrays: list[np.ndarray], cotangent: np.ndarray | None
) -> tuple[np.ndarray, list[np.ndarray]]:
    diff = diff_indices(spec, arrays)
    ts = [dlrun.tensor(a, requires_grad=i in diff) for i, a in enumerate(arrays)]
    y = spec.fn(*ts)
    if cotangent is None:
        return y.numpy(), []
    (y * dlrun.tensor(cotangent)).sum().backward()
    return y.numpy(), [ts[i].grad.numpy() for i in diff]


def numeric_grads(
    spec: OpSpec, arrays: list[np.ndarray], cotangent: np.ndarray
) -> list[np.ndarray]:
    """Central differences of sum(f(x) * cotangent) for each differentiable input."""

    def f(*xs: np.ndarray) -> float:
        with dlrun.no_grad():
            y = spec.fn(*[dlrun.tensor(x) for x in xs]).numpy()
        return float(np.sum(y * cotangent))

    grads = []
    for i in diff_indices(spec, arrays):
        x = arrays[i]
        g = np.zeros_like(x)
        for k in range(x.size):
            orig = x.flat[k]
            x.flat[k] = orig + spec.eps
            plus = f(*arrays)
            x.flat[k] = orig - spec.eps
            minus = f(*arrays)
            x.flat[k] = orig
            g.flat[k] = (plus - minus) / (2 * spec.eps)
        grads.append(g)
    return grads


def check_gradients(spec: OpSpec) -> None:
    """Analytic (eager) gradients of sum(f(x) * cotangent) equal central differences."""
    arrays = make_inputs(spec)
    y, _ = eager_value_and_grads(spec, arrays, None)
    cot = np.random.default_rng(1).standard_normal(y.shape)
    _, analytic = eager_value_and_grads(spec, arrays, cot)
    numeric = numeric_grads(spec, arrays, cot)
    assert len(analytic) == len(numeric) > 0
    for a, n in zip(analytic, numeric, strict=True):
        np.testing.assert_allclose(a, n, rtol=spec.rtol, atol=spec.atol)
