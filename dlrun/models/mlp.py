"""`mlp`: a multi-layer perceptron (hidden sizes, activation, dropout) on the flattened input."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from dlrun.models._meta import DataMeta
from dlrun.models._section import Section
from dlrun.nn import (
    GELU,
    Dropout,
    Flatten,
    LeakyReLU,
    Linear,
    Module,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)

ACTIVATIONS: dict[str, type[Module]] = {
    "relu": ReLU, "tanh": Tanh, "gelu": GELU, "sigmoid": Sigmoid, "leaky_relu": LeakyReLU,
}


def mlp_layers(in_features: int, hidden: Sequence[int], out_features: int, activation: str,
               dropout: float) -> list[Module]:
    """Linear -> activation (-> Dropout) per hidden size, then a final Linear."""
    layers: list[Module] = []
    width = in_features
    for h in hidden:
        layers += [Linear(width, h), ACTIVATIONS[activation]()]
        if dropout > 0.0:
            layers.append(Dropout(dropout))
        width = h
    layers.append(Linear(width, out_features))
    return layers


KEYS = {"type", "hidden", "activation", "dropout"}


def build_mlp(cfg: Mapping[str, Any], meta: DataMeta, path: str) -> Module:
    s = Section(cfg, path, KEYS)
    hidden = s.int_list("hidden", [128])
    activation = s.choice("activation", list(ACTIVATIONS), "relu")
    dropout = s.float("dropout", 0.0, 0.0, 1.0, high_open=True)
    return Sequential(Flatten(), *mlp_layers(math.prod(meta.input_shape), hidden,
                                             meta.out_features, activation, dropout))
