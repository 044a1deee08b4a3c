"""An optimizer's signature is its config section: names, defaults and bounds come from it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import pytest
import yaml
from annotated_types import Gt

import dlrun
from dlrun import nn, optim
from dlrun.config import validate_config
from dlrun.config.schema import optimizer_section
from dlrun.errors import ConfigError
from dlrun.optim.hyperparameters import (
    OPTIMIZERS,
    HyperparameterError,
    NonNegative,
    check,
    hyperparameters,
)


class Lion(optim.SGD):
    """A new optimizer, as a user module would add it: its keywords become config keys."""

    def __init__(self, params: Iterable[Any], lr: NonNegative = 1e-4,
                 beta: Annotated[float, Gt(0)] = 0.95, eps: NonNegative = 1e-6,
                 weight_decay: NonNegative = 0.0) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay)
        self.beta, self.eps = beta, eps


def test_signatures_give_names_defaults_and_bounds() -> None:
    sgd = hyperparameters(optim.SGD)
    assert list(sgd) == ["lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"]
    assert sgd["momentum"].default == 0.0
    with pytest.raises(HyperparameterError, match=r"betas\[1\].*expected < 1"):
        check(optim.Adam, {"betas": (0.9, 1.0)})
    with pytest.raises(HyperparameterError, match="nesterov"):
        check(optim.SGD, {"nesterov": True, "momentum": 0.0})


def test_a_new_optimizer_is_one_registration() -> None:
    registry = OPTIMIZERS.copy()
    registry.add("lion", Lion, "a test optimizer")
    section = optimizer_section(registry)
    cfg = section(name="lion", beta=0.9)
    assert cfg.hyperparameters() == {"lr": 1e-3, "beta": 0.9, "weight_decay": 0.0}
    # eps: Adam and RMSprop default to 1e-8, Lion to 1e-6, so the config leaves it to the class
    assert cfg.eps is None and "eps" not in cfg.hyperparameters()
    opt = registry["lion"]([nn.Parameter(dlrun.zeros(2))], **cfg.hyperparameters())
    assert (opt.beta, opt.eps) == (0.9, 1e-6)
    with pytest.raises(ValueError, match="beta"):
        section(name="lion", beta=0.0)


@pytest.mark.parametrize("section, message", [
    ({"name": "sgd", "momentum": -1}, "optimizer.momentum: expected a number >= 0, got -1"),
    ({"name": "sgd", "nesterov": True}, "optimizer.nesterov: needs momentum > 0 and dampening 0"),
    ({"name": "adam", "betas": [0.9, 1.5]}, "optimizer.betas[1]: expected a number in [0, 1)"),
])
def test_config_errors_name_the_key(section: dict, message: str, tmp_path: Path) -> None:
    raw = {"data": {"name": "blobs"}, "model": {"type": "mlp"}, "optimizer": section}
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(raw)


def test_the_built_optimizer_gets_the_config_values(tmp_path: Path) -> None:
    raw = yaml.safe_load("{data: {name: blobs}, model: {type: mlp}, optimizer: "
                         "{name: rmsprop, lr: 0.01, alpha: 0.9, centered: true}}")
    o = validate_config(raw).optimizer
    opt = OPTIMIZERS[o.name]([nn.Parameter(dlrun.zeros(2))], **o.hyperparameters())
    group = opt.param_groups[0]
    assert (group["lr"], group["alpha"], group["centered"]) == (0.01, 0.9, True)
