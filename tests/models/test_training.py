"""Each model family learns a small seeded synthetic task: the loss drops by a stated factor."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import dlrun
from dlrun import functional as F
from dlrun import optim
from dlrun.models import build_model


def _fit(model, opt, x, y, loss_fn: Callable, steps: int, clip: float | None = None
         ) -> tuple[float, float]:  # noqa: ANN001
    """Full-batch training; returns (initial loss, final loss)."""
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        if clip is not None:
            optim.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        losses.append(float(loss.item()))
    model.eval()
    with dlrun.no_grad():
        final = float(loss_fn(model(x), y).item())
    return losses[0], final


def _ce(logits: dlrun.Tensor, y: dlrun.Tensor) -> dlrun.Tensor:
    if logits.ndim == 3:  # language model (B, T, V) against (B, T)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    return F.cross_entropy(logits, y)


def test_linear_regression() -> None:
    dlrun.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 5)).astype(np.float32)
    y = (x @ rng.standard_normal((5, 1)) + 0.5).astype(np.float32)
    model = build_model({"type": "linear"}, {"input_shape": (5,), "task": "regression"})
    opt = optim.SGD(model.parameters(), lr=0.1)
    first, last = _fit(model, opt, dlrun.tensor(x), dlrun.tensor(y), F.mse_loss, 100)
    assert last < 0.01 * first


def test_softmax_regression() -> None:
    dlrun.manual_seed(0)
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((3, 4)) * 3
    labels = rng.integers(0, 3, 96)
    x = (centers[labels] + rng.standard_normal((96, 4))).astype(np.float32)
    model = build_model({"type": "linear"}, {"input_shape": (4,), "num_classes": 3})
    opt = optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    first, last = _fit(model, opt, dlrun.tensor(x), dlrun.tensor(labels), _ce, 60)
    assert last < 0.2 * first


def test_mlp_learns_xor() -> None:
    dlrun.manual_seed(0)
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (128, 2)).astype(np.float32)
    labels = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64)
    model = build_model({"type": "mlp", "hidden": [32, 32], "activation": "tanh"},
                        {"input_shape": (2,), "num_classes": 2})
    opt = optim.Adam(model.parameters(), lr=0.02)
    first, last = _fit(model, opt, dlrun.tensor(x), dlrun.tensor(labels), _ce, 150)
    assert last < 0.1 * first


def _bars(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Images with one horizontal (class 0) or vertical (class 1) bright bar, plus noise."""
    labels = rng.integers(0, 2, n)
    x = rng.standard_normal((n, 1, size, size)).astype(np.float32) * 0.3
    pos = rng.integers(2, size - 2, n)
    for i in range(n):
        if labels[i]:
            x[i, 0, :, pos[i]] += 1.5
        else:
            x[i, 0, pos[i], :] += 1.5
    return x, labels


def test_cnn_tells_horizontal_from_vertical_bars() -> None:
    dlrun.manual_seed(0)
    x, labels = _bars(48, 12, np.random.default_rng(3))
    cfg = {"type": "cnn", "channels": [4, 8], "kernel_size": 3, "hidden": [16],
           "batch_norm": True}
    model = build_model(cfg, {"input_shape": (1, 12, 12), "num_classes": 2})
    opt = optim.Adam(model.parameters(), lr=0.01)
    first, last = _fit(model, opt, dlrun.tensor(x), dlrun.tensor(labels), _ce, 30)
    assert last < 0.1 * first


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_recurrent_sequence_classification(kind: str) -> None:
    """Is the sum of a sequence positive? The answer needs every step."""
    dlrun.manual_seed(0)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((64, 8, 1)).astype(np.float32)
    labels = (x.sum((1, 2)) > 0).astype(np.int64)
    model = build_model({"type": kind, "hidden_size": 16},
                        {"input_shape": (8, 1), "num_classes": 2})
    opt = optim.Adam(model.parameters(), lr=0.02)
    first, last = _fit(model, opt, dlrun.tensor(x), dlrun.tensor(labels), _ce, 80, clip=5.0)
    assert last < 0.1 * first


def test_gru_sequence_regression() -> None:
    dlrun.manual_seed(0)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 6)).astype(np.float32)
    y = x.mean(1, keepdims=True) * 2
    model = build_model({"type": "gru", "hidden_size": 16, "num_layers": 2},
                        {"input_shape": (6,), "task": "regression"})
    opt = optim.Adam(model.parameters(), lr=0.02)
    first, last = _fit(model, opt, dlrun.tensor(x), dlrun.tensor(y), F.mse_loss, 60)
    assert last < 0.1 * first


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_language_model_learns_a_cycle(kind: str) -> None:
    """Next-token prediction on shifted copies of the cycle 0 1 2 3 4 5 0 1 ..."""
    dlrun.manual_seed(0)
    rng = np.random.default_rng(6)
    starts = rng.integers(0, 6, 32)
    seq = (starts[:, None] + np.arange(13)[None, :]) % 6
    x, y = dlrun.tensor(seq[:, :-1]), dlrun.tensor(seq[:, 1:])
    model = build_model({"type": kind, "hidden_size": 16, "embedding_dim": 8},
                        {"input_shape": (12,), "task": "language_model", "vocab_size": 6})
    opt = optim.Adam(model.parameters(), lr=0.03)
    first, last = _fit(model, opt, x, y, _ce, 40)
    assert last < 0.05 * first
