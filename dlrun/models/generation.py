"""Autoregressive sampling from language models: carried recurrent state, a GPT key/value cache,
or (the reference) the model re-run on the whole context for every token.

`generate(model, prompt_ids, n)` picks how to decode from the model: a recurrent LanguageModel
carries its state (the prompt once, then one token per call; the state has seen the whole
history), a GPT keeps a KV cache (`KVCache`: per layer, key and value buffers
(B, n_head, block_size, head_dim)). With `static=True` the two functions of a decoder (the prompt
and the one-token step) go through `dlrun.compile`, and their input shapes never change, so each
is traced exactly once however many tokens are generated:

- GPT prompt: the context right-padded to block_size, with the index of its last real token as
  an int64 tensor; it writes every layer's keys and values into the cache;
- GPT step: one token and its position `pos` as an int64 tensor; it writes its key and value at
  `pos` (`where(arange(block_size) == pos, new, cache)`, then `copy_`: a state write in the
  graph) and attends to the keys at positions <= pos through a boolean mask.

When the text would pass block_size, the context is cropped to the last block_size tokens, as
nanoGPT does, and the cache is primed again from it with the prompt function (same shape, no
retrace), so the text is the text of full recompute. Sampling (`sample_next`) draws once per
token from one NumPy Generator, in float64, after temperature and top-k: every decoder, eager or
static, gives the same characters for the same seed (up to float rounding of the logits).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlrun import functional as F
from dlrun.engine.autograd import no_grad
from dlrun.engine.creation import arange, tensor, zeros
from dlrun.engine.static.compile import compile as dlrun_compile
from dlrun.engine.tensor import Tensor
from dlrun.errors import ConfigError, NumericalError

METHODS = ("auto", "kv_cache", "state", "recompute")


# ----- sampling -----------------------------------------------------------------------------------
def check_sampling(temperature: float, top_k: int | None, prefix: str = "") -> None:
    """ConfigError unless temperature > 0 (finite) and top_k is None or >= 1."""
    if not (isinstance(temperature, int | float) and math.isfinite(temperature)
            and temperature > 0):
        raise ConfigError(f"{prefix}temperature must be > 0, got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                              or top_k < 1):
        raise ConfigError(f"{prefix}top-k must be an integer >= 1, got {top_k}")


def sample_next(logits: Any, rng: np.random.Generator, temperature: float = 1.0,
                top_k: int | None = None) -> int:
    """One token id drawn from softmax(logits / temperature) in float64 with one `rng.random()`.

    top_k keeps the logits >= the k-th largest (as nanoGPT after torch.topk: logits below
    topk's last value get -inf; ties with that value are kept) and renormalises.
    """
    z = np.asarray(logits, dtype=np.float64).reshape(-1) / temperature
    if top_k is not None and top_k < z.size:
        kth = np.partition(z, z.size - top_k)[z.size - top_k]
        z = np.where(z < kth, -np.inf, z)
    top = z.max()
    if not math.isfinite(top):
        raise NumericalError(f"sampling: the model's logits are not finite (max {top})")
    p = np.exp(z - top)
    cdf = np.cumsum(p / p.sum())
    u = rng.random() * cdf[-1]
    return int(min(np.searchsorted(cdf, u, side="right"), z.size - 1))


# ----- the GPT key/value cache --------------------------------------------------------------------
def is_gpt(model: Any) -> bool:
    """A nanoGPT-shaped model: transformer.{wte, wpe, h, ln_f}, lm_head, block_size, n_head;
    its blocks give `attn.heads`, `attn.merge` and `after_attention` (models/gpt.py)."""
    return hasattr(model, "transformer") and hasattr(model, "block_size") and hasattr(
        model, "lm_head")


class KVCache:
    """Per-layer key and value buffers (batch, n_head, block_size, head_dim), zeros at first.

    They are plain tensors held here, not module buffers (so never saved in a checkpoint); a
    compiled prompt or step function reads them as state and its `copy_` becomes a state write.
    """

    def __init__(self, model: Any, batch: int = 1) -> None:
        p = model.transformer.wte.weight
        self.block_size, self.n_head = int(model.block_size), int(model.n_head)
        self.head_dim = int(model.n_embd) // self.n_head
        shape = (batch, self.n_head, self.block_size, self.head_dim)
        layers = len(model.transformer.h)
        self.k = [zeros(shape, dtype=p.dtype, device=p.device) for _ in range(layers)]
        self.v = [zeros(shape, dtype=p.dtype, device=p.device) for _ in range(layers)]


def _head(model: Any, x: Tensor) -> Tensor:
    """Logits (B, V) of x (B, 1, C): final LayerNorm, then lm_head."""
    out = model.lm_head(model.transformer.ln_f(x))
    return F.reshape(out, out.shape[0], out.shape[-1])


def kv_prompt(model: Any, idx: Tensor, last: Tensor, cache: KVCache) -> Tensor:
    """Logits (B, V) after the context idx (B, block_size), right-padded; `last` (int64, 0-d) is
    the index of its last real token. Every layer's keys and values go into the cache (the
    padding's too: the steps overwrite them before any query can see them)."""
    t = idx.shape[1]
    tr = model.transformer
    x = tr.wte(idx) + tr.wpe.weight[:t]
    for i, block in enumerate(tr.h):
        q, k, v = block.attn.heads(block.ln_1(x))
        cache.k[i].copy_(k)
        cache.v[i].copy_(v)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = block.after_attention(x, block.attn.merge(y))
    return _head(model, F.index_select(x, 1, F.reshape(last, 1)))


def kv_step(model: Any, token: Tensor, pos: Tensor, cache: KVCache) -> Tensor:
    """Logits (B, V) after one more token (B, 1) at position `pos` (int64, 0-d): its keys and
    values are written into the cache at pos, and it attends to the positions <= pos."""
    tr = model.transformer
    where = arange(cache.block_size, device=token.device)
    write = F.reshape(F.eq(where, pos), 1, 1, cache.block_size, 1)
    visible = F.reshape(F.le(where, pos), 1, 1, 1, cache.block_size)
    x = tr.wte(token) + tr.wpe(F.reshape(pos, 1))
    for i, block in enumerate(tr.h):
        q, k, v = block.attn.heads(block.ln_1(x))
        keys = F.where(write, k, cache.k[i])
        values = F.where(write, v, cache.v[i])
        cache.k[i].copy_(keys)
        cache.v[i].copy_(values)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=visible)
        x = block.after_attention(x, block.attn.merge(y))
    return _head(model, x)


# ----- decoders: prime(context) and step(history) give the logits of the next token ---------------
def _device(model: Any) -> str:
    return next(iter(model.parameters())).device


def _row(logits: Tensor) -> np.ndarray:
    """The first batch row of (B, V) logits as a float64 NumPy array."""
    return np.asarray(logits.numpy()[0], dtype=np.float64)


def _ids(ids: Sequence[int], device: str) -> Tensor:
    return tensor(np.array([list(ids)], dtype=np.int64), device=device)


class Decoder:
    """Gives the logits of the next token: `prime(context)` first, then `step(history)` after
    each new token. `static` compiles the decoder's `_prompt` and `_step` functions."""

    name = "decoder"

    def __init__(self, model: Any) -> None:
        self.model, self.device = model, _device(model)
        self._prompt: Callable[..., Any] | None = None
        self._step: Callable[..., Any] | None = None

    def _compile(self, prompt: Callable[..., Any], step: Callable[..., Any],
                 static: bool) -> None:
        self._prompt = dlrun_compile(prompt) if static else prompt
        self._step = dlrun_compile(step) if static else step

    def trace_counts(self) -> dict[str, int]:
        """How many times the prompt and the step function were traced (empty when eager)."""
        fns = (("prompt", self._prompt), ("step", self._step))
        return {k: f.trace_count for k, f in fns if hasattr(f, "trace_count")}

    def prime(self, ids: Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    def step(self, ids: Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    def warmup(self, ids: Sequence[int]) -> None:
        """Trace the compiled functions before a timed loop: one prompt, one step."""
        if self.trace_counts():
            self.prime(ids)
            self.step(ids)


class RecomputeDecoder(Decoder):
    """The reference: the model re-run (eagerly) on the whole context for every token, cropped
    to the last `window` tokens (None: the whole history)."""

    name = "recompute"

    def __init__(self, model: Any, window: int | None = None) -> None:
        super().__init__(model)
        self.window = window

    def prime(self, ids: Sequence[int]) -> np.ndarray:
        out = self.model(_ids(ids[-self.window:] if self.window else ids, self.device))
        out = out[0] if isinstance(out, tuple) else out  # nanoGPT style: (logits, loss)
        return _row(out[:, -1])

    def step(self, ids: Sequence[int]) -> np.ndarray:
        return self.prime(ids)


class StateDecoder(Decoder):
    """A recurrent language model carrying its state with `model.step(tokens, state)`: the
    prompt once, then one token per call; the state has seen the whole history."""

    name = "state"

    def __init__(self, model: Any, static: bool = False) -> None:
        super().__init__(model)
        lstm = getattr(model.rnn, "mode", "") == "LSTM"
        self.state: list[Tensor] = []

        def prompt(tokens: Tensor) -> tuple[Tensor, ...]:
            logits, state = model.step(tokens)
            return (logits, *(state if lstm else (state,)))

        def step(tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
            logits, new = model.step(tokens, state if lstm else state[0])
            return (logits, *(new if lstm else (new,)))

        self._compile(prompt, step, static)

    def prime(self, ids: Sequence[int]) -> np.ndarray:
        logits, *self.state = self._prompt(_ids(ids, self.device))
        return _row(logits)

    def step(self, ids: Sequence[int]) -> np.ndarray:
        logits, *self.state = self._step(_ids(ids[-1:], self.device), *self.state)
        return _row(logits)


class KVCacheDecoder(Decoder):
    """A GPT with a KVCache: the prompt fills it, each step adds one token's keys and values."""

    name = "kv_cache"

    def __init__(self, model: Any, static: bool = False) -> None:
        super().__init__(model)
        cache = self.cache = KVCache(model)
        self.block_size = cache.block_size
        self.pos = 0  # where the next token's key and value go

        def prompt(idx: Tensor, last: Tensor) -> Tensor:
            return kv_prompt(model, idx, last, cache)

        def step(token: Tensor, pos: Tensor) -> Tensor:
            return kv_step(model, token, pos, cache)

        self._compile(prompt, step, static)

    def _int(self, value: int) -> Tensor:
        return tensor(np.array(value, dtype=np.int64), device=self.device)

    def prime(self, ids: Sequence[int]) -> np.ndarray:
        """Fill the cache from the last block_size tokens (right-padded to block_size)."""
        ctx = list(ids[-self.block_size:])
        padded = np.zeros((1, self.block_size), dtype=np.int64)
        padded[0, :len(ctx)] = ctx
        self.pos = len(ctx)
        return _row(self._prompt(tensor(padded, device=self.device), self._int(len(ctx) - 1)))

    def warmup(self, ids: Sequence[int]) -> None:
        """Trace the prompt and the step (a one-token prime leaves room for a step)."""
        super().warmup(ids[:1])

    def step(self, ids: Sequence[int]) -> np.ndarray:
        """The logits after ids[-1]; past block_size, the cropped context is primed again."""
        if self.pos >= self.block_size:
            return self.prime(ids)
        logits = self._step(_ids(ids[-1:], self.device), self._int(self.pos))
        self.pos += 1
        return _row(logits)


def make_decoder(model: Any, method: str = "auto", static: bool = False,
                 window: int | None = None) -> Decoder:
    """The decoder for `method`: auto (kv_cache for a GPT, state for a recurrent language model,
    else recompute), kv_cache, state or recompute (eager; cropped to `window`, for a GPT to
    block_size by default)."""
    if method not in METHODS:
        raise ConfigError(f"generation method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "auto":
        method = "kv_cache" if is_gpt(model) else "state" if hasattr(model, "step") else (
            "recompute")
    if method == "kv_cache":
        if not is_gpt(model):
            raise ConfigError(f"a KV cache needs a GPT, not a {type(model).__name__}")
        return KVCacheDecoder(model, static)
    if method == "state":
        if not hasattr(model, "step"):
            raise ConfigError(f"a {type(model).__name__} has no recurrent state to carry")
        return StateDecoder(model, static)
    if window is None and is_gpt(model):
        window = int(model.block_size)
    return RecomputeDecoder(model, window)


# ----- the loop -----------------------------------------------------------------------------------
@dataclass
class Generation:
    """Generated ids (the prompt's first) and how fast: `seconds` is the wall time of the loop
    (prompt and steps, after any compile); `static`: the decoder ran compiled functions, traced
    `traces` times (recompute is always eager)."""

    ids: list[int]
    new_tokens: int
    seconds: float
    method: str
    static: bool
    traces: dict[str, int] = field(default_factory=dict)

    @property
    def new_ids(self) -> list[int]:
        return self.ids[len(self.ids) - self.new_tokens:]

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else float("inf")


def generate(model: Any, prompt: Sequence[int], max_new_tokens: int, *,
             temperature: float = 1.0, top_k: int | None = None, seed: int = 0,
             static: bool = False, method: str = "auto", window: int | None = None
             ) -> Generation:
    """Sample `max_new_tokens` ids after `prompt` (token ids) from a language model.

    One NumPy Generator seeded by `seed` draws one number per token (`sample_next`), so every
    method gives the same ids up to float rounding of the logits. `static` compiles the decoder
    (the model's train/eval mode is restored afterwards).
    """
    check_sampling(temperature, top_k)
    ids = [int(i) for i in np.asarray(prompt).reshape(-1)]
    if not ids:
        raise ConfigError("generation needs a prompt of at least one token")
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    rng = np.random.default_rng(seed)
    training = model.training
    model.eval()
    try:
        with no_grad():
            decoder = make_decoder(model, method, static, window)
            if max_new_tokens:
                decoder.warmup(ids)
            start = time.perf_counter()
            for i in range(max_new_tokens):
                logits = decoder.prime(ids) if i == 0 else decoder.step(ids)
                ids.append(sample_next(logits, rng, temperature, top_k))
            seconds = time.perf_counter() - start
    finally:
        model.train(training)
    traces = decoder.trace_counts()
    return Generation(ids, max_new_tokens, seconds, decoder.name, bool(traces), traces)
