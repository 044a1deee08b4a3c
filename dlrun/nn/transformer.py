"""Attention and Transformer encoder layers with PyTorch's names, arguments and state_dict keys.

`MultiheadAttention`, `TransformerEncoderLayer` and `TransformerEncoder` take the constructor
arguments of their torch.nn namesakes, register the same parameters under the same names (a
PyTorch state_dict loads with no renaming) and compute what PyTorch computes: the same mask
conventions, the same attention weights, the same outputs.

>>> import dlrun
>>> from dlrun import nn
>>> layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True)
>>> encoder = nn.TransformerEncoder(layer, num_layers=2, norm=nn.LayerNorm(8))
>>> encoder(dlrun.randn(3, 5, 8)).shape
(3, 5, 8)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from dlrun import functional as F
from dlrun.engine.creation import empty, scalar_like, tensor
from dlrun.engine.prims.attention import attention_probs
from dlrun.engine.tensor import Tensor
from dlrun.nn import init
from dlrun.nn.layers import Dropout, LayerNorm, Linear
from dlrun.nn.module import Module, ModuleList, Parameter

# ----- masks ----------------------------------------------------------------------------------


def _float_mask(mask: Any, like: Tensor, name: str) -> Tensor | None:
    """A bool mask (True = not allowed) as 0 / -inf in `like`'s dtype; a float mask as is."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor):
        mask = tensor(mask, device=like.device)
    if mask.dtype == np.bool_:
        return F.where(mask, scalar_like(float("-inf"), like), scalar_like(0.0, like))
    if mask.dtype.kind != "f":
        raise TypeError(f"only bool and floating types of {name} are supported, got {mask.dtype}")
    return mask


def _check_shape(name: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if tuple(shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(shape)}, but should be {tuple(expected)}")


def _check_inputs(query: Tensor, key: Tensor, value: Tensor) -> bool:
    """True for batched (3-D) inputs, False for unbatched (2-D) ones (PyTorch's rule)."""
    if query.ndim not in (2, 3):
        raise ValueError("MultiheadAttention: query should be unbatched 2-D or batched 3-D, got "
                         f"shape {query.shape}")
    if key.ndim != query.ndim or value.ndim != query.ndim:
        raise ValueError(f"MultiheadAttention: for a {query.ndim}-D query, key and value must be "
                         f"{query.ndim}-D too, got shapes {key.shape} and {value.shape}")
    if key.shape[:-1] != value.shape[:-1]:
        raise ValueError(f"MultiheadAttention: key's sequence and batch dims {key.shape[:-1]} do "
                         f"not match value's {value.shape[:-1]}")
    return query.ndim == 3


# ----- multi-head attention -------------------------------------------------------------------


class MultiheadAttention(Module):
    """Multi-head attention, `nn.MultiheadAttention`: parameters `in_proj_weight` (3E, E),
    `in_proj_bias` (3E) and `out_proj` (a Linear), xavier-uniform in-projection, zero biases.

    `forward(query, key, value)` returns `(output, weights)`: weights averaged over the heads
    (N, L, S), per head (N, H, L, S) with `average_attn_weights=False`, or None with
    `need_weights=False`. Inputs are (L, N, E), (N, L, E) with `batch_first`, or unbatched
    (L, E). Masks follow PyTorch's convention here: in a bool `key_padding_mask` (N, S) or
    `attn_mask` (L, S) / (N*H, L, S), True marks a key that may NOT be attended (the opposite
    of F.scaled_dot_product_attention's); a float mask is added to the scores. Dropout applies
    to the attention weights in training mode. kdim/vdim other than embed_dim give the separate
    `q_proj_weight`, `k_proj_weight`, `v_proj_weight` of PyTorch.

    >>> mha = nn.MultiheadAttention(8, 2, batch_first=True)
    >>> x = dlrun.randn(3, 5, 8)
    >>> out, weights = mha(x, x, x)
    >>> out.shape, weights.shape
    ((3, 5, 8), (3, 5, 5))
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, device: str | None = None,
                 dtype: Any = None) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError("embed_dim and num_heads must be greater than 0, got "
                             f"embed_dim={embed_dim} and num_heads={num_heads}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError("MultiheadAttention: add_bias_kv and add_zero_attn are not "
                                      "supported")
        self.embed_dim, self.num_heads = int(embed_dim), int(num_heads)
        self.kdim = int(kdim) if kdim is not None else self.embed_dim
        self.vdim = int(vdim) if vdim is not None else self.embed_dim
        self._qkv_same_embed_dim = self.kdim == self.embed_dim and self.vdim == self.embed_dim
        self.dropout, self.batch_first = float(dropout), bool(batch_first)
        self.head_dim = self.embed_dim // self.num_heads
        self.bias_k = self.bias_v = None
        self.add_zero_attn = False
        self._make_parameters(bias, device, dtype)
        self._reset_parameters()

    def _make_parameters(self, bias: bool, device: str | None, dtype: Any) -> None:
        """The projections, registered in PyTorch's order (so state_dict keys come in order)."""
        e, kw = self.embed_dim, {"device": device, "dtype": dtype}
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(empty(3 * e, e, **kw))
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            self.q_proj_weight = Parameter(empty(e, e, **kw))
            self.k_proj_weight = Parameter(empty(e, self.kdim, **kw))
            self.v_proj_weight = Parameter(empty(e, self.vdim, **kw))
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(empty(3 * e, **kw))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(e, e, bias=bias, **kw)

    def _reset_parameters(self) -> None:
        """PyTorch's init: xavier_uniform_ in-projection weights, zero in and out biases."""
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for w in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Tensor | None = None, need_weights: bool = True,
                attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        """(output, attention weights or None), as torch.nn.MultiheadAttention.forward."""
        batched = _check_inputs(query, key, value)
        if is_causal and attn_mask is None:
            raise ValueError("MultiheadAttention: is_causal needs attn_mask (is_causal is a hint "
                             "that attn_mask is the causal mask)")
        q, k, v = (self._heads(t, batched) for t in self._in_projection(query, key, value))
        mask = self._merged_mask(attn_mask, key_padding_mask, q, k.shape[2], batched)
        # PyTorch: without a padding mask and weights, the causal hint replaces attn_mask
        causal = bool(is_causal) and key_padding_mask is None and not need_weights
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            out, weights = self._attend_with_weights(q, k, v, mask, p)
            weights = weights.mean(1) if average_attn_weights else weights
            weights = weights if batched else weights.squeeze(0)
        else:
            out = F.scaled_dot_product_attention(q, k, v, None if causal else mask, p, causal)
        n, h, length, d = out.shape
        out = self.out_proj(out.permute(0, 2, 1, 3).reshape(n, length, h * d))
        return self._unheads(out, batched), weights

    def _attend_with_weights(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None,
                             p: float) -> tuple[Tensor, Tensor]:
        """(weights @ v, weights (N, H, L, S)); the weights as PyTorch returns them: a plain
        softmax (NaN for a query with every key masked) with dropout applied."""
        weights = attention_probs(q, k, *([mask] if mask is not None else []),
                                  scale=1.0 / math.sqrt(self.head_dim), causal=False,
                                  mask_kind=None if mask is None else "float", safe=False)
        if p > 0.0:
            weights = F.dropout(weights, p)
        return weights @ v, weights

    def _in_projection(self, query: Tensor, key: Tensor, value: Tensor
                       ) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v projections; one matmul for self-attention (query is key is value)."""
        e, b = self.embed_dim, self.in_proj_bias
        bq, bk, bv = (None,) * 3 if b is None else (b[:e], b[e:2 * e], b[2 * e:])
        if not self._qkv_same_embed_dim:
            return (F.linear(query, self.q_proj_weight, bq), F.linear(key, self.k_proj_weight, bk),
                    F.linear(value, self.v_proj_weight, bv))
        w = self.in_proj_weight
        if query is key and key is value:
            return tuple(F.linear(query, w, b).chunk(3, -1))
        return (F.linear(query, w[:e], bq), F.linear(key, w[e:2 * e], bk),
                F.linear(value, w[2 * e:], bv))

    def _heads(self, x: Tensor, batched: bool) -> Tensor:
        """(L, N, E) / (N, L, E) / (L, E) -> (N, H, L, D)."""
        if not batched:
            x = x.unsqueeze(0)
        elif not self.batch_first:
            x = x.transpose(0, 1)
        n, length, _ = x.shape
        return x.reshape(n, length, self.num_heads, self.head_dim).permute(0, 2, 1, 3)

    def _unheads(self, x: Tensor, batched: bool) -> Tensor:
        """(N, L, E) back to the layout of the inputs."""
        if not batched:
            return x.squeeze(0)
        return x if self.batch_first else x.transpose(0, 1)

    def _merged_mask(self, attn_mask: Any, key_padding_mask: Any, q: Tensor, s: int,
                     batched: bool) -> Tensor | None:
        """attn_mask and key_padding_mask as one float mask broadcasting to (N, H, L, S)."""
        n, h, length, _ = q.shape
        mask = _float_mask(attn_mask, q, "attn_mask")
        if mask is not None:
            if mask.ndim == 2:
                _check_shape("the 2-D attn_mask", mask.shape, (length, s))
            elif mask.ndim == 3:
                _check_shape("the 3-D attn_mask", mask.shape, (n * h, length, s))
                mask = mask.reshape(n, h, length, s)
            else:
                raise ValueError(f"attn_mask must be 2-D or 3-D, got shape {mask.shape}")
        pad = _float_mask(key_padding_mask, q, "key_padding_mask")
        if pad is not None:
            _check_shape("key_padding_mask", pad.shape, (n, s) if batched else (s,))
            pad = pad.reshape(n, 1, 1, s)
            mask = pad if mask is None else mask + pad
        return mask

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
                f"batch_first={self.batch_first}")


# ----- Transformer encoder --------------------------------------------------------------------

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "gelu": F.gelu}


class TransformerEncoderLayer(Module):
    """Self-attention then a feed-forward block, each with a residual connection and LayerNorm
    (after each block, or before with `norm_first`), as `nn.TransformerEncoderLayer`.

    Submodules `self_attn`, `linear1`, `dropout`, `linear2`, `norm1`, `norm2`, `dropout1`,
    `dropout2`; `activation` is "relu", "gelu" or a unary callable. Masks as in
    MultiheadAttention (bool True = not allowed).

    >>> layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, activation="gelu")
    >>> layer(dlrun.randn(5, 3, 8)).shape
    (5, 3, 8)
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048,
                 dropout: float = 0.1, activation: str | Callable[[Tensor], Tensor] = "relu",
                 layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device: str | None = None,
                 dtype: Any = None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias,
                                            batch_first=batch_first, **kw)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, **kw)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, **kw)
        self.norm_first = bool(norm_first)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, **kw)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        if isinstance(activation, str):
            if activation not in _ACTIVATIONS:
                raise ValueError(f"activation should be relu/gelu, not {activation!r}")
            activation = _ACTIVATIONS[activation]
        self.activation = activation

    def forward(self, src: Tensor, src_mask: Tensor | None = None,
                src_key_padding_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
        """One encoder layer over src ((S, N, E), (N, S, E) with batch_first, or (S, E))."""
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._ff_block(self.norm2(x))
        x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._ff_block(x))

    def _sa_block(self, x: Tensor, attn_mask: Any, key_padding_mask: Any,
                  is_causal: bool) -> Tensor:
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                           need_weights=False, is_causal=is_causal)[0]
        return self.dropout1(x)

    def _ff_block(self, x: Tensor) -> Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


def _clones(module: Module, n: int) -> list[Module]:
    """n independent deep copies of `module` (as PyTorch's TransformerEncoder makes them)."""
    return [copy.deepcopy(module) for _ in range(n)]


class TransformerEncoder(Module):
    """A stack of `num_layers` deep copies of `encoder_layer` (`layers.0`, `layers.1`, ...) and
    an optional final `norm`, as `nn.TransformerEncoder`.

    `enable_nested_tensor` and `mask_check` are accepted for PyTorch compatibility; dlrun has no
    nested tensors, so padded positions are computed like the others. `is_causal=None` means
    False: PyTorch would detect a causal `mask`, which gives the same numbers.

    >>> layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)
    >>> nn.TransformerEncoder(layer, 2)(dlrun.randn(5, 3, 8)).shape
    (5, 3, 8)
    """

    def __init__(self, encoder_layer: Module, num_layers: int, norm: Module | None = None,
                 enable_nested_tensor: bool = True, mask_check: bool = True) -> None:
        super().__init__()
        self.layers = ModuleList(_clones(encoder_layer, num_layers))
        self.num_layers = int(num_layers)
        self.norm = norm
        self.enable_nested_tensor, self.use_nested_tensor = enable_nested_tensor, False
        self.mask_check = mask_check

    def forward(self, src: Tensor, mask: Tensor | None = None,
                src_key_padding_mask: Tensor | None = None,
                is_causal: bool | None = None) -> Tensor:
        """Every layer in turn (same masks for each), then the final norm if any."""
        out = src
        for layer in self.layers:
            out = layer(out, src_mask=mask, src_key_padding_mask=src_key_padding_mask,
                        is_causal=bool(is_causal))
        return self.norm(out) if self.norm is not None else out
