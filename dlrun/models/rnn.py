"""`rnn`, `lstm`, `gru`: recurrent models with a sequence head or a language-model head.

- classification / regression: input (B, T, F) floats ((B, T) is read as F = 1), or (B, T) token
  ids when the dataset gives a vocab_size; the output comes from the last hidden state (both
  directions' final states when bidirectional).
- language_model: input (B, T) int64 token ids -> Embedding -> recurrent stack -> Linear at every
  step -> logits (B, T, vocab_size); flatten to (B*T, vocab_size) for cross_entropy.
  `step(tokens, state)` gives the last position's logits and the recurrent state, so sampling
  feeds the prompt once and then one token per call (see models/generation.py).
"""

from __future__ import annotations

from typing import Any, Literal

from dlrun import functional as F
from dlrun.config.fields import Bool, PositiveInt, Probability
from dlrun.engine.tensor import Tensor
from dlrun.errors import ConfigError
from dlrun.models._meta import DataMeta
from dlrun.models.section import ModelSection
from dlrun.nn import GRU, LSTM, RNN, Dropout, Embedding, Linear, Module, RNNBase


def _last_state(rnn: RNNBase, h_n: Tensor) -> Tensor:
    """The top layer's final state (B, H), both directions concatenated when bidirectional."""
    if rnn.bidirectional:
        return F.cat([h_n[-2], h_n[-1]], -1)
    return h_n[-1]


class SequenceModel(Module):
    """Recurrent encoder + Linear head on the last hidden state (sequence classification/regr.)."""

    def __init__(self, rnn: RNNBase, out_features: int, embedding: Embedding | None = None,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if embedding is not None:
            self.embedding = embedding
        else:
            self.register_module("embedding", None)
        self.rnn = rnn
        self.dropout = Dropout(dropout)
        self.head = Linear(rnn.hidden_size * rnn.num_directions, out_features)

    def forward(self, x: Tensor) -> Tensor:
        if self.embedding is not None:
            x = self.embedding(x)
        elif x.ndim == 2:
            x = F.unsqueeze(x, -1)
        _, h = self.rnn(x)
        h_n = h[0] if isinstance(h, tuple) else h
        return self.head(self.dropout(_last_state(self.rnn, h_n)))


class LanguageModel(Module):
    """Embedding -> recurrent stack -> Linear to the vocabulary at every step: (B, T, V) logits."""

    def __init__(self, vocab_size: int, embedding_dim: int, rnn: RNNBase,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = Embedding(vocab_size, embedding_dim)
        self.dropout = Dropout(dropout)
        self.rnn = rnn
        self.head = Linear(rnn.hidden_size * rnn.num_directions, vocab_size)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(self.dropout(self.embedding(x)))
        return self.head(self.dropout(out))

    def step(self, tokens: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """Logits of the last position and the recurrent state after `tokens` (B, T), starting
        from `state` (None: zeros; else what the previous call returned: h_n, or (h_n, c_n) for
        an LSTM). Feeding a sequence in pieces gives the logits of feeding it whole, so sampling
        carries the state: the prompt once, then one token per call (the state has seen the
        whole history, no window)."""
        out, state = self.rnn(self.dropout(self.embedding(tokens)), state)
        return self.head(self.dropout(out[:, -1])), state

    def generate(self, prompt: Any, max_new_tokens: int, **options: Any) -> Any:
        """Sample `max_new_tokens` ids after `prompt` (ids) carrying the recurrent state; see
        dlrun.models.generation.generate for the options (temperature, top_k, seed, static)."""
        from dlrun.models.generation import generate

        return generate(self, prompt, max_new_tokens, **options)


class RecurrentSection(ModelSection):
    """`type: lstm` or `gru`: recurrent layers (`hidden_size`, `num_layers`, `dropout`,
    `bidirectional`, `embedding_dim` for token inputs; default min(hidden_size, 64)) and a
    Linear head."""

    type: Literal["lstm", "gru"] = "lstm"
    hidden_size: PositiveInt = 128
    num_layers: PositiveInt = 1
    dropout: Probability = 0.0
    bidirectional: Bool = False
    embedding_dim: PositiveInt | None = None

    def build(self, data: DataMeta, path: str) -> Module:
        tokens = data.task == "language_model" or data.vocab_size is not None
        _check_inputs(self, data, path, tokens)
        emb_dim = (self.embedding_dim or min(self.hidden_size, 64)) if tokens else 0
        shape = data.input_shape
        in_size = emb_dim if tokens else (shape[1] if len(shape) == 2 else 1)
        rnn = self._layers(in_size, dict(
            num_layers=self.num_layers, batch_first=True, bidirectional=self.bidirectional,
            dropout=self.dropout if self.num_layers > 1 else 0.0))
        if data.task == "language_model":
            return LanguageModel(data.out_features, emb_dim, rnn, self.dropout)
        emb = Embedding(data.vocab_size, emb_dim) if tokens else None
        return SequenceModel(rnn, data.out_features, emb, self.dropout)

    def _layers(self, in_size: int, common: dict[str, Any]) -> RNNBase:
        return (LSTM if self.type == "lstm" else GRU)(in_size, self.hidden_size, **common)


class RNNSection(RecurrentSection):
    """`type: rnn`: an Elman RNN, the keys of lstm/gru and its `nonlinearity`."""

    type: Literal["rnn"] = "rnn"  # type: ignore[assignment]
    nonlinearity: Literal["tanh", "relu"] = "tanh"

    def _layers(self, in_size: int, common: dict[str, Any]) -> RNNBase:
        return RNN(in_size, self.hidden_size, nonlinearity=self.nonlinearity, **common)


def _check_inputs(s: RecurrentSection, data: DataMeta, path: str, tokens: bool) -> None:
    """ConfigError when the data's shape or task does not fit the section."""
    shape = data.input_shape
    if s.embedding_dim is not None and not tokens:
        raise ConfigError(f"{path}.embedding_dim: only used with token inputs (a dataset with a "
                          "vocab_size), this dataset has float features")
    if tokens and len(shape) != 1:
        raise ConfigError(f"{path}.type: token inputs must have shape (T,), the dataset gives "
                          f"{shape}")
    if not tokens and len(shape) not in (1, 2):
        raise ConfigError(f"{path}.type: a {s.type} needs sequences (T,) or (T, features), the "
                          f"dataset's input shape is {shape}")
    if data.task == "language_model" and s.bidirectional:
        raise ConfigError(f"{path}.bidirectional: a language model cannot look ahead; use "
                          "bidirectional: false")
