"""`linear`: one Linear layer on the flattened input (linear / logistic / softmax regression)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from dlrun.engine.tensor import Tensor
from dlrun.models._meta import DataMeta
from dlrun.models._section import Section
from dlrun.nn import Flatten, Linear, Module


class LinearModel(Module):
    """Flatten every sample, then one affine map to the outputs (logits for classification)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.flatten = Flatten()
        self.linear = Linear(in_features, out_features, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.flatten(x))


KEYS = {"type", "bias"}


def build_linear(cfg: Mapping[str, Any], meta: DataMeta, path: str) -> Module:
    s = Section(cfg, path, KEYS)
    return LinearModel(math.prod(meta.input_shape), meta.out_features, s.bool("bias", True))
