"""`linear`: one Linear layer on the flattened input (linear / logistic / softmax regression)."""

from __future__ import annotations

import math
from typing import Literal

from dlrun.config.fields import Bool
from dlrun.engine.tensor import Tensor
from dlrun.models._meta import DataMeta
from dlrun.models.section import ModelSection
from dlrun.nn import Flatten, Linear, Module


class LinearModel(Module):
    """Flatten every sample, then one affine map to the outputs (logits for classification)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.flatten = Flatten()
        self.linear = Linear(in_features, out_features, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.flatten(x))


class LinearSection(ModelSection):
    """`type: linear`: one Linear layer: linear or softmax regression."""

    type: Literal["linear"] = "linear"
    bias: Bool = True

    def build(self, data: DataMeta, path: str) -> Module:
        return LinearModel(math.prod(data.input_shape), data.out_features, self.bias)
