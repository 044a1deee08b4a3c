"""RNN / LSTM / GRU forward against a NumPy reference of the published equations (float64)."""

from __future__ import annotations

import numpy as np
import pytest

import dlrun
from dlrun import nn


def _sig(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _np_cell(mode: str, x, h, c, w_ih, w_hh, b_ih, b_hh):  # noqa: ANN001, ANN202
    gi, gh = x @ w_ih.T + b_ih, h @ w_hh.T + b_hh
    if mode == "RNN":
        return np.tanh(gi + gh), None
    if mode == "LSTM":
        i, f, g, o = np.split(gi + gh, 4, axis=-1)
        c = _sig(f) * c + _sig(i) * np.tanh(g)
        return _sig(o) * np.tanh(c), c
    r_i, z_i, n_i = np.split(gi, 3, axis=-1)
    r_h, z_h, n_h = np.split(gh, 3, axis=-1)
    r, z = _sig(r_i + r_h), _sig(z_i + z_h)
    n = np.tanh(n_i + r * n_h)
    return (1 - z) * n + z * h, None


def _np_forward(mode: str, sd: dict, x: np.ndarray, layers: int, hidden: int, bidir: bool):
    """x (T, B, F) -> (output (T, B, D*H), h_n, c_n) from the equations, layer by layer."""
    steps, batch = x.shape[:2]
    h_n, c_n, inp = [], [], x
    for layer in range(layers):
        outs = []
        for d in range(2 if bidir else 1):
            sfx = f"_l{layer}" + ("_reverse" if d else "")
            w = [sd[f"{k}{sfx}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h = np.zeros((batch, hidden))
            c = np.zeros((batch, hidden))
            out = [None] * steps
            for t in (range(steps - 1, -1, -1) if d else range(steps)):
                h, c = _np_cell(mode, inp[t], h, c, *w)
                out[t] = h
            outs.append(np.stack(out))
            h_n.append(h)
            c_n.append(c)
        inp = np.concatenate(outs, -1)
    return inp, np.stack(h_n), (np.stack(c_n) if mode == "LSTM" else None)


@pytest.mark.parametrize("cls, mode", [(nn.RNN, "RNN"), (nn.LSTM, "LSTM"), (nn.GRU, "GRU")])
@pytest.mark.parametrize("bidir", [False, True])
def test_forward_matches_numpy_equations(cls, mode, bidir) -> None:  # noqa: ANN001
    dlrun.manual_seed(0)
    layer = cls(3, 4, num_layers=2, bidirectional=bidir).double()
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    sd = {k: v.numpy() for k, v in layer.state_dict().items()}
    out, state = layer(dlrun.tensor(x))
    ref_out, ref_h, ref_c = _np_forward(mode, sd, x, 2, 4, bidir)
    np.testing.assert_allclose(out.numpy(), ref_out, rtol=1e-12, atol=1e-12)
    if mode == "LSTM":
        np.testing.assert_allclose(state[0].numpy(), ref_h, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(state[1].numpy(), ref_c, rtol=1e-12, atol=1e-12)
    else:
        np.testing.assert_allclose(state.numpy(), ref_h, rtol=1e-12, atol=1e-12)


def test_parameter_names_and_layouts_are_pytorchs() -> None:
    lstm = nn.LSTM(3, 5, num_layers=2, bidirectional=True)
    shapes = {k: v.shape for k, v in lstm.state_dict().items()}
    assert list(shapes)[:5] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                                "weight_ih_l0_reverse"]
    assert shapes["weight_ih_l0"] == (20, 3) and shapes["weight_hh_l0"] == (20, 5)
    assert shapes["weight_ih_l1"] == (20, 10) and shapes["bias_hh_l1_reverse"] == (20,)
    gru = nn.GRU(2, 4, bias=False)
    assert list(gru.state_dict()) == ["weight_ih_l0", "weight_hh_l0"]
    assert gru.weight_ih_l0.shape == (12, 2)
    bound = 1 / np.sqrt(5)
    assert all(np.abs(p.numpy()).max() <= bound for p in lstm.parameters())


def test_batch_first_unbatched_and_initial_state() -> None:
    dlrun.manual_seed(1)
    lstm = nn.LSTM(3, 4, num_layers=2, batch_first=True).double()
    x = dlrun.randn(2, 6, 3, dtype=np.float64)
    out, (h, c) = lstm(x)
    assert out.shape == (2, 6, 4) and h.shape == (2, 2, 4) and c.shape == (2, 2, 4)
    np.testing.assert_array_equal(out.numpy()[:, -1], h.numpy()[-1])
    zeros = dlrun.zeros(2, 2, 4, dtype=np.float64)
    out2, _ = lstm(x, (zeros, zeros))
    np.testing.assert_array_equal(out.numpy(), out2.numpy())
    lstm.batch_first = False
    single, (h1, _) = lstm(x[0])  # unbatched (T, F)
    assert single.shape == (6, 4) and h1.shape == (2, 4)
    np.testing.assert_allclose(single.numpy(), out.numpy()[0], rtol=1e-12)


def test_dropout_between_layers_only_in_training() -> None:
    gru = nn.GRU(2, 3, num_layers=2, dropout=0.5)
    x = dlrun.randn(4, 1, 2)
    gru.eval()
    a, _ = gru(x)
    b, _ = gru(x)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    gru.train()
    dlrun.manual_seed(0)
    c, _ = gru(x)
    assert not np.allclose(a.numpy(), c.numpy())


def test_cells_match_one_step_of_the_layers() -> None:
    dlrun.manual_seed(2)
    for cell_cls, layer_cls in ((nn.RNNCell, nn.RNN), (nn.LSTMCell, nn.LSTM),
                                (nn.GRUCell, nn.GRU)):
        cell, layer = cell_cls(3, 4), layer_cls(3, 4)
        layer.load_state_dict({f"{k}_l0": v for k, v in cell.state_dict().items()})
        x = dlrun.randn(2, 3)
        h = cell(x)
        out, _ = layer(x.unsqueeze(0))
        h = h[0] if isinstance(h, tuple) else h
        np.testing.assert_allclose(h.numpy(), out.numpy()[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cls", [nn.RNN, nn.LSTM, nn.GRU])
def test_both_projection_strategies_agree(cls) -> None:  # noqa: ANN001
    """'step' (one matmul per step, the default) and 'sequence' (one matmul for all steps)."""
    dlrun.manual_seed(0)
    layer = cls(3, 4, num_layers=2, bidirectional=True).double()
    x = dlrun.randn(5, 2, 3, dtype=np.float64, requires_grad=True)
    results = []
    for projection in ("step", "sequence"):
        layer.projection = projection
        layer.zero_grad()
        x.grad = None
        out, _ = layer(x)
        (out * out).sum().backward()
        results.append([out.numpy(), x.grad.numpy(), *(p.grad.numpy() for p in layer.parameters())])
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
