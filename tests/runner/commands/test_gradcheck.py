"""gradcheck: analytic gradients (eager and static) against central differences, in float64."""

from __future__ import annotations

import numpy as np
import pytest

from dlrun.config import load_config
from dlrun.engine.prims import REGISTRY
from dlrun.errors import ConfigError
from dlrun.nn import LSTM, Dropout, Linear, Sequential
from dlrun.runner.commands.gradcheck import (
    TOLERANCE,
    _compare,
    disable_dropout,
    gradcheck,
    relative_error,
)

CNN = {"data": {"name": "images", "options": {"n": 32, "channels": 2, "size": 8, "n_classes": 3}},
       "model": {"type": "cnn", "channels": [3, 4], "kernel_size": 3, "padding": 1,
                 "hidden": [8], "batch_norm": True, "dropout": 0.3}}
LSTM_LM = {"data": {"name": "tokens", "options": {"n": 16, "seq_len": 6, "vocab_size": 7}},
           "model": {"type": "lstm", "hidden_size": 5, "embedding_dim": 4, "num_layers": 2,
                     "dropout": 0.3}}
RNN_SINE = {"data": {"name": "sine", "options": {"n": 32, "lookback": 6}},
            "model": {"type": "rnn", "hidden_size": 5}}


def _check_report(report: dict, n_params: int) -> None:
    assert report["passed"], report["message"]
    assert report["failed"] == []
    assert len(report["parameters"]) == n_params
    for row in report["parameters"]:
        assert row["passed"] and row["checked"] >= 1
        assert row["checked"] <= 20
        assert np.isfinite(row["eager_error"]) and np.isfinite(row["static_error"])


def test_tiny_mlp_passes(tiny_config) -> None:
    report = gradcheck(load_config(tiny_config()))
    _check_report(report, 4)  # Linear, Linear: weight and bias each (dropout switched off)
    assert [r["name"] for r in report["parameters"]] == ["1.weight", "1.bias", "4.weight",
                                                         "4.bias"]
    assert report["parameters"][0]["shape"] == [16, 4]
    assert report["parameters"][0]["checked"] == 20  # 64 entries, capped
    assert report["parameters"][1]["checked"] == 16  # 16 entries, all of them
    assert max(r["eager_error"] for r in report["parameters"]) < TOLERANCE
    assert report["batch"] == 4 and report["dtype"] == "float64"
    assert report["seconds"] > 0  # reported; how fast is for the benchmarks, not a unit test


@pytest.mark.parametrize("changes, n_params", [(CNN, 10), (LSTM_LM, 11), (RNN_SINE, 6)],
                         ids=["cnn-batchnorm", "lstm-lm", "rnn-sine"])
def test_other_families_pass(tiny_config, changes: dict, n_params: int) -> None:
    _check_report(gradcheck(load_config(tiny_config(**changes))), n_params)


def test_options(tiny_config) -> None:
    report = gradcheck(load_config(tiny_config()), batch=2, eps=1e-5, max_per_param=3)
    assert report["batch"] == 2 and report["eps"] == 1e-5
    assert [r["checked"] for r in report["parameters"]] == [3, 3, 3, 3]
    with pytest.raises(ConfigError, match="batch"):
        gradcheck(load_config(tiny_config()), batch=0)
    with pytest.raises(ConfigError, match="eps"):
        gradcheck(load_config(tiny_config()), eps=0.0)


def test_a_wrong_vjp_is_caught(tiny_config, monkeypatch) -> None:
    # d tanh(x)/dx is 1 - y^2; claim 1 - y instead.
    monkeypatch.setattr(REGISTRY["tanh"], "vjp", lambda g, y, x: (g * (1.0 - y),))
    cfg = load_config(tiny_config(model={"type": "mlp", "hidden": [16], "activation": "tanh"}))
    report = gradcheck(cfg)
    assert not report["passed"]
    by_name = {r["name"]: r for r in report["parameters"]}
    assert report["failed"] == ["1.weight", "1.bias"]  # the layer before the tanh
    assert by_name["1.weight"]["eager_error"] > 1e-2 and by_name["1.weight"]["static_error"] > 1e-2
    assert by_name["3.weight"]["passed"]  # the head's gradient does not go through the tanh
    assert "failed for 2 of 4 parameters" in report["message"]


def test_relative_error_and_noise() -> None:
    a = np.array([1.0, 0.0, 1e-12, 2.0])
    n = np.array([1.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(relative_error(a, n), [0.0, 0.0, 1e-4, 0.5])
    # 1e-10 apart around 1e-5: relative 1e-5+, but within a 1e-9 rounding noise.
    worst, ok, noise = _compare(np.array([1e-5, 0.1]), np.array([1e-5 + 2e-10, 0.1]), 1e-9)
    assert worst > TOLERANCE and ok and noise
    worst, ok, noise = _compare(np.array([1e-3]), np.array([1.1e-3]), 1e-9)
    assert not ok and not noise


def test_disable_dropout_keeps_train_mode() -> None:
    model = Sequential(Linear(3, 4), Dropout(0.5), LSTM(4, 2, num_layers=2, dropout=0.3))
    assert disable_dropout(model) == 2
    assert model[1].p == 0.0 and model[2].dropout == 0.0 and model.training
