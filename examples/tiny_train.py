"""A tiny end-to-end example: fit a 2-layer MLP to a noisy sine on dlrun's engine."""

from __future__ import annotations

import numpy as np

import dlrun
from dlrun import functional as F


def main() -> None:
    dlrun.manual_seed(0)
    rng = np.random.default_rng(0)
    x_np = rng.uniform(-3, 3, size=(256, 1)).astype(np.float32)
    y_np = (np.sin(x_np) + 0.05 * rng.standard_normal(x_np.shape)).astype(np.float32)
    x, y = dlrun.tensor(x_np), dlrun.tensor(y_np)

    w1 = (dlrun.randn(32, 1) * 1.0).requires_grad_()
    b1 = dlrun.zeros(32, requires_grad=True)
    w2 = (dlrun.randn(1, 32) * (1 / 32**0.5)).requires_grad_()
    b2 = dlrun.zeros(1, requires_grad=True)
    params = [w1, b1, w2, b2]

    def step(xb: dlrun.Tensor, yb: dlrun.Tensor) -> dlrun.Tensor:
        loss = F.mse_loss(F.linear(F.tanh(F.linear(xb, w1, b1)), w2, b2), yb)
        loss.backward()
        with dlrun.no_grad():
            for p in params:
                p.sub_(p.grad * 0.02)
                p.grad = None
        return loss

    compiled = dlrun.compile(step)  # static: traced once, then replayed
    for i in range(501):
        loss = compiled(x, y)
        if i % 100 == 0:
            print(f"step {i:4d}  mse {loss.item():.4f}")


if __name__ == "__main__":
    main()
