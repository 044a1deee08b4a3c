"""build_model: each family's shapes, defaults, validation messages and state_dict round trips."""

from __future__ import annotations

import numpy as np
import pytest

import dlrun
from dlrun import nn
from dlrun.errors import ConfigError
from dlrun.models import REGISTRY, build_model

MNIST = {"input_shape": (1, 28, 28), "num_classes": 10, "task": "classification"}
SERIES = {"input_shape": (12, 3), "task": "regression", "output_dim": 2}
TEXT = {"input_shape": (16,), "task": "language_model", "vocab_size": 30}


def _x(meta: dict, batch: int = 2) -> dlrun.Tensor:
    if meta.get("vocab_size"):
        return dlrun.randint(0, meta["vocab_size"], (batch, *meta["input_shape"]))
    return dlrun.randn(batch, *meta["input_shape"])


@pytest.mark.parametrize("cfg, meta, out_shape", [
    ({"type": "linear"}, MNIST, (2, 10)),
    ({"type": "linear", "bias": False}, SERIES, (2, 2)),
    ({"type": "mlp"}, MNIST, (2, 10)),
    ({"type": "mlp", "hidden": [16, 8], "activation": "gelu", "dropout": 0.2}, SERIES, (2, 2)),
    ({"type": "mlp", "hidden": []}, MNIST, (2, 10)),
    ({"type": "cnn"}, MNIST, (2, 10)),
    ({"type": "cnn"}, {"input_shape": (28, 28), "num_classes": 10}, (2, 10)),
    ({"type": "cnn", "channels": [4, 8, 8], "kernel_size": 3, "padding": "same", "pool": [2, 2, 1],
      "batch_norm": True, "pool_type": "avg", "hidden": [], "activation": "tanh"},
     {"input_shape": (3, 16, 16), "num_classes": 4}, (2, 4)),
    ({"type": "rnn"}, SERIES, (2, 2)),
    ({"type": "lstm", "hidden_size": 8, "num_layers": 2, "dropout": 0.1}, SERIES, (2, 2)),
    ({"type": "gru", "hidden_size": 8, "bidirectional": True},
     {"input_shape": (12,), "num_classes": 3}, (2, 3)),
    ({"type": "lstm", "hidden_size": 8, "embedding_dim": 5},
     {"input_shape": (16,), "num_classes": 2, "vocab_size": 30}, (2, 2)),
    ({"type": "gru", "hidden_size": 8, "embedding_dim": 6, "num_layers": 2}, TEXT, (2, 16, 30)),
    ({"type": "rnn", "hidden_size": 8, "nonlinearity": "relu"}, TEXT, (2, 16, 30)),
])
def test_output_shapes(cfg: dict, meta: dict, out_shape: tuple[int, ...]) -> None:
    model = build_model(cfg, meta)
    assert isinstance(model, nn.Module)
    assert model(_x(meta)).shape == out_shape


def test_lenet_default_for_28x28() -> None:
    model = build_model({"type": "cnn"}, MNIST)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [6, 16] and convs[0].kernel_size == (5, 5)
    assert [(m.in_features, m.out_features) for m in linears] == [(256, 120), (120, 84), (84, 10)]


def test_registry_families() -> None:
    assert set(REGISTRY) == {"linear", "mlp", "cnn", "rnn", "lstm", "gru", "gpt"}


@pytest.mark.parametrize("cfg, meta, message", [
    ({"type": "transformer"}, MNIST, "model.type: expected one of 'linear', 'mlp', 'cnn', "
                                     "'rnn', 'lstm', 'gru', 'gpt', got 'transformer'"),
    ({}, MNIST, "model.type: missing"),
    ({"type": "mlp", "hidden": [-3]}, MNIST, "model.hidden[0]: expected an integer >= 1, "
                                             "got -3"),
    ({"type": "mlp", "hidden": 64}, MNIST, "model.hidden: expected a list, got 64"),
    ({"type": "mlp", "hiden": [3]}, MNIST, "model.hiden: unknown key; did you mean 'hidden'?"),
    ({"type": "mlp", "activation": "swish"}, MNIST, "model.activation: expected one of"),
    ({"type": "mlp", "dropout": 1.0}, MNIST, "model.dropout: expected a number in [0, 1), got 1"),
    ({"type": "linear", "bias": "yes"}, MNIST, "model.bias: expected true or false"),
    ({"type": "cnn", "channels": [8, 8, 8]}, MNIST,
     "model.channels: conv layer 3 (kernel_size 5, padding 0) gets a 4x4 input from a 28x28 "
     "image and would leave 0x0"),
    ({"type": "cnn", "channels": [4], "kernel_size": 3, "pool": 8},
     {"input_shape": (1, 6, 6), "num_classes": 2}, "model.pool: pooling 8x8 after conv layer 1"),
    ({"type": "cnn", "kernel_size": [3]}, MNIST, "model.kernel_size: expected one value per "
                                                 "conv layer (2)"),
    ({"type": "cnn", "kernel_size": 4, "padding": "same"}, MNIST, "model.padding: 'same' needs "
                                                                 "an odd kernel_size"),
    ({"type": "cnn"}, {"input_shape": (12,), "task": "regression"},
     "model.type: a cnn needs image inputs"),
    ({"type": "lstm", "hidden_size": 0}, SERIES,
     "model.hidden_size: expected an integer >= 1, got 0"),
    ({"type": "lstm", "num_layers": True}, SERIES,
     "model.num_layers: expected an integer, got true"),
    ({"type": "gru", "embedding_dim": 8}, SERIES, "model.embedding_dim: only used with token"),
    ({"type": "gru", "nonlinearity": "relu"}, SERIES, "model.nonlinearity: unknown key"),
    ({"type": "lstm", "bidirectional": True}, TEXT, "model.bidirectional: a language model"),
    ({"type": "mlp"}, TEXT, "model.type: 'mlp' cannot model language"),
    ({"type": "mlp"}, {"input_shape": (4,), "task": "classification"}, "num_classes"),
    ({"type": "lstm"}, {"input_shape": (4,), "task": "language_model"}, "vocab_size"),
    ({"type": "mlp"}, {"input_shape": (0,), "num_classes": 2}, "input_shape"),
    ({"type": "mlp"}, {"input_shape": (4,), "task": "ranking"}, "task 'ranking'"),
])
def test_config_errors_name_the_key(cfg: dict, meta: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_model(cfg, meta)
    assert message in str(err.value)


def test_error_path_prefix() -> None:
    with pytest.raises(ConfigError, match=r"^experiment\.model\.hidden\[0\]:"):
        build_model({"type": "mlp", "hidden": [0]}, MNIST, path="experiment.model")


@pytest.mark.parametrize("cfg, meta", [
    ({"type": "linear"}, MNIST),
    ({"type": "mlp", "hidden": [8], "dropout": 0.5}, MNIST),
    ({"type": "cnn", "channels": [2, 3], "batch_norm": True, "hidden": [8]}, MNIST),
    ({"type": "lstm", "hidden_size": 6, "num_layers": 2}, SERIES),
    ({"type": "gru", "hidden_size": 6}, TEXT),
    ({"type": "rnn", "hidden_size": 6, "bidirectional": True}, SERIES),
])
def test_state_dict_round_trip_gives_identical_outputs(cfg: dict, meta: dict) -> None:
    dlrun.manual_seed(0)
    model = build_model(cfg, meta)
    model.train()
    model(_x(meta, 4))  # moves batch-norm statistics, if any
    model.eval()
    dlrun.manual_seed(1)
    fresh = build_model(cfg, meta).eval()
    x = _x(meta, 3)
    assert not np.array_equal(model(x).numpy(), fresh(x).numpy())
    fresh.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(model(x).numpy(), fresh(x).numpy())


def test_cnn_pools_before_a_monotone_activation_with_identical_results() -> None:
    import numpy as np

    import dlrun
    from dlrun import functional as F
    from dlrun.models import build_model

    dlrun.manual_seed(0)
    model = build_model({"type": "cnn", "channels": [4], "kernel_size": 3, "hidden": []},
                        {"input_shape": (1, 8, 8), "num_classes": 3})
    names = [type(m).__name__ for m in model.features]
    assert names == ["Conv2d", "MaxPool2d", "ReLU"]
    x = dlrun.tensor(np.random.default_rng(0).standard_normal((2, 1, 8, 8)), dtype="float32",
                     requires_grad=True)
    conv = model.features[0]
    reference = F.max_pool2d(F.relu(conv(x)), 2)  # PyTorch's order: conv, ReLU, pool
    got = model.features(x)
    np.testing.assert_array_equal(got.numpy(), reference.numpy())
    (got * 3.0).sum().backward()
    g1 = x.grad.numpy().copy()
    x.grad = None
    (reference * 3.0).sum().backward()
    np.testing.assert_array_equal(g1, x.grad.numpy())
