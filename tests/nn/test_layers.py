"""Layer forward results, default initialisation, running statistics and argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dlrun
from dlrun import nn


def test_linear_matches_numpy_and_default_init_bounds() -> None:
    dlrun.manual_seed(0)
    lin = nn.Linear(50, 40)
    bound = 1 / math.sqrt(50)
    w = lin.weight.numpy()
    assert w.shape == (40, 50) and np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert np.abs(lin.bias.numpy()).max() <= bound
    x = np.random.default_rng(0).standard_normal((3, 50)).astype(np.float32)
    np.testing.assert_allclose(lin(dlrun.tensor(x)).numpy(), x @ w.T + lin.bias.numpy(),
                               rtol=1e-5, atol=1e-6)


def test_conv_init_and_shapes() -> None:
    conv = nn.Conv2d(3, 8, 5, padding=2)
    bound = 1 / math.sqrt(3 * 25)
    assert conv.weight.shape == (8, 3, 5, 5) and np.abs(conv.weight.numpy()).max() <= bound
    assert conv(dlrun.randn(2, 3, 9, 7)).shape == (2, 8, 9, 7)
    assert nn.MaxPool2d(2)(dlrun.randn(1, 1, 5, 4)).shape == (1, 1, 2, 2)


def test_seeded_init_is_reproducible() -> None:
    dlrun.manual_seed(7)
    a = nn.LSTM(3, 4).state_dict()
    dlrun.manual_seed(7)
    b = nn.LSTM(3, 4).state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())


def test_batchnorm_running_stats_follow_pytorch_formula() -> None:
    bn = nn.BatchNorm2d(2, momentum=0.2)
    x = np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32)
    y = bn(dlrun.tensor(x)).numpy()
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3))
    np.testing.assert_allclose(bn.running_mean.numpy(), 0.2 * mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bn.running_var.numpy(), 0.8 + 0.2 * x.var((0, 2, 3), ddof=1),
                               rtol=1e-5)
    ref = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    assert int(bn.num_batches_tracked.item()) == 1
    bn.eval()
    before = bn.running_mean.numpy().copy()
    y_eval = bn(dlrun.tensor(x)).numpy()
    np.testing.assert_array_equal(bn.running_mean.numpy(), before)
    rm, rv = bn.running_mean.numpy(), bn.running_var.numpy()
    np.testing.assert_allclose(
        y_eval, (x - rm[:, None, None]) / np.sqrt(rv[:, None, None] + 1e-5), rtol=1e-5,
        atol=1e-6)


def test_dropout_train_and_eval() -> None:
    d = nn.Dropout(0.5)
    x = dlrun.ones(1000)
    y = d(x).numpy()
    assert set(np.unique(y)) <= {0.0, 2.0} and 0.4 < (y == 0).mean() < 0.6
    d.eval()
    np.testing.assert_array_equal(d(x).numpy(), 1.0)


def test_layernorm_and_embedding_forward() -> None:
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    y = nn.LayerNorm(5)(dlrun.tensor(x)).numpy()
    ref = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    emb = nn.Embedding(10, 3)
    idx = np.array([[1, 9], [0, 1]])
    np.testing.assert_array_equal(emb(dlrun.tensor(idx)).numpy(), emb.weight.numpy()[idx])


@pytest.mark.parametrize("make, match", [
    (lambda: nn.Linear(0, 3), "in_features"),
    (lambda: nn.Conv2d(1, 2, 3, groups=2), "groups"),
    (lambda: nn.Dropout(1.5), "between 0 and 1"),
    (lambda: nn.BatchNorm1d(3, momentum=None), "momentum=None"),
    (lambda: nn.LSTM(3, 0), "hidden_size"),
    (lambda: nn.RNN(3, 2, nonlinearity="sigmoid"), "nonlinearity"),
])
def test_bad_constructor_arguments(make, match) -> None:  # noqa: ANN001
    with pytest.raises((ValueError, NotImplementedError), match=match):
        make()


def test_bad_inputs_have_clear_errors() -> None:
    with pytest.raises(ValueError, match="BatchNorm2d"):
        nn.BatchNorm2d(3)(dlrun.randn(2, 3))
    with pytest.raises(ValueError, match="channels"):
        nn.BatchNorm1d(3)(dlrun.randn(2, 4))
    with pytest.raises(ValueError, match="input_size=3"):
        nn.GRU(3, 2)(dlrun.randn(5, 2, 4))
    with pytest.raises(ValueError, match="h_0"):
        nn.GRU(3, 2)(dlrun.randn(5, 2, 3), dlrun.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="normalized shape"):
        nn.LayerNorm(3)(dlrun.randn(2, 4))
