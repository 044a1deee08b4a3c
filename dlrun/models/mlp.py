"""`mlp`: a multi-layer perceptron (hidden sizes, activation, dropout) on the flattened input."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from dlrun.config.fields import PositiveInt, Probability
from dlrun.models._meta import DataMeta
from dlrun.models.section import ModelSection
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


Activation = Literal[tuple(ACTIVATIONS)]  # type: ignore[valid-type]


class MLPSection(ModelSection):
    """`type: mlp`: Linear layers of the `hidden` sizes with `activation` and `dropout`."""

    type: Literal["mlp"] = "mlp"
    hidden: list[PositiveInt] = [128]
    activation: Activation = "relu"
    dropout: Probability = 0.0

    def build(self, data: DataMeta, path: str) -> Module:
        return Sequential(Flatten(), *mlp_layers(math.prod(data.input_shape), self.hidden,
                                                 data.out_features, self.activation,
                                                 self.dropout))
