"""Synthetic generators: fully seeded, right shapes, and the stated ground truth holds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dlrun.data import synthetic
from dlrun.errors import DataError

GENERATORS = ["linear", "blobs", "spirals", "sine", "adding"]


@pytest.mark.parametrize("name", GENERATORS)
def test_seeded_and_reproducible(name: str) -> None:
    make = getattr(synthetic, name)
    a, b, c = make(seed=5), make(seed=5), make(seed=6)
    for s in ("train", "val"):
        np.testing.assert_array_equal(getattr(a, s).x, getattr(b, s).x)
        np.testing.assert_array_equal(getattr(a, s).y, getattr(b, s).y)
    assert not np.array_equal(a.train.x, c.train.x)
    assert a.train.x.dtype == np.float32
    assert a.meta["name"] == name and a.meta["task"] in ("classification", "regression")
    assert list(a.train.x.shape[1:]) == a.meta["input_shape"]
    json.dumps(a.meta)


def test_linear_true_weights_are_recoverable() -> None:
    b = synthetic.linear(2000, n_features=4, noise=0.01, seed=1, test_fraction=0.1)
    assert b.test is not None and len(b.train) + len(b.val) + len(b.test) == 2000
    design = np.hstack([b.train.x, np.ones((len(b.train), 1), np.float32)])
    fit = np.linalg.lstsq(design, b.train.y, rcond=None)[0]
    np.testing.assert_allclose(fit[:-1], b.meta["true_weights"], atol=0.01)
    np.testing.assert_allclose(fit[-1], b.meta["true_bias"], atol=0.01)


def test_blobs_and_spirals_labels() -> None:
    b = synthetic.blobs(300, n_classes=4, val_fraction=0.0)
    assert np.bincount(b.train.y).tolist() == [75] * 4 and b.train.y.dtype == np.int64
    s = synthetic.spirals(300, n_classes=3, val_fraction=0.0)
    assert np.bincount(s.train.y).tolist() == [100] * 3 and s.meta["num_classes"] == 3
    assert np.abs(s.train.x).max() <= 1.0


def test_sine_targets_continue_the_wave() -> None:
    b = synthetic.sine(50, lookback=10, horizon=3, val_fraction=0.0)
    assert b.train.x.shape == (50, 10, 1) and b.train.y.shape == (50, 3)
    assert np.abs(b.train.y).max() <= 1.0 and b.meta["output_dim"] == 3


def test_adding_problem_target_is_the_marked_sum() -> None:
    b = synthetic.adding(100, seq_len=20, val_fraction=0.0)
    x, y = b.train.x, b.train.y
    assert x.shape == (100, 20, 2) and y.shape == (100, 1)
    assert (x[:, :, 1].sum(axis=1) == 2).all()
    assert (x[:, :10, 1].sum(axis=1) == 1).all()  # one marker in each half
    np.testing.assert_allclose((x[:, :, 0] * x[:, :, 1]).sum(axis=1), y[:, 0], rtol=1e-6)


def test_bad_options() -> None:
    with pytest.raises(DataError, match="'blobs': n_classes must be an integer >= 2"):
        synthetic.blobs(n_classes=1)
    with pytest.raises(DataError, match="'linear': noise must be >= 0"):
        synthetic.linear(noise=-1)
    with pytest.raises(DataError, match="leave no training data"):
        synthetic.sine(val_fraction=0.5, test_fraction=0.5)
