"""`cnn`: a stack of conv -> [batch norm] -> activation -> pool blocks and an MLP classifier head.

The defaults give a LeNet-5-style network (two 5x5 convs with 6 and 16 channels, 2x2 max pooling,
dense layers of 120 and 84): for 28x28 inputs the feature map is 16x4x4. The builder follows the
spatial size through the stack and rejects a stack that shrinks the input to nothing.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from dlrun import functional as F
from dlrun.config.fields import Bool, PositiveInt, Probability
from dlrun.config.messages import fail, show
from dlrun.engine.tensor import Tensor
from dlrun.errors import ConfigError
from dlrun.models._meta import DataMeta
from dlrun.models.mlp import ACTIVATIONS, Activation, mlp_layers
from dlrun.models.section import ModelSection
from dlrun.nn import AvgPool2d, BatchNorm2d, Conv2d, Flatten, MaxPool2d, Module, Sequential

MONOTONE = ("relu", "tanh", "sigmoid")  # non-decreasing: max(f(x)) == f(max(x))



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


def _per_layer(path: str, name: str, v: Any, n: int) -> list[Any]:
    """A value for every conv layer: a list of n, or one value for all."""
    if isinstance(v, list):
        if len(v) != n:
            raise ConfigError(f"{path}.{name}: expected one value per conv layer ({n}), got "
                              f"{len(v)} values")
        return list(v)
    return [v] * n


def _padding(path: str, values: list[Any], kernels: list[int]) -> list[int]:
    out = []
    for v, k in zip(values, kernels, strict=True):
        if v == "same" and k % 2 == 0:
            raise ConfigError(f"{path}.padding: 'same' needs an odd kernel_size, got {k}")
        out.append(k // 2 if v == "same" else 0 if v == "valid" else v)
    return out


def _each(ok: Any, expected: str) -> BeforeValidator:
    """A field check: one value or a list of them, each passing `ok`; one message otherwise."""
    def check(v: Any) -> Any:
        items = v if isinstance(v, list) else [v]
        if not items or not all(ok(x) for x in items):
            raise fail(f"expected {expected} (or a list of them, one per conv layer), "
                       f"got {show(v)}")
        return v
    return BeforeValidator(check)


# keys that take one value for every conv layer, or a list of them
Kernels = Annotated[Any, _each(lambda k: _is_int(k, 1), "a positive int")]
Paddings = Annotated[Any, _each(lambda p: _is_int(p, 0) or p in ("same", "valid"),
                                "an int >= 0, 'same' or 'valid'")]
Pools = Annotated[Any, _each(lambda k: _is_int(k, 1), "a positive int (1 = no pooling)")]


def _is_int(x: Any, low: int) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= low


def _conv_block(path: str, i: int, layer: tuple[int, int, int, int, int],
                size: tuple[int, int], image: tuple[int, int], pool_cls: type,
                activation: str, batch_norm: bool) -> tuple[list[Module], tuple[int, int]]:
    """Conv layer i (in, out channels, kernel, padding, pool) on a `size` map: its modules and
    the size it leaves; ConfigError when the map would vanish."""
    prev, c, k, p, pool = layer
    (h, w), blocks = image, []
    out = (size[0] + 2 * p - k + 1, size[1] + 2 * p - k + 1)
    if min(out) < 1:
        raise ConfigError(
            f"{path}.channels: conv layer {i + 1} (kernel_size {k}, padding {p}) gets a "
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
                f"{path}.pool: pooling {pool}x{pool} after conv layer {i + 1} gets a "
                f"{out[0]}x{out[1]} map (from a {h}x{w} image) and would leave nothing; "
                "use a smaller pool or fewer layers"
            )
        blocks.append(pool_cls(pool))
        out = pooled
    if pool_first:
        blocks.append(ACTIVATIONS[activation]())
    return blocks, out


class CNNSection(ModelSection):
    """`type: cnn`: conv blocks (`channels`, `kernel_size`, `padding`, `pool`, `batch_norm`),
    then `hidden` Linear layers; kernel_size, padding and pool take one value or one per layer."""

    type: Literal["cnn"] = "cnn"
    channels: list[PositiveInt] = Field([6, 16], min_length=1)
    kernel_size: Kernels = 5
    padding: Paddings = 0
    pool: Pools = 2
    pool_type: Literal["max", "avg"] = "max"
    activation: Activation = "relu"
    batch_norm: Bool = False
    hidden: list[PositiveInt] = [120, 84]
    dropout: Probability = 0.0

    def build(self, data: DataMeta, path: str) -> Module:
        shape = data.input_shape
        if len(shape) not in (2, 3):
            raise ConfigError(f"{path}.type: a cnn needs image inputs (H, W) or (C, H, W), but "
                              f"the dataset's input shape is {shape}")
        in_ch, h, w = (1, *shape) if len(shape) == 2 else shape
        n = len(self.channels)
        kernels = _per_layer(path, "kernel_size", self.kernel_size, n)
        pads = _padding(path, _per_layer(path, "padding", self.padding, n), kernels)
        pools = _per_layer(path, "pool", self.pool, n)
        pool_cls = MaxPool2d if self.pool_type == "max" else AvgPool2d
        blocks: list[Module] = []
        size, prev = (h, w), in_ch
        for i, layer in enumerate(zip(self.channels, kernels, pads, pools, strict=True)):
            block, size = _conv_block(path, i, (prev, *layer), size, (h, w), pool_cls,
                                      self.activation, self.batch_norm)
            blocks += block
            prev = layer[0]
        head = mlp_layers(prev * size[0] * size[1], self.hidden, data.out_features,
                          self.activation, self.dropout)
        return CNN(Sequential(*blocks), Sequential(*head), add_channel=len(shape) == 2)
