"""Every layer: gradients w.r.t. inputs and parameters against central differences (float64)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import dlrun
from dlrun import functional as F
from dlrun import nn
from tests.engine.opcheck import (
    Int,
    OpSpec,
    check_gradients,
)
from tests.nn.modcheck import module_spec
from tests.nn.test_transformer import TRANSFORMER_SPECS


def _flat(*ts: dlrun.Tensor) -> dlrun.Tensor:
    return F.cat([t.reshape(-1) for t in ts])


def _rnn_out(y: tuple) -> dlrun.Tensor:
    out, h = y
    return _flat(out, *(h if isinstance(h, tuple) else (h,)))


def _bn_eval(module: nn.Module) -> nn.Module:
    module.double()
    with dlrun.no_grad():
        module.running_mean.copy_(dlrun.tensor([0.3, -0.2, 0.1][: module.num_features]))
        module.running_var.copy_(dlrun.tensor([0.5, 1.5, 2.0][: module.num_features]))
    return module.eval()


class Seeded(nn.Module):
    """Reseed before each call so dropout draws the same mask for every finite difference."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: dlrun.Tensor) -> dlrun.Tensor:
        dlrun.manual_seed(5)
        return self.inner(*args)


class _WithState(nn.Module):
    """Call an LSTM / LSTMCell with its (h, c) state as two separate inputs."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: dlrun.Tensor, h0: dlrun.Tensor, c0: dlrun.Tensor):  # noqa: ANN201
        return self.inner(x, (h0, c0))


def _with_state(module: nn.Module) -> nn.Module:
    return _WithState(module)


SPECS: list[OpSpec] = [
    module_spec("Linear", nn.Linear(4, 3), [(2, 4)]),
    module_spec("Linear_3d_nobias", nn.Linear(4, 3, bias=False), [(2, 5, 4)]),
    module_spec("Conv2d_stride_pad", nn.Conv2d(2, 3, 3, stride=2, padding=1), [(2, 2, 5, 6)]),
    module_spec("Conv2d_same_nobias", nn.Conv2d(2, 2, 3, padding="same", bias=False),
                [(1, 2, 4, 4)]),
    module_spec("MaxPool2d", nn.MaxPool2d(2), [(2, 2, 4, 4)]),
    module_spec("AvgPool2d", nn.AvgPool2d(3, stride=2, padding=1), [(1, 2, 5, 5)]),
    module_spec("Flatten", nn.Flatten(), [(2, 3, 2)]),
    module_spec("Unflatten", nn.Unflatten(1, (2, 3)), [(2, 6)]),
    module_spec("Dropout_train", Seeded(nn.Dropout(0.4)), [(4, 5)]),
    module_spec("Dropout_eval", nn.Dropout(0.4).eval(), [(4, 5)]),
    module_spec("Embedding", nn.Embedding(6, 3), [Int(6, (2, 4))]),
    module_spec("ReLU", nn.ReLU(), [(3, 4)]),
    module_spec("Tanh", nn.Tanh(), [(3, 4)]),
    module_spec("Sigmoid", nn.Sigmoid(), [(3, 4)]),
    module_spec("GELU", nn.GELU(), [(3, 4)]),
    module_spec("GELU_tanh", nn.GELU("tanh"), [(3, 4)]),
    module_spec("LeakyReLU", nn.LeakyReLU(0.2), [(3, 4)]),
    module_spec("Softmax", nn.Softmax(1), [(3, 4)]),
    module_spec("LogSoftmax", nn.LogSoftmax(0), [(3, 4)]),
    module_spec("Identity", nn.Identity(), [(3, 4)]),
    module_spec("LayerNorm", nn.LayerNorm(4), [(3, 4)]),
    module_spec("LayerNorm_2d", nn.LayerNorm((2, 3)), [(2, 2, 3)]),
    module_spec("BatchNorm1d_train", nn.BatchNorm1d(3), [(5, 3)]),
    module_spec("BatchNorm1d_train_3d", nn.BatchNorm1d(2), [(3, 2, 4)]),
    module_spec("BatchNorm2d_train", nn.BatchNorm2d(3), [(4, 3, 2, 2)]),
    module_spec("BatchNorm1d_eval", _bn_eval(nn.BatchNorm1d(3)), [(5, 3)]),
    module_spec("BatchNorm2d_eval", _bn_eval(nn.BatchNorm2d(2)), [(2, 2, 3, 3)]),
    module_spec("BatchNorm2d_no_stats", nn.BatchNorm2d(2, track_running_stats=False).eval(),
                [(3, 2, 2, 2)]),
    module_spec("Sequential", nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)),
                [(2, 3)]),
    module_spec("RNN_tanh_2layers", nn.RNN(3, 4, num_layers=2), [(4, 2, 3)], _rnn_out),
    module_spec("RNN_relu_batch_first", nn.RNN(3, 4, nonlinearity="relu", batch_first=True),
                [(2, 4, 3)], _rnn_out),
    module_spec("LSTM_2layers", nn.LSTM(3, 3, num_layers=2), [(4, 2, 3)], _rnn_out, rtol=1e-5),
    module_spec("LSTM_batch_first_state", _with_state(nn.LSTM(2, 3, batch_first=True)),
                [(2, 4, 2), (1, 2, 3), (1, 2, 3)], _rnn_out, rtol=1e-5),
    module_spec("LSTM_bidirectional", nn.LSTM(2, 2, bidirectional=True), [(3, 2, 2)], _rnn_out,
                rtol=1e-5),
    module_spec("GRU_2layers", nn.GRU(3, 3, num_layers=2), [(4, 2, 3)], _rnn_out, rtol=1e-5),
    module_spec("GRU_unbatched_initial", nn.GRU(2, 3), [(4, 2), (1, 3)], _rnn_out, rtol=1e-5),
    module_spec("GRU_bidirectional_2layers", nn.GRU(2, 2, num_layers=2, bidirectional=True,
                                                    batch_first=True), [(2, 3, 2)], _rnn_out,
                rtol=1e-5),
    module_spec("RNNCell", nn.RNNCell(3, 4), [(2, 3), (2, 4)]),
    module_spec("LSTMCell", nn.LSTMCell(3, 2), [(2, 3)], lambda hc: _flat(*hc)),
    module_spec("LSTMCell_state", _with_state(nn.LSTMCell(3, 2)), [(2, 3), (2, 2), (2, 2)],
                lambda hc: _flat(*hc)),
    module_spec("GRUCell", nn.GRUCell(3, 2), [(2, 3), (2, 2)]),
    # attention and Transformer encoder layers (tests/nn/test_transformer.py)
    *TRANSFORMER_SPECS,
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_layer_gradients_match_finite_differences(spec: OpSpec) -> None:
    check_gradients(spec)


def _layer_classes() -> set[type]:
    return {
        obj for name in nn.__all__ if inspect.isclass(obj := getattr(nn, name))
        and issubclass(obj, nn.Module) and obj not in (nn.Module, nn.ModuleList, nn.ModuleDict,
                                                       nn.RNNBase)
    }


def test_every_layer_is_gradchecked() -> None:
    checked = set()
    for spec in SPECS:
        checked.update(type(m) for m in spec.module.modules())
    assert _layer_classes() - checked == set()


def test_embedding_padding_row_gets_no_gradient() -> None:
    emb = nn.Embedding(5, 3, padding_idx=1)
    assert np.all(emb.weight.numpy()[1] == 0.0)
    out = emb(dlrun.tensor([[1, 2], [1, 4]]))
    (out * dlrun.randn(*out.shape)).sum().backward()
    g = emb.weight.grad.numpy()
    assert np.all(g[1] == 0.0) and np.any(g[2] != 0.0)
    np.testing.assert_array_equal(out.numpy()[0, 0], emb.weight.numpy()[1])
