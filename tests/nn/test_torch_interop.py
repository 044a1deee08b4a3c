"""dlrun state_dicts load into PyTorch modules by name, with matching outputs (float64)."""

from __future__ import annotations

import numpy as np
import pytest

import dlrun
from dlrun import nn

torch = pytest.importorskip("torch")


def _to_torch(module: nn.Module, tmodule, train: bool = False):  # noqa: ANN001, ANN202
    module.double()
    tmodule.double()
    sd = {k: torch.from_numpy(np.array(v.numpy())) for k, v in module.state_dict().items()}
    tmodule.load_state_dict(sd, strict=True)  # no renaming
    module.train(train)
    tmodule.train(train)
    return tmodule


def _flat(y) -> list[np.ndarray]:  # noqa: ANN001
    if isinstance(y, tuple):
        return [a for b in y for a in _flat(b)]
    return [y.detach().numpy() if hasattr(y, "detach") else y.numpy()]


CASES = [
    ("Linear", lambda: nn.Linear(4, 3), lambda: torch.nn.Linear(4, 3), (5, 4)),
    ("Conv2d", lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1),
     lambda: torch.nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 2, 7, 6)),
    ("LSTM", lambda: nn.LSTM(3, 4, num_layers=2, batch_first=True),
     lambda: torch.nn.LSTM(3, 4, num_layers=2, batch_first=True), (2, 5, 3)),
    ("LSTM_bidirectional", lambda: nn.LSTM(3, 4, bidirectional=True),
     lambda: torch.nn.LSTM(3, 4, bidirectional=True), (5, 2, 3)),
    ("GRU", lambda: nn.GRU(3, 4, num_layers=2), lambda: torch.nn.GRU(3, 4, num_layers=2),
     (6, 2, 3)),
    ("GRU_bidirectional", lambda: nn.GRU(3, 2, num_layers=2, bidirectional=True),
     lambda: torch.nn.GRU(3, 2, num_layers=2, bidirectional=True), (4, 3, 3)),
    ("RNN_relu", lambda: nn.RNN(3, 4, nonlinearity="relu", batch_first=True),
     lambda: torch.nn.RNN(3, 4, nonlinearity="relu", batch_first=True), (2, 5, 3)),
    ("LayerNorm", lambda: nn.LayerNorm(4), lambda: torch.nn.LayerNorm(4), (3, 4)),
    ("Embedding", lambda: nn.Embedding(7, 3), lambda: torch.nn.Embedding(7, 3), None),
]


@pytest.mark.parametrize("name, make, make_torch, shape", CASES, ids=[c[0] for c in CASES])
def test_outputs_match_pytorch(name, make, make_torch, shape) -> None:  # noqa: ANN001
    dlrun.manual_seed(0)
    m = make()
    tm = _to_torch(m, make_torch())
    rng = np.random.default_rng(0)
    x = rng.integers(0, 7, (2, 5)) if shape is None else rng.standard_normal(shape)
    ours = _flat(m(dlrun.tensor(x)))
    theirs = _flat(tm(torch.from_numpy(x)))
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cls, shape", [("BatchNorm1d", (6, 3)), ("BatchNorm1d", (4, 3, 5)),
                                        ("BatchNorm2d", (4, 3, 2, 3))])
def test_batchnorm_train_then_eval_matches_pytorch(cls: str, shape: tuple[int, ...]) -> None:
    m = getattr(nn, cls)(3, momentum=0.3)
    tm = getattr(torch.nn, cls)(3, momentum=0.3)
    with dlrun.no_grad():
        m.weight.copy_(dlrun.tensor([1.5, 0.5, -1.0]))
        m.bias.copy_(dlrun.tensor([0.1, 0.2, 0.3]))
    tm = _to_torch(m, tm, train=True)
    rng = np.random.default_rng(1)
    for _ in range(2):
        x = rng.standard_normal(shape)
        np.testing.assert_allclose(m(dlrun.tensor(x)).numpy(),
                                   tm(torch.from_numpy(x)).detach().numpy(), rtol=1e-10,
                                   atol=1e-10)
    for k, v in tm.state_dict().items():
        np.testing.assert_allclose(m.state_dict()[k].numpy(), v.numpy(), rtol=1e-12,
                                   atol=1e-12, err_msg=k)
    m.eval()
    tm.eval()
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(m(dlrun.tensor(x)).numpy(),
                               tm(torch.from_numpy(x)).detach().numpy(), rtol=1e-10, atol=1e-10)


def test_pytorch_state_dict_loads_into_dlrun() -> None:
    tm = torch.nn.LSTM(3, 4, num_layers=2).double()
    m = nn.LSTM(3, 4, num_layers=2).double()
    m.load_state_dict({k: v.numpy() for k, v in tm.state_dict().items()})
    x = np.random.default_rng(2).standard_normal((5, 2, 3))
    np.testing.assert_allclose(m(dlrun.tensor(x))[0].numpy(),
                               tm(torch.from_numpy(x))[0].detach().numpy(), rtol=1e-10,
                               atol=1e-10)


def test_safetensors_file_round_trip(tmp_path) -> None:  # noqa: ANN001
    st_numpy = pytest.importorskip("safetensors.numpy")
    st_torch = pytest.importorskip("safetensors.torch")
    m = nn.GRU(3, 4, num_layers=2).double()
    path = str(tmp_path / "gru.safetensors")
    st_numpy.save_file({k: np.ascontiguousarray(v.numpy()) for k, v in m.state_dict().items()},
                       path)
    tm = torch.nn.GRU(3, 4, num_layers=2).double()
    tm.load_state_dict(st_torch.load_file(path))
    x = np.random.default_rng(3).standard_normal((4, 2, 3))
    np.testing.assert_allclose(m(dlrun.tensor(x))[0].numpy(),
                               tm(torch.from_numpy(x))[0].detach().numpy(), rtol=1e-10,
                               atol=1e-10)
