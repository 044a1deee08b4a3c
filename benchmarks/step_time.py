"""Eager vs static per-step time of small training steps (median over many steps after warm-up).

    python benchmarks/step_time.py [--steps 200] [--warmup 20]

Each workload is one synchronous SGD training step (forward, loss, backward, update) on fixed
synthetic data; both modes run in this process, interleaved in rounds, so the ratio is measured
under the same conditions.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

import dlrun
from dlrun import functional as F


def _params(rng: np.random.Generator, sizes: list[int]) -> list[dlrun.Tensor]:
    out = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        bound = 1 / np.sqrt(a)
        out.append(dlrun.tensor(rng.uniform(-bound, bound, (b, a)), dtype="float32",
                                requires_grad=True))
        out.append(dlrun.tensor(rng.uniform(-bound, bound, b), dtype="float32",
                                requires_grad=True))
    return out


def make_step(params: list[dlrun.Tensor], loss_fn: Callable, lr: float) -> Callable:
    def step(x, y):
        loss = loss_fn(x, y)
        loss.backward()
        with dlrun.no_grad():
            for p in params:
                p.sub_(p.grad * lr)
                p.grad = None
        return loss

    return step


def workload(name: str) -> tuple[list[dlrun.Tensor], Callable, dlrun.Tensor, dlrun.Tensor]:
    rng = np.random.default_rng(0)
    if name == "linreg":
        params = _params(rng, [13, 1])
        x = dlrun.tensor(rng.standard_normal((256, 13)), dtype="float32")
        y = dlrun.tensor(rng.standard_normal((256, 1)), dtype="float32")
        return params, lambda a, b: F.mse_loss(F.linear(a, *params), b), x, y
    if name == "mlp":
        params = _params(rng, [784, 128, 10])
        x = dlrun.tensor(rng.standard_normal((64, 784)), dtype="float32")
        y = dlrun.tensor(rng.integers(0, 10, 64))
        w1, b1, w2, b2 = params

        def loss(a, b):
            return F.cross_entropy(F.linear(F.relu(F.linear(a, w1, b1)), w2, b2), b)

        return params, loss, x, y
    raise ValueError(name)


def measure(name: str, steps: int, warmup: int) -> dict[str, float]:
    times: dict[str, list[float]] = {"eager": [], "static": []}
    fns = {}
    for mode in times:
        params, loss_fn, x, y = workload(name)
        step = make_step(params, loss_fn, 0.01)
        fns[mode] = (dlrun.compile(step) if mode == "static" else step, x, y)
    for fn, x, y in fns.values():
        for _ in range(warmup):
            fn(x, y)
    rounds = 10
    for _ in range(rounds):
        for mode, (fn, x, y) in fns.items():
            for _ in range(steps // rounds):
                t0 = time.perf_counter()
                fn(x, y)
                times[mode].append(time.perf_counter() - t0)
    eager = statistics.median(times["eager"]) * 1e3
    static = statistics.median(times["static"]) * 1e3
    return {"eager_ms": eager, "static_ms": static, "speedup": eager / static}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--workloads", nargs="*", default=["linreg", "mlp"])
    args = parser.parse_args()
    print(f"{'workload':<10} {'eager ms':>10} {'static ms':>10} {'speedup':>8}")
    for name in args.workloads:
        r = measure(name, args.steps, args.warmup)
        print(f"{name:<10} {r['eager_ms']:>10.3f} {r['static_ms']:>10.3f} {r['speedup']:>7.2f}x")


if __name__ == "__main__":
    main()
