"""`gpt`: a decoder-only transformer language model, the architecture of karpathy/nanoGPT.

Token embedding `transformer.wte` + learned position embedding `transformer.wpe` -> dropout ->
`n_layer` pre-LayerNorm blocks `transformer.h.<i>` (x + attn(ln_1(x)), then x + mlp(ln_2(x)))
-> `transformer.ln_f` -> `lm_head` (no bias). Attention is causal
`F.scaled_dot_product_attention`; the MLP is Linear(C, 4C) -> exact GELU -> Linear(4C, C).
With `tie_weights` (the default) `lm_head.weight` IS `transformer.wte.weight`: one Parameter,
saved under both names (as PyTorch does), trained and counted once. nanoGPT's init: every
Linear and Embedding weight N(0, 0.02), biases zero, each `c_proj.weight` N(0, 0.02/sqrt(2 L)).

Input (B, T) int token ids with T <= block_size; output logits (B, T, vocab_size), the layout of
the other language models (flatten to (B*T, vocab_size) for cross_entropy).

>>> import dlrun
>>> from dlrun.models.gpt import GPT, GPTConfig
>>> model = GPT(GPTConfig(block_size=16, vocab_size=65, n_layer=2, n_head=2, n_embd=32))
>>> model(dlrun.randint(0, 65, (3, 16))).shape
(3, 16, 65)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from dlrun import functional as F
from dlrun.config.fields import Bool, PositiveInt, Probability
from dlrun.engine.tensor import Tensor
from dlrun.errors import ConfigError
from dlrun.models._meta import DataMeta
from dlrun.models.section import ModelSection
from dlrun.nn import (
    GELU,
    Dropout,
    Embedding,
    LayerNorm,
    Linear,
    Module,
    ModuleDict,
    ModuleList,
    init,
)


@dataclass(frozen=True)
class GPTConfig:
    """nanoGPT's GPTConfig (its names and meanings), plus `tie_weights`."""

    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: Bool = True  # biases in the Linears and LayerNorms
    tie_weights: Bool = True  # lm_head.weight is transformer.wte.weight

    def __post_init__(self) -> None:
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"GPTConfig: {name} must be a positive int, got {v!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd {self.n_embd} is not divisible by n_head "
                             f"{self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig: dropout must be in [0, 1), got {self.dropout!r}")


class CausalSelfAttention(Module):
    """Multi-head causal self-attention: c_attn (C -> 3C) splits into q, k, v; c_proj (C -> C)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        # attn_dropout is kept for nanoGPT's module tree; the dropout on the attention
        # probabilities happens inside scaled_dot_product_attention (dropout_p).
        self.attn_dropout = Dropout(config.dropout)
        self.resid_dropout = Dropout(config.dropout)
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.heads(x)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.merge(y)

    def heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Queries, keys and values of x (B, T, C), each (B, n_head, T, C // n_head)."""
        b, t, c = x.shape
        return tuple(z.reshape(b, t, self.n_head, c // self.n_head).transpose(1, 2)
                     for z in self.c_attn(x).split(self.n_embd, dim=2))

    def merge(self, y: Tensor) -> Tensor:
        """The attended heads (B, n_head, T, hs) side by side again, projected: (B, T, C)."""
        b, _, t, _ = y.shape
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(b, t, self.n_embd)))


class MLP(Module):
    """c_fc (C -> 4C) -> exact GELU -> c_proj (4C -> C) -> dropout."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = GELU(approximate="none")
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(Module):
    """A pre-LayerNorm residual block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: Tensor) -> Tensor:
        return self.after_attention(x, self.attn(self.ln_1(x)))

    def after_attention(self, x: Tensor, attended: Tensor) -> Tensor:
        """The rest of the block once attention gave `attended` (B, T, C): residual, MLP."""
        x = x + attended
        return x + self.mlp(self.ln_2(x))


class GPT(Module):
    """nanoGPT's GPT: (B, T) token ids -> (B, T, vocab_size) next-token logits."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = ModuleDict(dict(
            wte=Embedding(config.vocab_size, config.n_embd),
            wpe=Embedding(config.block_size, config.n_embd),
            drop=Dropout(config.dropout),
            h=ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            # One Parameter in two modules: parameters() yields it once (as
            # transformer.wte.weight), state_dict() holds both names, loading keeps it shared.
            self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)
        std = 0.02 / math.sqrt(2 * config.n_layer)  # GPT-2's scaled residual projections
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                init.normal_(p, mean=0.0, std=std)

    # The sizes as attributes, for code that reads a nanoGPT-shaped model (e.g. a KV cache).
    block_size = property(lambda self: self.config.block_size)
    vocab_size = property(lambda self: self.config.vocab_size)
    n_layer = property(lambda self: self.config.n_layer)
    n_head = property(lambda self: self.config.n_head)
    n_embd = property(lambda self: self.config.n_embd)

    @staticmethod
    def _init_weights(module: Module) -> None:
        if isinstance(module, Linear):
            init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, Embedding):
            init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: Tensor) -> Tensor:
        if idx.ndim != 2:
            raise ValueError(f"GPT: expected (batch, time) token ids, got shape {idx.shape}")
        t = idx.shape[1]
        if t > self.config.block_size:
            raise ValueError(f"GPT: cannot forward a sequence of length {t}, the block size is "
                             f"only {self.config.block_size}")
        tr = self.transformer
        # wpe(arange(t)) is the first t rows of its table; slicing gives the same numbers and
        # gradient without a gather and its scatter-add backward.
        x = tr.drop(tr.wte(idx) + tr.wpe.weight[:t])
        for block in tr.h:
            x = block(x)
        return self.lm_head(tr.ln_f(x))

    def num_parameters(self, trainable_only: bool = False, non_embedding: bool = False) -> int:
        """Scalar parameters, a tied weight once; non_embedding leaves out the position table
        (nanoGPT's get_num_params convention; the token table stays, it is also the lm_head)."""
        n = super().num_parameters(trainable_only)
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def get_num_params(self, non_embedding: bool = True) -> int:
        """nanoGPT's name and default: the count without the position embeddings."""
        return self.num_parameters(non_embedding=non_embedding)

    def extra_repr(self) -> str:
        c = self.config
        return (f"n_layer={c.n_layer}, n_head={c.n_head}, n_embd={c.n_embd}, "
                f"block_size={c.block_size}, vocab_size={c.vocab_size}")

    # ----- generation with a KV cache (the logic lives in dlrun.models.generation) ------------
    def new_kv_cache(self, batch: int = 1) -> Any:
        """Zeroed key and value buffers (batch, n_head, block_size, head_dim), one per layer."""
        from dlrun.models.generation import KVCache

        return KVCache(self, batch)

    def forward_prompt(self, idx: Tensor, last: Tensor, cache: Any) -> Tensor:
        """(B, V) logits after the context idx (B, block_size), right-padded, whose last real
        token is at index `last` (int64 tensor); fills `cache`."""
        from dlrun.models.generation import kv_prompt

        return kv_prompt(self, idx, last, cache)

    def forward_step(self, token: Tensor, pos: Tensor, cache: Any) -> Tensor:
        """(B, V) logits after one more token (B, 1) at position `pos` (int64 tensor)."""
        from dlrun.models.generation import kv_step

        return kv_step(self, token, pos, cache)

    def generate(self, prompt: Any, max_new_tokens: int, **options: Any) -> Any:
        """Sample `max_new_tokens` ids after `prompt` (ids) with a KV cache; options as
        dlrun.models.generation.generate (temperature, top_k, seed, static, method)."""
        from dlrun.models.generation import generate

        return generate(self, prompt, max_new_tokens, **options)


class GPTSection(ModelSection):
    """`type: gpt`: nanoGPT's decoder-only transformer, language models only (`n_layer`,
    `n_head`, `n_embd`, `block_size` (default: the data's seq_len), `dropout`, `bias`,
    `tie_weights`)."""

    type: Literal["gpt"] = "gpt"
    n_layer: PositiveInt = 4
    n_head: PositiveInt = 4
    n_embd: PositiveInt = 128
    block_size: PositiveInt | None = None
    dropout: Probability = 0.0
    bias: Bool = True
    tie_weights: Bool = True

    def build(self, data: DataMeta, path: str) -> Module:
        if data.task != "language_model" or data.vocab_size is None:
            given = ("floats" if data.vocab_size is None else "token ids") + f" for {data.task}"
            raise ConfigError(f"{path}.type: 'gpt' is a language model and needs token data (a "
                              "language_model dataset with a vocab_size); this dataset gives "
                              f"{given}")
        if len(data.input_shape) != 1:
            raise ConfigError(f"{path}.type: token inputs must have shape (T,), the dataset "
                              f"gives {data.input_shape}")
        seq_len = data.input_shape[0]
        if self.n_embd % self.n_head:
            raise ConfigError(f"{path}.n_embd: {self.n_embd} is not divisible by "
                              f"{path}.n_head: {self.n_head}")
        block_size = self.block_size or seq_len
        if block_size < seq_len:
            raise ConfigError(f"{path}.block_size: {block_size} is shorter than the data's "
                              f"seq_len {seq_len}; use a block_size >= {seq_len} (or leave it "
                              "out)")
        return GPT(GPTConfig(block_size=block_size, vocab_size=data.out_features,
                             n_layer=self.n_layer, n_head=self.n_head, n_embd=self.n_embd,
                             dropout=self.dropout, bias=self.bias, tie_weights=self.tie_weights))
