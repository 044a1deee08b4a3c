"""The `sweep:` config section: defaults, short forms and what it rejects (before any trial)."""

from __future__ import annotations

import pytest

from dlrun.config import config_to_dict, validate_config
from dlrun.errors import ConfigError

BASE = {"data": {"name": "blobs"}, "model": {"type": "mlp"}}
LR = {"space": "loguniform", "lower": 1e-4, "upper": 1e-1}


def _sweep(**sweep) -> object:
    return validate_config({**BASE, "sweep": sweep}, source="c.yaml").sweep


def test_defaults_and_short_forms() -> None:
    s = _sweep(parameters={"optimizer.lr": LR}, pruner="hyperband")
    assert (s.metric, s.goal, s.sampler, s.pruner.name) == ("val_loss", "minimize", "tpe",
                                                            "hyperband")
    assert s.default_trials() == 20
    grid = _sweep(sampler="grid", parameters={"optimizer.lr": {"values": [0.1, 0.01]},
                                              "model.hidden": {"space": "choice",
                                                               "categories": [[8], [16]]}})
    assert grid.grid_size() == 4 == grid.default_trials()


def test_a_config_without_sweep_dumps_as_before() -> None:
    assert "sweep" not in config_to_dict(validate_config(BASE))


@pytest.mark.parametrize(("sweep", "needle"), [
    ({"parameters": {}}, "sweep.parameters: empty search space"),
    ({"parameters": {"optimizer.lr": {"space": "uniform", "lower": 1, "upper": 0.5}}},
     "sweep.parameters.optimizer.lr.upper: must be greater than lower"),
    ({"parameters": {"optimizer.lr": {"space": "loguniform", "lower": 0, "upper": 1}}},
     "lower: a log scale needs lower > 0"),
    ({"parameters": {"train.batch_size": {"space": "int", "lower": 8.5, "upper": 64}}},
     "integer lower and upper"),
    ({"parameters": {"model.hidden": {"space": "choice"}}}, "categories"),
    ({"parameters": {"optimizer.lr": {"spce": "uniform"}}}, "did you mean 'space'"),
    ({"goal": "minimise", "parameters": {"optimizer.lr": LR}}, "did you mean 'minimize'"),
    ({"sampler": "grid", "parameters": {"optimizer.lr": LR}}, "needs a list of values"),
    ({"trials": 0, "parameters": {"optimizer.lr": LR}}, "sweep.trials"),
])
def test_rejected(sweep: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match="c.yaml: sweep") as e:
        _sweep(**sweep)
    assert needle in str(e.value)
