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

from collections.abc import Mapping
from typing import Any

from dlrun import functional as F
from dlrun.engine.tensor import Tensor
from dlrun.errors import ConfigError
from dlrun.models._meta import DataMeta
from dlrun.models._section import Section
from dlrun.nn import GRU, LSTM, RNN, Dropout, Embedding, Linear, Module, RNNBase

KEYS = {"type", "hidden_size", "num_layers", "dropout", "embedding_dim", "bidirectional"}


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


def recurrent_keys(kind: str) -> set[str]:
    """The keys a `model:` section of this recurrent family takes (`nonlinearity`: rnn only)."""
    return KEYS | ({"nonlinearity"} if kind == "rnn" else set())


def build_recurrent(cfg: Mapping[str, Any], meta: DataMeta, path: str) -> Module:
    kind = cfg.get("type")
    s = Section(cfg, path, recurrent_keys(str(kind)))
    hidden = s.int("hidden_size", 128)
    layers = s.int("num_layers", 1)
    dropout = s.float("dropout", 0.0, 0.0, 1.0, high_open=True)
    bidirectional = s.bool("bidirectional", False)
    tokens = meta.task == "language_model" or meta.vocab_size is not None
    if s.has("embedding_dim") and not tokens:
        raise ConfigError(f"{s.key('embedding_dim')}: only used with token inputs (a dataset "
                          "with a vocab_size), this dataset has float features")
    emb_dim = s.int("embedding_dim", min(hidden, 64)) if tokens else 0
    shape = meta.input_shape
    if tokens and len(shape) != 1:
        raise ConfigError(f"{path}.type: token inputs must have shape (T,), the dataset gives "
                          f"{shape}")
    if not tokens and len(shape) not in (1, 2):
        raise ConfigError(f"{path}.type: a {kind} needs sequences (T,) or (T, features), the "
                          f"dataset's input shape is {shape}")
    if meta.task == "language_model" and bidirectional:
        raise ConfigError(f"{s.key('bidirectional')}: a language model cannot look ahead; "
                          "use bidirectional: false")
    in_size = emb_dim if tokens else (shape[1] if len(shape) == 2 else 1)
    common = dict(num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0,
                  bidirectional=bidirectional)
    if kind == "rnn":
        nl = s.choice("nonlinearity", ["tanh", "relu"], "tanh")
        rnn: RNNBase = RNN(in_size, hidden, nonlinearity=nl, **common)
    elif kind == "lstm":
        rnn = LSTM(in_size, hidden, **common)
    else:
        rnn = GRU(in_size, hidden, **common)
    if meta.task == "language_model":
        return LanguageModel(meta.out_features, emb_dim, rnn, dropout)
    emb = Embedding(meta.vocab_size, emb_dim) if tokens else None
    return SequenceModel(rnn, meta.out_features, emb, dropout)
