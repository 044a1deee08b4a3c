"""`cnn`: a stack of conv -> [batch norm] -> activation -> pool blocks and an MLP classifier head.

The defaults give a LeNet-5-style network (two 5x5 convs with 6 and 16 channels, 2x2 max pooling,
dense layers of 120 and 84): for 28x28 inputs the feature map is 16x4x4. The builder follows the
spatial size through the stack and rejects a stack that shrinks the input to nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dlrun import functional as F
from dlrun.engine.tensor import Tensor
from dlrun.errors import ConfigError
from dlrun.models._meta import DataMeta
from dlrun.models._section import Section
from dlrun.models.mlp import ACTIVATIONS, mlp_layers
from dlrun.nn import AvgPool2d, BatchNorm2d, Conv2d, Flatten, MaxPool2d, Module, Sequential

MONOTONE = ("relu", "tanh", "sigmoid")  # non-decreasing: max(f(x)) == f(max(x))

KEYS = {"type", "channels", "kernel_size", "padding", "pool", "pool_type", "hidden", "activation",
        "dropout", "batch_norm"}


class CNN(Module):
    """features (conv blocks) -> flatten -> classifier (MLP); accepts (B, H, W) or (B, C, H, W)."""

    def __init__(self, features: Sequential, classifier: Sequential, add_channel: bool) -> None:
        super().__init__()
        self.add_channel = add_channel
        self.features = features
        self.flatten = Flatten()
        self.classifier = classifier

    def forward(self, x: Tensor) -> Tensor:
        if self.add_channel and x.ndim == 3:
            x = F.unsqueeze(x, 1)
        return self.classifier(self.flatten(self.features(x)))


def _per_layer(s: Section, name: str, default: Any, n: int) -> list[Any]:
    v = s.cfg.get(name, default)
    if isinstance(v, list | tuple):
        if len(v) != n:
            raise ConfigError(
                f"{s.key(name)}: expected one value per conv layer ({n}), got {len(v)} values"
            )
        return list(v)
    return [v] * n


def _padding(s: Section, values: list[Any], kernels: list[int]) -> list[int]:
    out = []
    for v, k in zip(values, kernels, strict=True):
        if v == "valid":
            v = 0
        elif v == "same":
            if k % 2 == 0:
                raise ConfigError(f"{s.key('padding')}: 'same' needs an odd kernel_size, got {k}")
            v = k // 2
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ConfigError(
                f"{s.key('padding')}: expected an int >= 0, 'same' or 'valid', got {v!r}"
            )
        out.append(v)
    return out


def _conv_block(s: Section, i: int, layer: tuple[int, int, int, int, int],
                size: tuple[int, int], image: tuple[int, int], pool_cls: type,
                activation: str, batch_norm: bool) -> tuple[list[Module], tuple[int, int]]:
    """Conv layer i (in, out channels, kernel, padding, pool) on a `size` map: its modules and
    the size it leaves; ConfigError when the map would vanish."""
    prev, c, k, p, pool = layer
    (h, w), blocks = image, []
    out = (size[0] + 2 * p - k + 1, size[1] + 2 * p - k + 1)
    if min(out) < 1:
        raise ConfigError(
            f"{s.key('channels')}: conv layer {i + 1} (kernel_size {k}, padding {p}) gets a "
            f"{size[0]}x{size[1]} input from a {h}x{w} image and would leave "
            f"{out[0]}x{out[1]}; use a smaller kernel_size, more padding or fewer layers"
        )
    blocks.append(Conv2d(prev, c, k, padding=p, bias=not batch_norm))  # BN has the shift
    if batch_norm:
        blocks.append(BatchNorm2d(c))
    # max-pool commutes with a non-decreasing activation (the same values and the same
    # first-max gradient routing), so it goes first: the activation and its gradient then
    # run on a map pool*pool times smaller
    pool_first = pool > 1 and pool_cls is MaxPool2d and activation in MONOTONE
    if not pool_first:
        blocks.append(ACTIVATIONS[activation]())
    if pool > 1:
        pooled = (out[0] // pool, out[1] // pool)
        if min(pooled) < 1:
            raise ConfigError(
                f"{s.key('pool')}: pooling {pool}x{pool} after conv layer {i + 1} gets a "
                f"{out[0]}x{out[1]} map (from a {h}x{w} image) and would leave nothing; "
                "use a smaller pool or fewer layers"
            )
        blocks.append(pool_cls(pool))
        out = pooled
    if pool_first:
        blocks.append(ACTIVATIONS[activation]())
    return blocks, out


def build_cnn(cfg: Mapping[str, Any], meta: DataMeta, path: str) -> Module:
    s = Section(cfg, path, KEYS)
    shape = meta.input_shape
    if len(shape) not in (2, 3):
        raise ConfigError(
            f"{path}.type: a cnn needs image inputs (H, W) or (C, H, W), but the dataset's input "
            f"shape is {shape}"
        )
    in_ch, h, w = (1, *shape) if len(shape) == 2 else shape
    channels = s.int_list("channels", [6, 16], allow_empty=False)
    n = len(channels)
    kernels = _per_layer(s, "kernel_size", 5, n)
    for k in kernels:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ConfigError(f"{s.key('kernel_size')}: expected a positive int, got {k!r}")
    pads = _padding(s, _per_layer(s, "padding", 0, n), kernels)
    pools = _per_layer(s, "pool", 2, n)
    for p in pools:
        if not isinstance(p, int) or isinstance(p, bool) or p < 1:
            raise ConfigError(f"{s.key('pool')}: expected a positive int (1 = no pooling), "
                              f"got {p!r}")
    pool_cls = MaxPool2d if s.choice("pool_type", ["max", "avg"], "max") == "max" else AvgPool2d
    activation = s.choice("activation", list(ACTIVATIONS), "relu")
    batch_norm = s.bool("batch_norm", False)
    hidden = s.int_list("hidden", [120, 84])
    dropout = s.float("dropout", 0.0, 0.0, 1.0, high_open=True)

    blocks: list[Module] = []
    size, prev = (h, w), in_ch
    for i, (c, k, p, pool) in enumerate(zip(channels, kernels, pads, pools, strict=True)):
        block, size = _conv_block(s, i, (prev, c, k, p, pool), size, (h, w), pool_cls,
                                  activation, batch_norm)
        blocks += block
        prev = c
    flat = prev * size[0] * size[1]
    head = mlp_layers(flat, hidden, meta.out_features, activation, dropout)
    return CNN(Sequential(*blocks), Sequential(*head), add_channel=len(shape) == 2)
