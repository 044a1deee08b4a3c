"""Recurrent layers RNN, LSTM and GRU (and their cells) with PyTorch's parameters and semantics.

Parameter names and layouts are PyTorch's: `weight_ih_l{k}` (gates*H, in), `weight_hh_l{k}`
(gates*H, H), `bias_ih_l{k}`, `bias_hh_l{k}` (and `..._reverse` for the backward direction), with
gate order i, f, g, o (LSTM) and r, z, n (GRU). The sequence is unrolled with a Python loop over
time steps, so a fixed-length step traces into a static graph; the input projection of a whole
sequence is one matmul.

>>> import dlrun
>>> from dlrun import nn
>>> lstm = nn.LSTM(3, 5, num_layers=2, batch_first=True)
>>> out, (h, c) = lstm(dlrun.randn(4, 7, 3))
>>> out.shape, h.shape
((4, 7, 5), (2, 4, 5))
"""

from __future__ import annotations

import math
from typing import Any

from dlrun import functional as F
from dlrun.engine.creation import empty, zeros
from dlrun.engine.tensor import Tensor
from dlrun.nn import init
from dlrun.nn.module import Module, Parameter

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def _gate(x: Tensor, k: int, h: int) -> Tensor:
    """Gate k of a (..., gates*h) tensor."""
    return F.narrow(x, x.ndim - 1, k * h, h)


def _rnn_step(gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None, relu: bool) -> Tensor:
    """h' = act(gi + h @ W_hh^T + b_hh), gi = x @ W_ih^T + b_ih precomputed."""
    pre = gi + F.linear(h, w_hh, b_hh)
    return F.relu(pre) if relu else F.tanh(pre)


def _lstm_step(gi: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor | None,
               size: int) -> tuple[Tensor, Tensor]:
    """One LSTM step; gi = x @ W_ih^T + b_ih precomputed; gate order i, f, g, o."""
    gates = gi + F.linear(h, w_hh, b_hh)
    i = F.sigmoid(_gate(gates, 0, size))
    f = F.sigmoid(_gate(gates, 1, size))
    g = F.tanh(_gate(gates, 2, size))
    o = F.sigmoid(_gate(gates, 3, size))
    c = f * c + i * g
    return o * F.tanh(c), c


def _gru_step(gi: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None, size: int) -> Tensor:
    """One GRU step (PyTorch's formula): n = tanh(W_in x + b_in + r * (W_hn h + b_hn))."""
    gh = F.linear(h, w_hh, b_hh)
    r = F.sigmoid(_gate(gi, 0, size) + _gate(gh, 0, size))
    z = F.sigmoid(_gate(gi, 1, size) + _gate(gh, 1, size))
    n = F.tanh(_gate(gi, 2, size) + r * _gate(gh, 2, size))
    return n + z * (h - n)  # == (1 - z) * n + z * h


class RNNBase(Module):
    """Shared machinery of RNN, LSTM and GRU: parameters, init, the unrolled forward.

    `projection` picks how x @ W_ih^T is computed: "sequence" (one matmul for the whole sequence,
    then a slice per step; the default) or "step" (one matmul per time step). The slices'
    gradients are assembled once (autograd.SliceGrads), so "sequence" is the faster of the two.
    """

    projection = "sequence"

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, device: str | None = None,
                 dtype: Any = None) -> None:
        super().__init__()
        name = type(self).__name__
        for key, v in (("input_size", input_size), ("hidden_size", hidden_size),
                       ("num_layers", num_layers)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{name}: {key} must be a positive int, got {v!r}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1], got {dropout}")
        self.mode = mode
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first = bias, batch_first
        self.dropout, self.bidirectional = float(dropout), bidirectional
        gate_size = _GATES[mode] * hidden_size
        directions = 2 if bidirectional else 1
        self._weight_names: list[tuple[str, str, str | None, str | None]] = []
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else hidden_size * directions
            for d in range(directions):
                sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
                names = (f"weight_ih{sfx}", f"weight_hh{sfx}",
                         f"bias_ih{sfx}" if bias else None, f"bias_hh{sfx}" if bias else None)
                setattr(self, names[0], Parameter(empty(gate_size, layer_in, dtype=dtype,
                                                        device=device)))
                setattr(self, names[1], Parameter(empty(gate_size, hidden_size, dtype=dtype,
                                                        device=device)))
                if bias:
                    setattr(self, names[2], Parameter(empty(gate_size, dtype=dtype,
                                                            device=device)))
                    setattr(self, names[3], Parameter(empty(gate_size, dtype=dtype,
                                                            device=device)))
                self._weight_names.append(names)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias U(-1/sqrt(hidden_size), 1/sqrt(hidden_size)), as PyTorch."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def _weights(self, layer: int, direction: int) -> tuple[Tensor, Tensor, Any, Any]:
        names = self._weight_names[layer * self.num_directions + direction]
        return tuple(None if n is None else getattr(self, n) for n in names)  # type: ignore

    def forward(self, input: Tensor, hx: Any = None) -> tuple[Tensor, Any]:
        """input (T, B, in) ((B, T, in) if batch_first, or unbatched (T, in)) -> (output, h_n)."""
        name = type(self).__name__
        if input.ndim not in (2, 3):
            raise ValueError(f"{name}: expected 2-D or 3-D input, got shape {input.shape}")
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"{name}: input of shape {input.shape} has {input.shape[-1]} features, "
                f"expected input_size={self.input_size}"
            )
        batched = input.ndim == 3
        lstm = self.mode == "LSTM"
        if not batched:
            input = F.unsqueeze(input, 1)
            if hx is not None:
                hx = tuple(F.unsqueeze(h, 1) for h in hx) if lstm else F.unsqueeze(hx, 1)
        elif self.batch_first:
            input = F.transpose(input, 0, 1)
        steps, batch = input.shape[0], input.shape[1]
        state_shape = (self.num_layers * self.num_directions, batch, self.hidden_size)
        if hx is None:
            h0 = zeros(state_shape, dtype=input.dtype, device=input.device)
            c0 = h0 if lstm else None
        elif lstm:
            h0, c0 = hx
        else:
            h0, c0 = hx, None
        for what, t in (("h_0", h0), ("c_0", c0)):
            if t is not None and t.shape != state_shape:
                raise ValueError(f"{name}: expected {what} of shape {state_shape}, got {t.shape}")

        h_n, c_n = [], []
        layer_in: Tensor | list[Tensor] = input
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.num_directions):
                idx = layer * self.num_directions + d
                h_seq, h_last, c_last = self._run_direction(
                    layer_in, layer, d, h0[idx], None if c0 is None else c0[idx])
                outs.append(h_seq)
                h_n.append(h_last)
                c_n.append(c_last)
            layer_in = [F.cat([o[t] for o in outs], -1) for t in range(steps)] if len(
                outs) > 1 else outs[0]
            if self.dropout > 0.0 and self.training and layer < self.num_layers - 1:
                layer_in = [F.dropout(x, self.dropout, True) for x in layer_in]
        # batch_first: stacked along dim 1, so the output is contiguous (B, T, H) and what
        # follows (a per-step Linear head) runs on it without a transpose
        output = F.stack(layer_in, 1 if batched and self.batch_first else 0)
        hn = F.stack(h_n, 0)
        cn = F.stack(c_n, 0) if lstm else None
        if not batched:
            output = F.squeeze(output, 1)
            hn = F.squeeze(hn, 1)
            cn = F.squeeze(cn, 1) if lstm else None
        return output, ((hn, cn) if lstm else hn)

    def _run_direction(self, x: Tensor | list[Tensor], layer: int, direction: int, h: Tensor,
                       c: Tensor | None) -> tuple[list[Tensor], Tensor, Tensor | None]:
        """Unroll one layer in one direction over a (T, B, F) tensor or a list of T (B, F)
        tensors; returns the T outputs in time order and the final state."""
        w_ih, w_hh, b_ih, b_hh = self._weights(layer, direction)
        steps = len(x) if isinstance(x, list) else x.shape[0]
        size = self.hidden_size
        if self.mode == "GRU":
            bias_in, bias_h = b_ih, b_hh  # GRU keeps b_hn inside r * (W_hn h + b_hn)
        else:
            bias_in = None if b_ih is None else b_ih + b_hh
            bias_h = None
        if self.projection == "sequence":
            seq = F.stack(x, 0) if isinstance(x, list) else x
            proj = F.linear(F.reshape(seq, steps * seq.shape[1], seq.shape[2]), w_ih, bias_in)
            proj = F.reshape(proj, steps, seq.shape[1], proj.shape[-1])
            inputs = [proj[t] for t in range(steps)]
        else:
            xs = x if isinstance(x, list) else [x[t] for t in range(steps)]
            inputs = [F.linear(xt, w_ih, bias_in) for xt in xs]
        order = range(steps - 1, -1, -1) if direction == 1 else range(steps)
        outs: list[Tensor | None] = [None] * steps
        for t in order:
            gi = inputs[t]
            if self.mode == "LSTM":
                h, c = _lstm_step(gi, h, c, w_hh, bias_h, size)
            elif self.mode == "GRU":
                h = _gru_step(gi, h, w_hh, bias_h, size)
            else:
                h = _rnn_step(gi, h, w_hh, bias_h, self.mode == "RNN_RELU")
            outs[t] = h
        return outs, h, c  # type: ignore[return-value]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(RNNBase):
    """Elman RNN: h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh) (or relu)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device: str | None = None,
                 dtype: Any = None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device, dtype)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.nonlinearity == "tanh" else s + ", nonlinearity='relu'"


class LSTM(RNNBase):
    """Long short-term memory; returns (output, (h_n, c_n)); gate order i, f, g, o."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: str | None = None, dtype: Any = None) -> None:
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device, dtype)


class GRU(RNNBase):
    """Gated recurrent unit (PyTorch's formula); returns (output, h_n); gate order r, z, n."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: str | None = None, dtype: Any = None) -> None:
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, device, dtype)


# ----- cells ----------------------------------------------------------------------------------


class _CellBase(Module):
    _gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 device: str | None = None, dtype: Any = None) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        g = self._gates * hidden_size
        self.weight_ih = Parameter(empty(g, input_size, dtype=dtype, device=device))
        self.weight_hh = Parameter(empty(g, hidden_size, dtype=dtype, device=device))
        if bias:
            self.bias_ih = Parameter(empty(g, dtype=dtype, device=device))
            self.bias_hh = Parameter(empty(g, dtype=dtype, device=device))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.parameters():
            init.uniform_(p, -bound, bound)

    def _zeros(self, x: Tensor) -> Tensor:
        return zeros(x.shape[:-1] + (self.hidden_size,), dtype=x.dtype, device=x.device)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class RNNCell(_CellBase):
    """One Elman RNN step: h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device: str | None = None,
                 dtype: Any = None) -> None:
        super().__init__(input_size, hidden_size, bias, device, dtype)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError("RNNCell: nonlinearity must be 'tanh' or 'relu'")
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        h = self._zeros(input) if hx is None else hx
        gi = F.linear(input, self.weight_ih, self.bias_ih)
        return _rnn_step(gi, h, self.weight_hh, self.bias_hh, self.nonlinearity == "relu")


class LSTMCell(_CellBase):
    """One LSTM step: (h, c) -> (h', c')."""

    _gates = 4

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, Tensor]:
        h, c = (self._zeros(input), self._zeros(input)) if hx is None else hx
        gi = F.linear(input, self.weight_ih, self.bias_ih)
        return _lstm_step(gi, h, c, self.weight_hh, self.bias_hh, self.hidden_size)


class GRUCell(_CellBase):
    """One GRU step: h -> h'."""

    _gates = 3

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        h = self._zeros(input) if hx is None else hx
        gi = F.linear(input, self.weight_ih, self.bias_ih)
        return _gru_step(gi, h, self.weight_hh, self.bias_hh, self.hidden_size)
