"""The NumPy floor: hand-written training steps for the four bench workloads.

No framework: each workload's forward pass, loss, backward pass and optimizer update are written
directly in NumPy (float32 by default), in two variants:

* ``reused`` ("buffers reused"): every temporary is allocated once per batch shape and written
  with ``out=``; parameters, gradients and optimizer state each live in one flat buffer (the
  parameters are views into it), so the update is a handful of in-place ufunc calls over all
  parameters at once. Loops that dispatch one small op at a time (the LSTM's time steps) run over
  views precomputed when the buffers were made.
* ``malloc`` ("default malloc"): the same algorithms written as plain NumPy expressions that
  allocate fresh arrays, with a per-parameter optimizer loop.

Both variants store the parameters in the same layout, chosen for speed (see each class), and
`torch_params()` converts them to PyTorch's layout and order (`benchmarks/torch_ref.py` builds the
same networks, and the tests check one against the other).

The workloads (the shapes are the constructors' defaults):

* ``linreg``: batch 256, 13 features -> Linear(13, 1), MSE, SGD lr 0.01.
* ``mlp``: batch 64, 784 -> Linear(784, 128) -> ReLU -> Linear(128, 10), cross entropy,
  SGD lr 0.01.
* ``cnn``: batch 64 x 1 x 28 x 28; Conv2d(1, 16, 3, padding=1)-ReLU-MaxPool2d(2) ->
  Conv2d(16, 32, 3, padding=1)-ReLU-MaxPool2d(2) -> Flatten -> Linear(1568, 128)-ReLU ->
  Linear(128, 10); cross entropy; SGD momentum 0.9, lr 0.01.
* ``lstm``: vocab 65, batch 32, sequence 64; Embedding(65, 64) -> LSTM(64, 128) ->
  Linear(128, 65) at every step; mean cross entropy over all positions; Adam lr 2e-3.

    floor = make_floor("cnn", "reused")
    x, y = floor.make_batch(np.random.default_rng(0))
    loss = floor.step(x, y)               # one training step, returns the loss (a float)
    loss, grads = floor.loss_and_grads(x, y)   # forward + backward only (grads by name)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

WORKLOADS = ("linreg", "mlp", "cnn", "lstm")
VARIANTS = ("reused", "malloc")


# --------------------------------------------------------------------------- shared pieces


def _flat_views(shapes: dict[str, tuple[int, ...]], dtype: np.dtype
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One zeroed flat buffer and a view of it per name, in order."""
    flat = np.zeros(sum(math.prod(s) for s in shapes.values()), dtype)
    views, off = {}, 0
    for name, shape in shapes.items():
        n = math.prod(shape)
        views[name] = flat[off:off + n].reshape(shape)
        off += n
    return flat, views


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """PyTorch's default Linear/Conv/LSTM init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape)


class _Buffers:
    """A namespace of preallocated arrays (the reused variant's memory plan)."""

    def __init__(self, **arrays: Any) -> None:
        self.__dict__.update(arrays)


class SGD:
    """torch.optim.SGD (momentum buffer = grad on the first step, no dampening/nesterov)."""

    def __init__(self, floor: Floor, lr: float, momentum: float = 0.0) -> None:
        self.floor, self.lr, self.momentum = floor, lr, momentum
        if floor.reuse:
            self.tmp = np.empty_like(floor.flat)
            self.buf = np.zeros_like(floor.flat) if momentum else None  # 0.9*0 + g == g
        else:
            self.bufs: dict[str, np.ndarray] = {}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        f = self.floor
        if f.reuse:
            g = f.gflat
            if self.buf is not None:
                np.multiply(self.buf, self.momentum, out=self.buf)
                np.add(self.buf, g, out=self.buf)
                g = self.buf
            np.multiply(g, self.lr, out=self.tmp)
            np.subtract(f.flat, self.tmp, out=f.flat)
            return
        for name, p in f.params.items():
            d = grads[name]
            if self.momentum:
                buf = self.bufs.get(name)
                d = self.bufs[name] = d.copy() if buf is None else self.momentum * buf + d
            p -= self.lr * d


class Adam:
    """torch.optim.Adam (no weight decay, no amsgrad), PyTorch's formula:
    m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)."""

    def __init__(self, floor: Floor, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.floor, self.lr, self.betas, self.eps, self.t = floor, lr, betas, eps, 0
        if floor.reuse:
            self.m, self.v = np.zeros_like(floor.flat), np.zeros_like(floor.flat)
            self.tmp = np.empty_like(floor.flat)
        else:
            self.ms = {k: np.zeros_like(p) for k, p in floor.params.items()}
            self.vs = {k: np.zeros_like(p) for k, p in floor.params.items()}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        f, (b1, b2), eps = self.floor, self.betas, self.eps
        self.t += 1
        bc1, bc2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        step_size, inv_sqrt_bc2 = self.lr / bc1, 1 / math.sqrt(bc2)
        if f.reuse:
            m, v, tmp, g = self.m, self.v, self.tmp, f.gflat
            np.multiply(m, b1, out=m)
            np.multiply(g, 1 - b1, out=tmp)
            np.add(m, tmp, out=m)
            np.multiply(v, b2, out=v)
            np.multiply(g, g, out=tmp)
            np.multiply(tmp, 1 - b2, out=tmp)
            np.add(v, tmp, out=v)
            np.sqrt(v, out=tmp)
            np.multiply(tmp, inv_sqrt_bc2, out=tmp)
            np.add(tmp, eps, out=tmp)
            np.divide(m, tmp, out=tmp)
            np.multiply(tmp, step_size, out=tmp)
            np.subtract(f.flat, tmp, out=f.flat)
            return
        for name, p in f.params.items():
            g = grads[name]
            m = self.ms[name] = b1 * self.ms[name] + (1 - b1) * g
            v = self.vs[name] = b2 * self.vs[name] + (1 - b2) * g * g
            p -= step_size * m / (np.sqrt(v) * inv_sqrt_bc2 + eps)


def _ce_reused(z: np.ndarray, y: np.ndarray, b: _Buffers) -> float:
    """Mean cross entropy of logits z (N, C) (overwritten) against int labels y (N,); the
    gradient wrt z goes to b.dz. Uses b.ce_m, b.ce_s (N, 1), b.fidx (N,) int, b.rowbase
    (arange(N) * C), b.picked (N,)."""
    n = z.shape[0]
    m, s, dz, fidx, picked = b.ce_m, b.ce_s, b.dz, b.fidx, b.picked
    np.max(z, axis=1, keepdims=True, out=m)
    np.subtract(z, m, out=z)
    np.exp(z, out=dz)
    np.sum(dz, axis=1, keepdims=True, out=s)
    np.add(b.rowbase, y, out=fidx)
    np.take(z.reshape(-1), fidx, out=picked)
    np.log(s, out=m)
    loss = (float(m.sum()) - float(picked.sum())) / n
    np.multiply(s, n, out=s)
    np.divide(dz, s, out=dz)  # softmax / n
    flat = dz.reshape(-1)
    np.take(flat, fidx, out=picked)
    np.subtract(picked, 1.0 / n, out=picked)
    np.put(flat, fidx, picked)
    return loss


def _ce_buffers(n: int, c: int, dtype: np.dtype) -> dict[str, np.ndarray]:
    return dict(ce_m=np.empty((n, 1), dtype), ce_s=np.empty((n, 1), dtype),
                dz=np.empty((n, c), dtype), fidx=np.empty(n, np.intp),
                rowbase=np.arange(n, dtype=np.intp) * c, picked=np.empty(n, dtype))


def _ce_malloc(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross entropy and its gradient wrt the logits, as plain expressions."""
    n = z.shape[0]
    rows = np.arange(n)
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(s[:, 0]) - shifted[rows, y]))
    dz = e / s
    dz[rows, y] -= 1
    return loss, dz / n


class Floor:
    """One workload's hand-written training step; subclasses define the network."""

    name = ""

    def __init__(self, variant: str = "reused", dtype: Any = np.float32, seed: int = 0) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        self.variant, self.reuse, self.dtype = variant, variant == "reused", np.dtype(dtype)
        shapes = self.param_shapes()
        self.flat, self.params = _flat_views(shapes, self.dtype)
        self.gflat, self.grads = _flat_views(shapes, self.dtype)
        rng = np.random.default_rng(seed)
        for name, value in self.init_params(rng).items():
            self.params[name][...] = value
        self.opt = self.make_optimizer()
        self._key: Any = None
        self.b: Any = None

    # subclass hooks
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def init_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def make_optimizer(self) -> SGD | Adam:
        raise NotImplementedError

    def make_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def torch_params(self) -> list[np.ndarray]:
        """The parameters in PyTorch's layout, in the order of the torch_ref model's
        .parameters()."""
        raise NotImplementedError

    def _alloc(self, x: np.ndarray, y: np.ndarray) -> _Buffers:
        raise NotImplementedError

    def _reused(self, x: np.ndarray, y: np.ndarray) -> float:
        raise NotImplementedError

    def _malloc(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        raise NotImplementedError

    # the step
    def loss_and_grads(self, x: np.ndarray, y: np.ndarray
                       ) -> tuple[float, dict[str, np.ndarray]]:
        """Forward + loss + backward; the gradients by parameter name (in the reused variant
        they are views of one flat buffer that the next call overwrites)."""
        if not self.reuse:
            return self._malloc(x, y)
        key = (x.shape, x.dtype, y.shape, y.dtype)
        if key != self._key:
            self.b, self._key = self._alloc(x, y), key
        return self._reused(x, y), self.grads

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One training step (forward, loss, backward, update); returns the loss."""
        loss, grads = self.loss_and_grads(x, y)
        self.opt.step(grads)
        return loss


# --------------------------------------------------------------------------- linreg


class LinRegFloor(Floor):
    """Linear(F, 1), MSE, SGD lr 0.01. Parameters: w (1, F), b (1,)."""

    name = "linreg"

    def __init__(self, variant: str = "reused", dtype: Any = np.float32, seed: int = 0, *,
                 n_features: int = 13, batch: int = 256, lr: float = 0.01) -> None:
        self.n_features, self.batch, self.lr = n_features, batch, lr
        super().__init__(variant, dtype, seed)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"w": (1, self.n_features), "b": (1,)}

    def init_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        f = self.n_features
        return {"w": _uniform(rng, (1, f), f), "b": _uniform(rng, (1,), f)}

    def make_optimizer(self) -> SGD:
        return SGD(self, self.lr)

    def make_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = rng.standard_normal((self.batch, self.n_features)).astype(self.dtype)
        y = (x @ rng.standard_normal((self.n_features, 1)) + 0.1).astype(self.dtype)
        return x, y

    def torch_params(self) -> list[np.ndarray]:
        return [self.params["w"].copy(), self.params["b"].copy()]

    def _alloc(self, x: np.ndarray, y: np.ndarray) -> _Buffers:
        return _Buffers(out=np.empty((x.shape[0], 1), self.dtype))

    def _reused(self, x: np.ndarray, y: np.ndarray) -> float:
        p, g, out = self.params, self.grads, self.b.out
        n = x.shape[0]
        np.matmul(x, p["w"].T, out=out)
        np.add(out, p["b"], out=out)
        np.subtract(out, y.reshape(n, 1), out=out)
        flat = out.reshape(-1)
        loss = float(np.dot(flat, flat)) / n
        np.multiply(out, 2.0 / n, out=out)
        np.matmul(out.T, x, out=g["w"])
        np.sum(out, axis=0, out=g["b"])
        return loss

    def _malloc(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        p, n = self.params, x.shape[0]
        diff = x @ p["w"].T + p["b"] - y.reshape(n, 1)
        loss = float(np.mean(diff * diff))
        dout = diff * (2.0 / n)
        return loss, {"w": dout.T @ x, "b": dout.sum(axis=0)}


# --------------------------------------------------------------------------- mlp


class MLPFloor(Floor):
    """Linear(784, 128) -> ReLU -> Linear(128, 10), cross entropy, SGD lr 0.01.
    Parameters in PyTorch's layout: w1 (128, 784), b1, w2 (10, 128), b2."""

    name = "mlp"

    def __init__(self, variant: str = "reused", dtype: Any = np.float32, seed: int = 0, *,
                 in_features: int = 784, hidden: int = 128, n_classes: int = 10,
                 batch: int = 64, lr: float = 0.01) -> None:
        self.in_features, self.hidden, self.n_classes = in_features, hidden, n_classes
        self.batch, self.lr = batch, lr
        super().__init__(variant, dtype, seed)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        d, h, c = self.in_features, self.hidden, self.n_classes
        return {"w1": (h, d), "b1": (h,), "w2": (c, h), "b2": (c,)}

    def init_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        d, h, c = self.in_features, self.hidden, self.n_classes
        return {"w1": _uniform(rng, (h, d), d), "b1": _uniform(rng, (h,), d),
                "w2": _uniform(rng, (c, h), h), "b2": _uniform(rng, (c,), h)}

    def make_optimizer(self) -> SGD:
        return SGD(self, self.lr)

    def make_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, self.n_classes, self.batch)
        centers = rng.standard_normal((self.n_classes, self.in_features))
        x = centers[y] + rng.standard_normal((self.batch, self.in_features))
        return x.astype(self.dtype), y

    def torch_params(self) -> list[np.ndarray]:
        return [self.params[k].copy() for k in ("w1", "b1", "w2", "b2")]

    def _alloc(self, x: np.ndarray, y: np.ndarray) -> _Buffers:
        n, h, c, dt = x.shape[0], self.hidden, self.n_classes, self.dtype
        return _Buffers(h=np.empty((n, h), dt), mask=np.empty((n, h), bool),
                        dh=np.empty((n, h), dt), z=np.empty((n, c), dt),
                        **_ce_buffers(n, c, dt))

    def _reused(self, x: np.ndarray, y: np.ndarray) -> float:
        p, g, b = self.params, self.grads, self.b
        h, z = b.h, b.z
        np.matmul(x, p["w1"].T, out=h)
        np.add(h, p["b1"], out=h)
        np.maximum(h, 0, out=h)
        np.matmul(h, p["w2"].T, out=z)
        np.add(z, p["b2"], out=z)
        loss = _ce_reused(z, y, b)
        dz, dh = b.dz, b.dh
        np.matmul(dz.T, h, out=g["w2"])
        np.sum(dz, axis=0, out=g["b2"])
        np.matmul(dz, p["w2"], out=dh)
        np.greater(h, 0, out=b.mask)
        np.multiply(dh, b.mask, out=dh)
        np.matmul(dh.T, x, out=g["w1"])
        np.sum(dh, axis=0, out=g["b1"])
        return loss

    def _malloc(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        p = self.params
        h = np.maximum(x @ p["w1"].T + p["b1"], 0)
        z = h @ p["w2"].T + p["b2"]
        loss, dz = _ce_malloc(z, y)
        dh = (dz @ p["w2"]) * (h > 0)
        return loss, {"w1": dh.T @ x, "b1": dh.sum(axis=0), "w2": dz.T @ h,
                      "b2": dz.sum(axis=0)}


# --------------------------------------------------------------------------- cnn


class _Conv:
    """A k x k, stride-1 conv over an NHWC input as im2col + one GEMM (reused buffers).

    The weight and bias are one (O, k*k*C + 1) matrix P (weights in (O, kh, kw, C) order, the
    bias as the last column); the im2col matrix carries a column of ones, so the GEMM adds the
    bias and the weight gradient GEMM yields the bias gradient too. For inputs with few
    channels the columns are built K-major (one contiguous copy per kernel offset), otherwise
    N-major (one strided copy of all windows). The input gradient is col2im: the columns'
    gradient scattered back with k*k shifted adds."""

    def __init__(self, b: int, h: int, w: int, c: int, o: int, k: int, pad: int,
                 dtype: np.dtype, need_dx: bool) -> None:
        ho, wo = h + 2 * pad - k + 1, w + 2 * pad - k + 1
        n, kk = b * ho * wo, k * k * c
        self.xpad = np.zeros((b, h + 2 * pad, w + 2 * pad, c), dtype)  # border stays zero
        self.interior = self.xpad[:, pad:pad + h, pad:pad + w, :]
        if c < 4:
            cols_t = np.empty((kk + 1, n), dtype)
            cols_t[kk] = 1
            dst = cols_t[:kk].reshape(k, k, c, b, ho, wo)
            self.copies = [(dst[i, j], self.xpad[:, i:i + ho, j:j + wo, :].transpose(3, 0, 1, 2))
                           for i in range(k) for j in range(k)]
            self.cols = cols_t.T  # (n, kk + 1), F-ordered: fine for BLAS
        else:
            self.cols = np.empty((n, kk + 1), dtype)
            self.cols[:, kk] = 1
            dst = self.cols[:, :kk].reshape(b, ho, wo, k, k, c)
            s = self.xpad.strides
            src = as_strided(self.xpad, (b, ho, wo, k, k, c), (s[0], s[1], s[2], s[1], s[2], s[3]),
                             writeable=False)
            self.copies = [(dst, src)]
        self.out = np.empty((n, o), dtype)
        self.out4 = self.out.reshape(b, ho, wo, o)
        self.dout = np.empty((n, o), dtype)
        self.dout4 = self.dout.reshape(b, ho, wo, o)
        self.need_dx = need_dx
        if need_dx:
            # col2im with the columns computed per kernel offset: dcols[ij] = dout @ W_ij is
            # an (N, C) block, so each scatter-add reads and writes runs of Wo*C contiguous
            # values instead of C (one (N, k*k*C) GEMM would leave runs of C)
            self.dcols = np.empty((k * k, n, c), dtype)
            self.dx = np.empty((b, h, w, c), dtype)
            self.wslices = [slice(ij * c, (ij + 1) * c) for ij in range(k * k)]
            full, parts = None, []
            for i in range(k):
                for j in range(k):
                    oh0, oh1 = max(0, pad - i), min(ho, h + pad - i)
                    ow0, ow1 = max(0, pad - j), min(wo, w + pad - j)
                    ih0, iw0 = oh0 + i - pad, ow0 + j - pad
                    src = self.dcols[i * k + j].reshape(b, ho, wo, c)[:, oh0:oh1, ow0:ow1, :]
                    pair = (self.dx[:, ih0:ih0 + oh1 - oh0, iw0:iw0 + ow1 - ow0, :], src)
                    if full is None and pair[0].shape == self.dx.shape:
                        full = pair
                    else:
                        parts.append(pair)
            self.col2im_first, self.col2im = full, parts

    def forward(self, p: np.ndarray) -> None:
        for dst, src in self.copies:
            np.copyto(dst, src)
        np.matmul(self.cols, p.T, out=self.out)

    def backward(self, p: np.ndarray, gp: np.ndarray) -> None:
        """gp <- dL/dP from self.dout; self.dx <- dL/d(input) when need_dx."""
        np.matmul(self.dout.T, self.cols, out=gp)
        if not self.need_dx:
            return
        for ws, dcols in zip(self.wslices, self.dcols, strict=True):
            np.matmul(self.dout, p[:, ws], out=dcols)
        if self.col2im_first is None:
            self.dx.fill(0)
        else:
            np.copyto(*self.col2im_first)
        for dst, src in self.col2im:
            np.add(dst, src, out=dst)


class _PoolRelu:
    """relu(maxpool2x2(y)) == maxpool2x2(relu(y)) on NHWC y, computed in that cheaper order
    (the ReLU on the 4x smaller pooled map). The backward pass routes the gradient to every
    window position equal to the max (ties between distinct positions of real-valued data have
    probability zero; positions tied at a ReLU zero get no gradient either way)."""

    def __init__(self, y4: np.ndarray, dy4: np.ndarray, act: np.ndarray) -> None:
        b, h, w, c = y4.shape
        assert h % 2 == 0 and w % 2 == 0, "2x2 max-pool needs even sizes"
        self.views = [y4[:, i::2, j::2, :] for i in (0, 1) for j in (0, 1)]
        self.dviews = [dy4[:, i::2, j::2, :] for i in (0, 1) for j in (0, 1)]
        self.act = act
        self.pool = np.empty((b, h // 2, w // 2, c), y4.dtype)
        self.dpool = np.empty_like(self.pool)
        self.mask = np.empty(self.pool.shape, bool)

    def forward(self) -> None:
        v, pool = self.views, self.pool
        np.maximum(v[0], v[1], out=pool)
        np.maximum(pool, v[2], out=pool)
        np.maximum(pool, v[3], out=pool)
        np.maximum(pool, 0, out=self.act)

    def backward(self, dact: np.ndarray) -> None:
        pool, dpool, mask = self.pool, self.dpool, self.mask
        np.greater(pool, 0, out=mask)
        np.multiply(dact, mask, out=dpool)
        for v, dv in zip(self.views, self.dviews, strict=True):
            np.equal(v, pool, out=mask)
            np.multiply(mask, dpool, out=dv)


class CNNFloor(Floor):
    """Conv(1,16,3,p1)-ReLU-MaxPool2 -> Conv(16,32,3,p1)-ReLU-MaxPool2 -> Flatten ->
    Linear(1568,128)-ReLU -> Linear(128,10); cross entropy; SGD momentum 0.9, lr 0.01.

    Activations are NHWC internally (the NCHW input is transposed once into the first padded
    buffer). Parameters: c1 (16, 3*3*1 + 1), c2 (32, 3*3*16 + 1) (see _Conv), w3 (128, 1568)
    with its columns in (h, w, c) order, b3, w4 (10, 128), b4; torch_params() converts."""

    name = "cnn"

    def __init__(self, variant: str = "reused", dtype: Any = np.float32, seed: int = 0, *,
                 in_channels: int = 1, size: int = 28, channels: tuple[int, int] = (16, 32),
                 kernel_size: int = 3, padding: int = 1, hidden: int = 128,
                 n_classes: int = 10, batch: int = 64, lr: float = 0.01,
                 momentum: float = 0.9) -> None:
        self.cin, self.size, self.channels = in_channels, size, tuple(channels)
        self.k, self.pad, self.hidden, self.n_classes = kernel_size, padding, hidden, n_classes
        self.batch, self.lr, self.momentum = batch, lr, momentum
        s1 = size + 2 * padding - kernel_size + 1
        self.s1, self.s2 = s1, (s1 // 2) + 2 * padding - kernel_size + 1
        self.s3 = self.s2 // 2
        self.flat_features = self.s3 * self.s3 * channels[1]
        super().__init__(variant, dtype, seed)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        (c1, c2), k = self.channels, self.k
        return {"c1": (c1, k * k * self.cin + 1), "c2": (c2, k * k * c1 + 1),
                "w3": (self.hidden, self.flat_features), "b3": (self.hidden,),
                "w4": (self.n_classes, self.hidden), "b4": (self.n_classes,)}

    def init_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        (c1, c2), k, hd, f = self.channels, self.k, self.hidden, self.flat_features
        fan1, fan2 = k * k * self.cin, k * k * c1
        return {"c1": _uniform(rng, (c1, fan1 + 1), fan1),
                "c2": _uniform(rng, (c2, fan2 + 1), fan2),
                "w3": _uniform(rng, (hd, f), f), "b3": _uniform(rng, (hd,), f),
                "w4": _uniform(rng, (self.n_classes, hd), hd),
                "b4": _uniform(rng, (self.n_classes,), hd)}

    def make_optimizer(self) -> SGD:
        return SGD(self, self.lr, self.momentum)

    def make_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, self.n_classes, self.batch)
        shape = (self.cin, self.size, self.size)
        protos = rng.standard_normal((self.n_classes, *shape))
        x = protos[y] + 0.5 * rng.standard_normal((self.batch, *shape))
        return x.astype(self.dtype), y

    def torch_params(self) -> list[np.ndarray]:
        p, k = self.params, self.k
        out = []
        for name, c in (("c1", self.cin), ("c2", self.channels[0])):
            m = p[name]
            o = m.shape[0]
            out += [m[:, :-1].reshape(o, k, k, c).transpose(0, 3, 1, 2).copy(), m[:, -1].copy()]
        w3 = p["w3"].reshape(self.hidden, self.s3, self.s3, self.channels[1])
        out += [w3.transpose(0, 3, 1, 2).reshape(self.hidden, -1).copy(), p["b3"].copy(),
                p["w4"].copy(), p["b4"].copy()]
        return out

    def _alloc(self, x: np.ndarray, y: np.ndarray) -> _Buffers:
        n, dt, (c1, c2) = x.shape[0], self.dtype, self.channels
        s, k, pad, hd, nc = self.size, self.k, self.pad, self.hidden, self.n_classes
        conv1 = _Conv(n, s, s, self.cin, c1, k, pad, dt, need_dx=False)
        h2 = self.s1 // 2
        conv2 = _Conv(n, h2, h2, c1, c2, k, pad, dt, need_dx=True)
        act = np.empty((n, self.s3, self.s3, c2), dt)
        pool1 = _PoolRelu(conv1.out4, conv1.dout4, conv2.interior)
        pool2 = _PoolRelu(conv2.out4, conv2.dout4, act)
        return _Buffers(conv1=conv1, conv2=conv2, pool1=pool1, pool2=pool2, act=act,
                        act_flat=act.reshape(n, -1), dact=np.empty((n, self.flat_features), dt),
                        h3=np.empty((n, hd), dt), dh3=np.empty((n, hd), dt),
                        mask=np.empty((n, hd), bool), z=np.empty((n, nc), dt),
                        **_ce_buffers(n, nc, dt))

    def _reused(self, x: np.ndarray, y: np.ndarray) -> float:
        p, g, b = self.params, self.grads, self.b
        np.copyto(b.conv1.interior, x.transpose(0, 2, 3, 1))
        b.conv1.forward(p["c1"])
        b.pool1.forward()  # relu(pool) straight into conv2's padded input
        b.conv2.forward(p["c2"])
        b.pool2.forward()
        h3, z = b.h3, b.z
        np.matmul(b.act_flat, p["w3"].T, out=h3)
        np.add(h3, p["b3"], out=h3)
        np.maximum(h3, 0, out=h3)
        np.matmul(h3, p["w4"].T, out=z)
        np.add(z, p["b4"], out=z)
        loss = _ce_reused(z, y, b)
        dz, dh3 = b.dz, b.dh3
        np.matmul(dz.T, h3, out=g["w4"])
        np.sum(dz, axis=0, out=g["b4"])
        np.matmul(dz, p["w4"], out=dh3)
        np.greater(h3, 0, out=b.mask)
        np.multiply(dh3, b.mask, out=dh3)
        np.matmul(dh3.T, b.act_flat, out=g["w3"])
        np.sum(dh3, axis=0, out=g["b3"])
        np.matmul(dh3, p["w3"], out=b.dact)
        b.pool2.backward(b.dact.reshape(b.act.shape))  # -> conv2.dout
        b.conv2.backward(p["c2"], g["c2"])  # -> conv2.dx
        b.pool1.backward(b.conv2.dx)  # -> conv1.dout
        b.conv1.backward(p["c1"], g["c1"])
        return loss

    # the malloc variant: the same algorithm as plain expressions
    def _conv_fwd(self, xh: np.ndarray, pm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k, pad = self.k, self.pad
        xp = np.pad(xh, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        win = sliding_window_view(xp, (k, k), axis=(1, 2))  # (B, Ho, Wo, C, k, k)
        b, ho, wo = win.shape[:3]
        cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(b * ho * wo, -1)
        out = cols @ pm[:, :-1].T + pm[:, -1]
        return out.reshape(b, ho, wo, -1), cols

    def _conv_bwd(self, dout: np.ndarray, cols: np.ndarray, pm: np.ndarray, shape: tuple,
                  need_dx: bool) -> tuple[np.ndarray, np.ndarray | None]:
        d2 = dout.reshape(-1, dout.shape[-1])
        gp = np.concatenate([d2.T @ cols, d2.sum(axis=0)[:, None]], axis=1)
        if not need_dx:
            return gp, None
        k, pad = self.k, self.pad
        b, h, w, c = shape
        ho, wo = dout.shape[1:3]
        dcols = (d2 @ pm[:, :-1]).reshape(b, ho, wo, k, k, c)
        dxp = np.zeros((b, h + 2 * pad, w + 2 * pad, c), dout.dtype)
        for i in range(k):
            for j in range(k):
                dxp[:, i:i + ho, j:j + wo, :] += dcols[:, :, :, i, j, :]
        return gp, dxp[:, pad:pad + h, pad:pad + w, :]

    @staticmethod
    def _pool_fwd(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        b, h, w, c = y.shape
        pool = y.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
        return pool, np.maximum(pool, 0)

    @staticmethod
    def _pool_bwd(y: np.ndarray, pool: np.ndarray, dact: np.ndarray) -> np.ndarray:
        b, h, w, c = y.shape
        dpool = dact * (pool > 0)
        y6 = y.reshape(b, h // 2, 2, w // 2, 2, c)
        mask = y6 == pool[:, :, None, :, None, :]
        return (mask * dpool[:, :, None, :, None, :]).reshape(b, h, w, c)

    def _malloc(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        p = self.params
        x1 = x.transpose(0, 2, 3, 1)
        y1, cols1 = self._conv_fwd(x1, p["c1"])
        pool1, a1 = self._pool_fwd(y1)
        y2, cols2 = self._conv_fwd(a1, p["c2"])
        pool2, a2 = self._pool_fwd(y2)
        af = a2.reshape(a2.shape[0], -1)
        h3 = np.maximum(af @ p["w3"].T + p["b3"], 0)
        z = h3 @ p["w4"].T + p["b4"]
        loss, dz = _ce_malloc(z, y)
        dh3 = (dz @ p["w4"]) * (h3 > 0)
        da2 = (dh3 @ p["w3"]).reshape(a2.shape)
        dy2 = self._pool_bwd(y2, pool2, da2)
        gc2, da1 = self._conv_bwd(dy2, cols2, p["c2"], a1.shape, True)
        dy1 = self._pool_bwd(y1, pool1, da1)
        gc1, _ = self._conv_bwd(dy1, cols1, p["c1"], x1.shape, False)
        return loss, {"c1": gc1, "c2": gc2, "w3": dh3.T @ af, "b3": dh3.sum(axis=0),
                      "w4": dz.T @ h3, "b4": dz.sum(axis=0)}


# --------------------------------------------------------------------------- lstm


class LSTMFloor(Floor):
    """Embedding(65,64) -> LSTM(64,128) -> Linear(128,65) at every step; mean cross entropy over
    all B*T positions; Adam lr 2e-3. Parameters in PyTorch's layout and gate order (i, f, g, o):
    emb (V, D), w_ih (4H, D), w_hh (4H, H), b_ih, b_hh (4H,), w_out (V, H), b_out (V,).

    The reused variant works time-major, projects the inputs of all steps in one GEMM (biases
    folded in through a ones column), runs the four gate nonlinearities as one tanh per step
    (sigmoid(x) = 0.5 tanh(x/2) + 0.5, the 1/2 folded into scaled copies of the weights),
    hoists every elementwise factor of the backward pass that does not depend on the recurrence
    out of the time loop, and computes the weight gradients after the loop as one GEMM each."""

    name = "lstm"

    def __init__(self, variant: str = "reused", dtype: Any = np.float32, seed: int = 0, *,
                 vocab: int = 65, embedding_dim: int = 64, hidden: int = 128, batch: int = 32,
                 seq_len: int = 64, lr: float = 2e-3) -> None:
        self.vocab, self.dim, self.hidden = vocab, embedding_dim, hidden
        self.batch, self.seq_len, self.lr = batch, seq_len, lr
        super().__init__(variant, dtype, seed)
        h, dt = hidden, self.dtype
        half = np.full(h, 0.5, dt)
        one, zero = np.ones(h, dt), np.zeros(h, dt)
        self.scale = np.concatenate([half, half, one, half])  # tanh argument scale per gate
        self.shift = np.concatenate([half, half, zero, half])  # a = scale * tanh(.) + shift
        self.dscale = self.scale * self.scale  # da/dz = dscale * (1 - tanh^2)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        v, d, h = self.vocab, self.dim, self.hidden
        return {"emb": (v, d), "w_ih": (4 * h, d), "w_hh": (4 * h, h), "b_ih": (4 * h,),
                "b_hh": (4 * h,), "w_out": (v, h), "b_out": (v,)}

    def init_params(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        v, d, h = self.vocab, self.dim, self.hidden
        return {"emb": rng.standard_normal((v, d)), "w_ih": _uniform(rng, (4 * h, d), h),
                "w_hh": _uniform(rng, (4 * h, h), h), "b_ih": _uniform(rng, (4 * h,), h),
                "b_hh": _uniform(rng, (4 * h,), h), "w_out": _uniform(rng, (v, h), h),
                "b_out": _uniform(rng, (v,), h)}

    def make_optimizer(self) -> Adam:
        return Adam(self, self.lr)

    def make_batch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        text = rng.integers(0, self.vocab, (self.batch, self.seq_len + 1))
        return text[:, :-1].copy(), text[:, 1:].copy()

    def torch_params(self) -> list[np.ndarray]:
        return [self.params[k].copy() for k in self.param_shapes()]

    def _alloc(self, x: np.ndarray, y: np.ndarray) -> _Buffers:
        n, t = x.shape
        v, d, h, dt = self.vocab, self.dim, self.hidden, self.dtype
        tb = t * n
        b = _Buffers(
            xt=np.empty((t, n), np.intp), yt=np.empty((t, n), np.intp),
            xe=np.empty((tb, d + 1), dt), emb_rows=np.empty((tb, d), dt),
            w_ext=np.empty((4 * h, d + 1), dt), w_hhs=np.empty((4 * h, h), dt),
            gx=np.empty((t, n, 4 * h), dt), u=np.empty((t, n, 4 * h), dt),
            a=np.empty((t, n, 4 * h), dt), hs=np.zeros((t + 1, n, h), dt),
            cs=np.zeros((t + 1, n, h), dt), tc=np.empty((t, n, h), dt),
            ig=np.empty((n, h), dt), logits=np.empty((tb, v), dt),
            dh_out=np.empty((t, n, h), dt), dgate=np.empty((t, n, 4 * h), dt),
            dc_fac=np.empty((t, n, h), dt), q=np.empty((t, n, 3, h), dt),
            dzt=np.empty((t, n, 4 * h), dt), dh_rec=np.empty((n, h), dt),
            dc=np.empty((n, h), dt), dc_next=np.empty((n, h), dt),
            g_ext=np.empty((4 * h, d + 1), dt), dx=np.empty((tb, d), dt),
            onehot_t=np.zeros((v, tb), dt), oh_idx=np.empty(tb, np.intp),
            oh_base=np.arange(tb, dtype=np.intp), **_ce_buffers(tb, v, dt))
        b.xe[:, d] = 1
        b.fwd = [(b.hs[i], b.u[i], b.gx[i], b.a[i], b.cs[i], b.cs[i + 1], b.tc[i],
                  b.hs[i + 1], b.a[i, :, :h], b.a[i, :, h:2 * h], b.a[i, :, 2 * h:3 * h],
                  b.a[i, :, 3 * h:]) for i in range(t)]
        b.bwd = [(b.dh_out[i], b.dzt[i], b.dzt[i + 1] if i + 1 < t else None,
                  b.dzt[i, :, 3 * h:], b.dzt[i, :, :3 * h].reshape(n, 3, h), b.tc[i],
                  b.dc_fac[i], b.q[i], b.a[i, :, h:2 * h], b.dgate[i])
                 for i in reversed(range(t))]
        return b

    def _reused(self, x: np.ndarray, y: np.ndarray) -> float:
        p, g, b = self.params, self.grads, self.b
        n, t = x.shape
        h, d = self.hidden, self.dim
        tb = t * n
        scale = self.scale
        # embedding of all steps, time-major, then one GEMM for every step's input projection
        np.copyto(b.xt, x.T)
        np.copyto(b.yt, y.T)
        ids = b.xt.reshape(-1)
        np.take(p["emb"], ids, axis=0, out=b.emb_rows, mode="clip")
        np.copyto(b.xe[:, :d], b.emb_rows)
        np.multiply(p["w_ih"], scale[:, None], out=b.w_ext[:, :d])
        np.add(p["b_ih"], p["b_hh"], out=b.w_ext[:, d])
        np.multiply(b.w_ext[:, d], scale, out=b.w_ext[:, d])
        np.matmul(b.xe, b.w_ext.T, out=b.gx.reshape(tb, 4 * h))
        np.multiply(p["w_hh"], scale[:, None], out=b.w_hhs)
        w_hhs_t, shift, ig = b.w_hhs.T, self.shift, b.ig
        mul, add, tanh, matmul = np.multiply, np.add, np.tanh, np.matmul
        for h_prev, u, gx, a, c_prev, c, tc, h_new, i_, f_, g_, o_ in b.fwd:
            matmul(h_prev, w_hhs_t, out=u)
            add(u, gx, out=u)
            tanh(u, out=u)
            mul(u, scale, out=a)
            add(a, shift, out=a)
            mul(f_, c_prev, out=c)
            mul(i_, g_, out=ig)
            add(c, ig, out=c)
            tanh(c, out=tc)
            mul(o_, tc, out=h_new)
        # head and loss over all positions
        hflat = b.hs[1:].reshape(tb, h)
        np.matmul(hflat, p["w_out"].T, out=b.logits)
        np.add(b.logits, p["b_out"], out=b.logits)
        loss = _ce_reused(b.logits, b.yt.reshape(-1), b)
        dlog = b.dz
        np.matmul(dlog.T, hflat, out=g["w_out"])
        np.sum(dlog, axis=0, out=g["b_out"])
        np.matmul(dlog, p["w_out"], out=b.dh_out.reshape(tb, h))
        # factors of the backward pass that do not depend on the recurrence, for all steps
        u, a = b.u, b.a
        np.multiply(u, u, out=b.dgate)
        np.subtract(1, b.dgate, out=b.dgate)
        np.multiply(b.dgate, self.dscale, out=b.dgate)  # d a / d z
        np.multiply(b.tc, b.tc, out=b.dc_fac)
        np.subtract(1, b.dc_fac, out=b.dc_fac)
        np.multiply(b.dc_fac, a[:, :, 3 * h:], out=b.dc_fac)  # d c -> via h: o (1 - tanh^2 c)
        np.copyto(b.q[:, :, 0], a[:, :, 2 * h:3 * h])  # di = dc * g
        np.copyto(b.q[:, :, 1], b.cs[:-1])  # df = dc * c_prev
        np.copyto(b.q[:, :, 2], a[:, :, :h])  # dg = dc * i
        # backward through time
        w_hh, dh_rec, dc, dc_next = p["w_hh"], b.dh_rec, b.dc, b.dc_next
        first = True
        for dh, dz, dz_next, do_, difg, tc, dcf, q, f_, dgate in b.bwd:
            if dz_next is not None:
                matmul(dz_next, w_hh, out=dh_rec)
                add(dh, dh_rec, out=dh)
            mul(dh, tc, out=do_)
            mul(dh, dcf, out=dc)
            if not first:
                add(dc, dc_next, out=dc)
            first = False
            mul(dc[:, None, :], q, out=difg)
            mul(dc, f_, out=dc_next)
            mul(dz, dgate, out=dz)
        # weight gradients of all steps at once
        dzf = b.dzt.reshape(tb, 4 * h)
        np.matmul(dzf.T, b.xe, out=b.g_ext)
        np.copyto(g["w_ih"], b.g_ext[:, :d])
        np.copyto(g["b_ih"], b.g_ext[:, d])
        np.copyto(g["b_hh"], b.g_ext[:, d])
        np.matmul(dzf.T, b.hs[:-1].reshape(tb, h), out=g["w_hh"])
        np.matmul(dzf, p["w_ih"], out=b.dx)
        # embedding gradient: one-hot(ids)^T @ dx
        oh = b.onehot_t
        oh.fill(0)
        np.multiply(ids, tb, out=b.oh_idx)
        np.add(b.oh_idx, b.oh_base, out=b.oh_idx)
        np.put(oh, b.oh_idx, 1)
        np.matmul(oh, b.dx, out=g["emb"])
        return loss

    def _malloc(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        p = self.params
        n, t = x.shape
        h = self.hidden

        def sigmoid(v: np.ndarray) -> np.ndarray:
            return 1 / (1 + np.exp(-v))

        ids = x.T.reshape(-1)
        xs = p["emb"][ids]  # (T*B, D), time-major
        gx = (xs @ p["w_ih"].T + p["b_ih"] + p["b_hh"]).reshape(t, n, 4 * h)
        hc = np.zeros((n, h), self.dtype)
        c = np.zeros((n, h), self.dtype)
        hs, cs, gates, tcs = [hc], [c], [], []
        for i in range(t):
            z = gx[i] + hc @ p["w_hh"].T
            ig, fg = sigmoid(z[:, :h]), sigmoid(z[:, h:2 * h])
            gg, og = np.tanh(z[:, 2 * h:3 * h]), sigmoid(z[:, 3 * h:])
            c = fg * c + ig * gg
            tc = np.tanh(c)
            hc = og * tc
            hs.append(hc)
            cs.append(c)
            gates.append((ig, fg, gg, og))
            tcs.append(tc)
        hflat = np.concatenate(hs[1:])
        logits = hflat @ p["w_out"].T + p["b_out"]
        loss, dlog = _ce_malloc(logits, y.T.reshape(-1))
        dh_out = (dlog @ p["w_out"]).reshape(t, n, h)
        dzs = []
        dh_next = np.zeros((n, h), self.dtype)
        dc_next = np.zeros((n, h), self.dtype)
        for i in reversed(range(t)):
            ig, fg, gg, og = gates[i]
            dh = dh_out[i] + dh_next
            dc = dh * og * (1 - tcs[i] ** 2) + dc_next
            dz = np.concatenate([dc * gg * ig * (1 - ig), dc * cs[i] * fg * (1 - fg),
                                 dc * ig * (1 - gg ** 2), dh * tcs[i] * og * (1 - og)], axis=1)
            dc_next = dc * fg
            dh_next = dz @ p["w_hh"]
            dzs.append(dz)
        dzf = np.concatenate(dzs[::-1])
        gb = dzf.sum(axis=0)
        gemb = np.zeros_like(p["emb"])
        np.add.at(gemb, ids, dzf @ p["w_ih"])
        return loss, {"emb": gemb, "w_ih": dzf.T @ xs, "w_hh": dzf.T @ np.concatenate(hs[:-1]),
                      "b_ih": gb, "b_hh": gb.copy(), "w_out": dlog.T @ hflat,
                      "b_out": dlog.sum(axis=0)}


FLOORS: dict[str, type[Floor]] = {"linreg": LinRegFloor, "mlp": MLPFloor, "cnn": CNNFloor,
                                  "lstm": LSTMFloor}


def make_floor(workload: str, variant: str = "reused", dtype: Any = np.float32, seed: int = 0,
               **shape: Any) -> Floor:
    """The floor of one workload (the workload's shapes unless `shape` overrides them)."""
    try:
        cls = FLOORS[workload]
    except KeyError:
        raise ValueError(f"unknown workload {workload!r}; expected one of {WORKLOADS}") from None
    return cls(variant, dtype, seed, **shape)
