"""Is data preparation a bottleneck? Time the DataLoader per batch against a training step.

One epoch of MNIST-shaped batching (N x 1 x 28 x 28 float32, batch 64, shuffled) is timed
batch by batch; the median after a warm-up is printed beside the median of a hand-written
NumPy MLP 784-128-10 step (forward, softmax cross-entropy, backward, SGD) on batches of the
same size, a stand-in for the cheapest real training step.

    python benchmarks/data_loader.py [--batch-size 64] [--mnist-root DIR] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dlrun.backend import synchronize  # noqa: E402
from dlrun.data import DataLoader, mnist  # noqa: E402


def time_loader(loader: DataLoader, warmup: int) -> np.ndarray:
    """Seconds per batch over one epoch, after `warmup` batches (device synchronised)."""
    times = []
    it = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            next(it)
        except StopIteration:
            break
        synchronize(loader.device)
        times.append(time.perf_counter() - t0)
    return np.array(times[warmup:])


class NumpyMLP:
    """784-128-10 ReLU MLP with softmax cross-entropy and plain SGD, all in float32."""

    def __init__(self, seed: int = 0, lr: float = 0.1) -> None:
        rng = np.random.default_rng(seed)
        self.w1 = (rng.standard_normal((784, 128)) * np.sqrt(2 / 784)).astype(np.float32)
        self.b1 = np.zeros(128, np.float32)
        self.w2 = (rng.standard_normal((128, 10)) * np.sqrt(2 / 128)).astype(np.float32)
        self.b2 = np.zeros(10, np.float32)
        self.lr = np.float32(lr)

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One forward + backward + SGD update; returns the mean loss."""
        n = len(x)
        h_pre = x @ self.w1 + self.b1
        h = np.maximum(h_pre, 0)
        logits = h @ self.w2 + self.b2
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        p = e / e.sum(axis=1, keepdims=True)
        loss = -float(np.log(p[np.arange(n), y] + 1e-12).mean())
        d_logits = p
        d_logits[np.arange(n), y] -= 1
        d_logits /= n
        g_w2 = h.T @ d_logits
        g_b2 = d_logits.sum(axis=0)
        d_h = d_logits @ self.w2.T
        d_h[h_pre <= 0] = 0
        g_w1 = x.T @ d_h
        g_b1 = d_h.sum(axis=0)
        self.w1 -= self.lr * g_w1
        self.b1 -= self.lr * g_b1
        self.w2 -= self.lr * g_w2
        self.b2 -= self.lr * g_b2
        return loss


def time_steps(x: np.ndarray, y: np.ndarray, batch: int, steps: int, warmup: int) -> tuple:
    """Seconds per MLP step over `steps` batches (after `warmup`), and the last loss."""
    model = NumpyMLP()
    loader = DataLoader(x, y, batch, shuffle=True, seed=1, drop_last=True, x_shape=(784,))
    batches = []
    for xb, yb in loader:
        batches.append((xb, yb))
        if len(batches) == steps + warmup:
            break
    times = []
    loss = float("nan")
    for xb, yb in batches:
        t0 = time.perf_counter()
        loss = model.step(xb, yb)
        times.append(time.perf_counter() - t0)
    return np.array(times[warmup:]), loss


def fmt(t: np.ndarray) -> str:
    return (
        f"median {np.median(t) * 1e6:8.1f} us   p90 {np.percentile(t, 90) * 1e6:8.1f} us   "
        f"({len(t)} batches)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--n", type=int, default=60000, help="samples (synthetic data)")
    ap.add_argument("--mnist-root", default=None, help="use the real MNIST from this folder")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--steps", type=int, default=500)
    args = ap.parse_args()

    if args.mnist_root:
        bundle = mnist(args.mnist_root, val_fraction=0.0)
        x, y = bundle.train.x, bundle.train.y
        source = f"real MNIST train ({args.mnist_root})"
    else:
        rng = np.random.default_rng(0)
        x = rng.random((args.n, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, size=args.n).astype(np.int64)
        source = "random MNIST-shaped data"
    bs = args.batch_size
    print(f"data: {source}, x {x.shape} {x.dtype}, batch {bs}")
    print(
        f"host: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"numpy {np.__version__}, device {args.device}"
    )
    print()

    rows = []
    for label, kwargs in [
        ("loader, shuffled (default)", {}),
        ("loader, shuffled, reused buffers", {"reuse_buffers": True}),
        ("loader, in order (views)", {"shuffle": False}),
    ]:
        opts = {"shuffle": True, "seed": 0, **kwargs}
        loader = DataLoader(x, y, bs, device=args.device, **opts)
        time_loader(loader, 0)  # one untimed epoch: page in the arrays
        t = time_loader(loader, args.warmup)
        rows.append((label, t))
        print(f"{label:36s} {fmt(t)}")

    step_t, loss = time_steps(x, y, bs, args.steps, args.warmup)
    print(f"{'MLP 784-128-10 step (NumPy, CPU)':36s} {fmt(step_t)}   loss {loss:.3f}")
    print()
    step = float(np.median(step_t))
    for label, t in rows:
        load = float(np.median(t))
        ratio = f"{load / step:6.1%} of a training step  (step/load = {step / load:.1f}x)"
        print(f"{label:36s} {ratio}")
    epoch = float(np.sum(rows[0][1])) * len(x) / (len(rows[0][1]) * bs)
    print(f"\none epoch of default batching: ~{epoch * 1e3:.0f} ms for {len(x)} samples")


if __name__ == "__main__":
    main()
