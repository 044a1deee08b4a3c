"""Seeded synthetic datasets for offline examples and tests.

Each generator depends only on its arguments: the same seed gives the same arrays on every
machine (NumPy's PCG64), so examples and tests are reproducible without any download.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlrun.data.bundle import (
    DatasetBundle,
    Split,
    check_fraction,
    check_positive_int,
    random_split,
)
from dlrun.errors import DataError


def _bundle(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    meta: dict[str, Any],
) -> DatasetBundle:
    val_fraction = check_fraction("val_fraction", val_fraction, name)
    test_fraction = check_fraction("test_fraction", test_fraction, name)
    train, val, test = random_split(Split(x, y), (val_fraction, test_fraction), seed + 1, name)
    assert train is not None
    return DatasetBundle(train, val, test, {"name": name, **meta})


def _check_float(name: str, value: Any, dataset: str, minimum: float = 0.0) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise DataError(f"dataset {dataset!r}: {name} must be a number, got {value!r}") from None
    if not f >= minimum:
        raise DataError(f"dataset {dataset!r}: {name} must be >= {minimum}, got {value!r}")
    return f


def linear(
    n: int = 1000,
    *,
    n_features: int = 3,
    n_outputs: int = 1,
    noise: float = 0.1,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
) -> DatasetBundle:
    """y = x @ W + b + noise, x ~ N(0, 1); the true W and b are in meta (to check a fit)."""
    name = "linear"
    n = check_positive_int("n", n, name, 2)
    n_features = check_positive_int("n_features", n_features, name)
    n_outputs = check_positive_int("n_outputs", n_outputs, name)
    noise = _check_float("noise", noise, name)
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n_features, n_outputs))
    b = rng.normal(size=n_outputs)
    x = rng.normal(size=(n, n_features))
    y = x @ w + b + noise * rng.normal(size=(n, n_outputs))
    meta = {
        "task": "regression",
        "input_shape": [n_features],
        "input_dtype": "float32",
        "output_dim": n_outputs,
        "true_weights": w.tolist(),
        "true_bias": b.tolist(),
        "noise": noise,
    }
    return _bundle(
        name, x.astype(np.float32), y.astype(np.float32), val_fraction, test_fraction, seed, meta
    )


def blobs(
    n: int = 600,
    *,
    n_classes: int = 3,
    n_features: int = 2,
    spread: float = 1.0,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
) -> DatasetBundle:
    """Gaussian clusters (std `spread`) around centres drawn in [-5, 5]^F, equal class sizes."""
    name = "blobs"
    n = check_positive_int("n", n, name, 2)
    n_classes = check_positive_int("n_classes", n_classes, name, 2)
    n_features = check_positive_int("n_features", n_features, name)
    spread = _check_float("spread", spread, name)
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-5.0, 5.0, size=(n_classes, n_features))
    y = rng.permutation(np.arange(n) % n_classes).astype(np.int64)
    x = centres[y] + spread * rng.normal(size=(n, n_features))
    meta = {
        "task": "classification",
        "input_shape": [n_features],
        "input_dtype": "float32",
        "num_classes": n_classes,
        "output_dim": n_classes,
        "centres": centres.tolist(),
    }
    return _bundle(name, x.astype(np.float32), y, val_fraction, test_fraction, seed, meta)


def spirals(
    n: int = 600,
    *,
    n_classes: int = 3,
    noise: float = 0.2,
    turns: float = 1.0,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
) -> DatasetBundle:
    """Interleaved 2-D spiral arms, one per class (the CS231n toy set): not linearly separable."""
    name = "spirals"
    n = check_positive_int("n", n, name, 2)
    n_classes = check_positive_int("n_classes", n_classes, name, 2)
    noise = _check_float("noise", noise, name)
    turns = _check_float("turns", turns, name)
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    r = rng.uniform(0.05, 1.0, size=n)
    theta = (y + r * turns * n_classes) * (2 * np.pi / n_classes) + noise * rng.normal(size=n)
    x = np.stack([r * np.sin(theta), r * np.cos(theta)], axis=1)
    meta = {
        "task": "classification",
        "input_shape": [2],
        "input_dtype": "float32",
        "num_classes": n_classes,
        "output_dim": n_classes,
    }
    return _bundle(
        name, x.astype(np.float32), y.astype(np.int64), val_fraction, test_fraction, seed, meta
    )


def sine(
    n: int = 1000,
    *,
    lookback: int = 20,
    horizon: int = 1,
    noise: float = 0.0,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
) -> DatasetBundle:
    """Forecast a sine wave: each sample has its own frequency (period 8-40 steps) and phase;
    x = `lookback` values (N, lookback, 1), y = the next `horizon` values (N, horizon)."""
    name = "sine"
    n = check_positive_int("n", n, name, 2)
    lookback = check_positive_int("lookback", lookback, name)
    horizon = check_positive_int("horizon", horizon, name)
    noise = _check_float("noise", noise, name)
    rng = np.random.default_rng(seed)
    period = rng.uniform(8.0, 40.0, size=(n, 1))
    phase = rng.uniform(0.0, 2 * np.pi, size=(n, 1))
    t = np.arange(lookback + horizon)[None, :]
    wave = np.sin(2 * np.pi * t / period + phase)
    wave = wave + noise * rng.normal(size=wave.shape)
    x = wave[:, :lookback, None].astype(np.float32)
    y = wave[:, lookback:].astype(np.float32)
    meta = {
        "task": "regression",
        "input_shape": [lookback, 1],
        "input_dtype": "float32",
        "output_dim": horizon,
        "lookback": lookback,
        "horizon": horizon,
    }
    return _bundle(name, x, y, val_fraction, test_fraction, seed, meta)


def adding(
    n: int = 2000,
    *,
    seq_len: int = 50,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
) -> DatasetBundle:
    """The adding problem (Hochreiter & Schmidhuber): x (N, T, 2) holds uniform values and a
    0/1 marker with one 1 in each half; y (N, 1) is the sum of the two marked values.
    Always predicting 1 gives MSE ~0.167, the baseline a recurrent model must beat."""
    name = "adding"
    n = check_positive_int("n", n, name, 2)
    seq_len = check_positive_int("seq_len", seq_len, name, 2)
    rng = np.random.default_rng(seed)
    values = rng.uniform(0.0, 1.0, size=(n, seq_len))
    half = seq_len // 2
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, seq_len, size=n)
    markers = np.zeros((n, seq_len))
    rows = np.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=2).astype(np.float32)
    y = (values[rows, first] + values[rows, second])[:, None].astype(np.float32)
    meta = {
        "task": "regression",
        "input_shape": [seq_len, 2],
        "input_dtype": "float32",
        "output_dim": 1,
        "seq_len": seq_len,
    }
    return _bundle(name, x, y, val_fraction, test_fraction, seed, meta)


def images(
    n: int = 1024,
    *,
    channels: int = 1,
    size: int = 28,
    n_classes: int = 10,
    noise: float = 0.5,
    seed: int = 0,
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
) -> DatasetBundle:
    """Image classification (N, C, size, size): each class is a fixed random pattern, each sample
    that pattern plus Gaussian noise — MNIST-shaped data for offline tests and benchmarks."""
    name = "images"
    n = check_positive_int("n", n, name, 2)
    channels = check_positive_int("channels", channels, name)
    size = check_positive_int("size", size, name)
    n_classes = check_positive_int("n_classes", n_classes, name, 2)
    noise = _check_float("noise", noise, name)
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(0.0, 1.0, size=(n_classes, channels, size, size))
    y = rng.integers(0, n_classes, size=n)
    x = patterns[y] + noise * rng.normal(size=(n, channels, size, size))
    meta = {
        "task": "classification",
        "input_shape": [channels, size, size],
        "input_dtype": "float32",
        "num_classes": n_classes,
        "output_dim": n_classes,
    }
    return _bundle(name, x.astype(np.float32), y.astype(np.int64), val_fraction, test_fraction,
                   seed, meta)


def tokens(
    n: int = 512,
    *,
    seq_len: int = 64,
    vocab_size: int = 65,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.0,
) -> DatasetBundle:
    """Language modelling on token sequences drawn from a seeded random Markov chain (each token
    has a few likely successors): x (N, T) ids, y (N, T) the next ids. Shakespeare-shaped data
    for offline tests and benchmarks."""
    name = "tokens"
    n = check_positive_int("n", n, name, 2)
    seq_len = check_positive_int("seq_len", seq_len, name, 2)
    vocab_size = check_positive_int("vocab_size", vocab_size, name, 2)
    rng = np.random.default_rng(seed)
    successors = rng.integers(0, vocab_size, size=(vocab_size, 3))
    stream = np.empty(n * seq_len + 1, dtype=np.int64)
    stream[0] = rng.integers(vocab_size)
    choice = rng.integers(0, 3, size=len(stream))
    for i in range(1, len(stream)):
        stream[i] = successors[stream[i - 1], choice[i]]
    x = stream[:-1].reshape(n, seq_len)
    y = stream[1:].reshape(n, seq_len)
    meta = {
        "task": "language_model",
        "input_shape": [seq_len],
        "input_dtype": "int64",
        "vocab_size": vocab_size,
        "num_classes": vocab_size,
        "output_dim": vocab_size,
        "seq_len": seq_len,
    }
    return _bundle(name, x, y, val_fraction, test_fraction, seed, meta)
