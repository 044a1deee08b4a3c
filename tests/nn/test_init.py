"""nn.init: distributions, fan computations, gains and seeding through the engine generator."""

from __future__ import annotations

import math

import numpy as np
import pytest

import dlrun
from dlrun import nn
from dlrun.nn import init


def test_uniform_and_normal_statistics() -> None:
    dlrun.manual_seed(0)
    u = init.uniform_(dlrun.empty(200, 100), -2.0, 3.0).numpy()
    assert u.min() >= -2.0 and u.max() < 3.0 and abs(u.mean() - 0.5) < 0.05
    n = init.normal_(dlrun.empty(200, 100), 1.0, 0.5).numpy()
    assert abs(n.mean() - 1.0) < 0.01 and abs(n.std() - 0.5) < 0.01


def test_constants() -> None:
    t = dlrun.empty(3, 2)
    assert np.all(init.ones_(t).numpy() == 1.0)
    assert np.all(init.zeros_(t).numpy() == 0.0)
    assert np.all(init.constant_(t, 0.25).numpy() == 0.25)


def test_xavier_and_kaiming_scales() -> None:
    dlrun.manual_seed(1)
    t = dlrun.empty(300, 200, dtype=np.float64)
    a = math.sqrt(6 / 500)
    x = init.xavier_uniform_(t).numpy()
    assert np.abs(x).max() <= a and np.abs(x).max() > 0.99 * a
    assert abs(init.xavier_normal_(t, gain=2.0).numpy().std() - 2 * math.sqrt(2 / 500)) < 2e-3
    k = init.kaiming_normal_(t, nonlinearity="relu").numpy()
    assert abs(k.std() - math.sqrt(2 / 200)) < 2e-3
    b = math.sqrt(2) * math.sqrt(3 / 300)
    ku = init.kaiming_uniform_(t, mode="fan_out", nonlinearity="relu").numpy()
    assert np.abs(ku).max() <= b and np.abs(ku).max() > 0.99 * b
    conv = dlrun.empty(8, 4, 3, 3)
    assert init._calculate_fan_in_and_fan_out(conv) == (36, 72)


def test_gain_table_and_errors() -> None:
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert init.calculate_gain("linear") == 1.0
    with pytest.raises(ValueError, match="nonlinearity"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="2 dimensions"):
        init.xavier_uniform_(dlrun.empty(3))


def test_init_is_in_place_and_seeded() -> None:
    p = nn.Parameter(dlrun.zeros(4, 4))
    dlrun.manual_seed(3)
    out = init.kaiming_uniform_(p)
    assert out is p and p.requires_grad
    first = p.numpy().copy()
    dlrun.manual_seed(3)
    init.kaiming_uniform_(p)
    np.testing.assert_array_equal(p.numpy(), first)
