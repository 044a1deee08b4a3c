"""The attention primitives and F.scaled_dot_product_attention.

ATTENTION_SPECS are rows of tests/engine/prims/test_grads.py's table: there each is checked against
`np_attention` and by central differences (float64), static against eager, and on CUDA (test_gpu).
Here: PyTorch's forward and gradients (eager and static), masked rows, argument errors, the
default scale and dropout."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import dlrun
from dlrun import functional as F
from dlrun.engine.prims import attention as A
from dlrun.engine.prims import random as R
from tests.engine.opcheck import OpSpec, check_gradients

INF = np.inf
_rng = np.random.default_rng(7)
BOOL_HEADS = _rng.random((2, 1, 3, 5)) > 0.4  # (N, 1, L, S): broadcast over the heads
BOOL_HEADS[0, 0, :, 0] = True
BOOL_HEADS[1, 0, 2] = False  # a query with every key masked
FLOAT_MASK = _rng.standard_normal((3, 5))
FLOAT_MASK[0, 1] = FLOAT_MASK[2, 3] = -INF  # some keys masked
FLOAT_MASK[1] = -INF  # every key masked
DROP = (_rng.random((2, 3, 5)) >= 0.3) / 0.7  # an inverted-dropout mask, p = 0.3


def np_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray | None = None, *,
                 mask: np.ndarray | None = None, causal: bool = False,
                 scale: float | None = None, drop: np.ndarray | None = None) -> np.ndarray:
    """Reference: softmax over the allowed keys (a row with none gives 0), then @ v."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = np.einsum("...le,...se->...ls", q, k) * scale
    if mask is not None and mask.dtype != bool:
        s = s + mask
    allowed = np.broadcast_to(np.isfinite(s), s.shape).copy()
    if causal:
        allowed &= np.tril(np.ones(s.shape[-2:], bool), k=0)
    if mask is not None and mask.dtype == bool:
        allowed &= mask
    top = np.where(allowed, s, -INF).max(-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.where(allowed, np.exp(np.where(allowed, s, 0.0) - top), 0.0)
    total = e.sum(-1, keepdims=True)
    p = e / np.where(total == 0, 1.0, total)
    if drop is not None:
        p = p * drop
    return p if v is None else p @ v


def _probs(causal: bool = False, kind: str | None = None, scale: float = 0.7) -> Callable:
    return lambda q, k, *m: A.attention_probs(q, k, *m, scale=scale, causal=causal,
                                              mask_kind=kind, safe=True)


def _attn(kind: str | None = None, dropout: bool = False, scale: float = 0.6) -> Callable:
    return lambda q, k, v, *x: A.attention(q, k, v, *x, scale=scale, causal=False,
                                           mask_kind=kind, dropout=dropout)


ATTENTION_SPECS = [
    OpSpec("attention_probs", _probs(), [(2, 3, 4), (2, 5, 4)],
           lambda q, k: np_attention(q, k, scale=0.7)),
    OpSpec("attention_probs_float_mask_broadcast", _probs(kind="float"),
           [(2, 3, 4), (5, 4), FLOAT_MASK],
           lambda q, k, m: np_attention(q, k, mask=m, scale=0.7)),
    OpSpec("attention_probs_bool_mask_over_heads", _probs(kind="bool"),
           [(2, 2, 3, 4), (2, 2, 5, 4), BOOL_HEADS],
           lambda q, k, m: np_attention(q, k, mask=m, scale=0.7)),
    OpSpec("attention_probs_causal_L_gt_S", _probs(causal=True), [(2, 5, 4), (2, 3, 4)],
           lambda q, k: np_attention(q, k, causal=True, scale=0.7)),
    OpSpec("attention_default_scale", F.scaled_dot_product_attention,
           [(2, 3, 4), (2, 5, 4), (2, 5, 3)], np_attention),
    OpSpec("attention_bool_mask_over_heads",
           lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
           [(2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 3), BOOL_HEADS],
           lambda q, k, v, m: np_attention(q, k, v, mask=m)),
    OpSpec("attention_float_mask",
           lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
           [(2, 3, 4), (2, 5, 4), (2, 5, 3), FLOAT_MASK],
           lambda q, k, v, m: np_attention(q, k, v, mask=m)),
    OpSpec("attention_causal_L_gt_S",
           lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
           [(2, 5, 4), (2, 3, 4), (2, 3, 2)], lambda q, k, v: np_attention(q, k, v, causal=True)),
    OpSpec("attention_causal_L_lt_S",
           lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
           [(2, 3, 4), (2, 5, 4), (2, 5, 2)], lambda q, k, v: np_attention(q, k, v, causal=True)),
    OpSpec("attention_broadcast_batch",
           lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.3),
           [(2, 3, 3, 4), (3, 5, 4), (1, 3, 5, 2)],
           lambda q, k, v: np_attention(q, k, v, scale=0.3)),
    OpSpec("attention_dropout_given_mask", _attn(dropout=True),
           [(2, 3, 4), (2, 5, 4), (2, 5, 3), DROP],
           lambda q, k, v, d: np_attention(q, k, v, scale=0.6, drop=d), nondiff=(3,)),
    OpSpec("attention_float_mask_and_dropout", _attn(kind="float", dropout=True),
           [(2, 3, 4), (5, 4), (2, 5, 3), FLOAT_MASK, DROP],
           lambda q, k, v, m, d: np_attention(q, k, v, mask=m, scale=0.6, drop=d), nondiff=(4,)),
]


# ----- against PyTorch, eager and static -------------------------------------------------------


def _value_and_grads(fn: Callable[..., dlrun.Tensor], arrays: list[np.ndarray],
                     diff: list[int], cot: np.ndarray, mode: str
                     ) -> tuple[np.ndarray, list[np.ndarray]]:
    """fn's value and the gradients of sum(fn * cot) for the inputs `diff`, eager or compiled."""

    def step(c: dlrun.Tensor, *xs: dlrun.Tensor) -> tuple[dlrun.Tensor, list[dlrun.Tensor]]:
        y = fn(*xs)
        (y * c).sum().backward()
        return y, [xs[i].grad for i in diff]

    run = dlrun.compile(step) if mode == "static" else step
    ts = [dlrun.tensor(a, requires_grad=i in diff) for i, a in enumerate(arrays)]
    y, grads = run(dlrun.tensor(cot), *ts)
    return y.numpy(), [g.numpy() for g in grads]


TORCH_CASES = {  # name: (q, k, v shapes, mask or None, sdpa keywords)
    "plain": ((2, 3, 4, 5), (2, 3, 6, 5), (2, 3, 6, 7), None, {}),
    "causal_L_gt_S": ((2, 6, 4), (2, 3, 4), (2, 3, 5), None, {"is_causal": True}),
    "causal_L_lt_S": ((2, 3, 4), (2, 6, 4), (2, 6, 5), None, {"is_causal": True}),
    "broadcast_batch": ((2, 3, 4, 5), (3, 6, 5), (1, 3, 6, 2), None, {"scale": 0.4}),
    "bool_mask_over_heads": ((2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 3), BOOL_HEADS, {}),
    "float_mask": ((2, 3, 4), (2, 5, 4), (2, 5, 3), FLOAT_MASK, {}),
    "float_mask_broadcast_batch": ((2, 2, 3, 4), (5, 4), (2, 1, 5, 3), FLOAT_MASK, {}),
}


@pytest.mark.parametrize("mode", ["eager", "static"])
@pytest.mark.parametrize("case", list(TORCH_CASES))
def test_matches_pytorch(case: str, mode: str) -> None:
    torch = pytest.importorskip("torch")
    qs, ks, vs, mask, kw = TORCH_CASES[case]
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s) for s in (qs, ks, vs)] + ([] if mask is None else [mask])
    diff = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]
    tin = [torch.tensor(a, requires_grad=i in diff) for i, a in enumerate(arrays)]
    ty = torch.nn.functional.scaled_dot_product_attention(*tin[:3], *tin[3:], **kw)
    cot = rng.standard_normal(tuple(ty.shape))
    (ty * torch.tensor(cot)).sum().backward()
    y, grads = _value_and_grads(
        lambda q, k, v, *m: F.scaled_dot_product_attention(q, k, v, *m, **kw), arrays, diff,
        cot, mode)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    for i, g in zip(diff, grads, strict=True):
        np.testing.assert_allclose(g, tin[i].grad.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=f"input {i}")


# ----- masked rows --------------------------------------------------------------------------


def _qkv(seed: int = 0, scale: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) * scale for s in ((2, 3, 4), (2, 5, 4), (2, 5, 3))]


@pytest.mark.parametrize("mode", ["eager", "static"])
def test_partly_masked_rows_are_finite_and_exact(mode: str) -> None:
    q, k, v = _qkv(scale=30.0)  # scores in the hundreds: exp would overflow without the max
    mask = np.zeros((3, 5))
    mask[:, [1, 3]] = -INF
    cot = np.ones((2, 3, 3))
    y, grads = _value_and_grads(
        lambda *t: F.scaled_dot_product_attention(*t), [q, k, v, mask], [0, 1, 2, 3], cot, mode)
    assert np.isfinite(y).all() and all(np.isfinite(g).all() for g in grads)
    np.testing.assert_allclose(y, np_attention(q, k, v, mask=mask), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(grads[3][:, [1, 3]], 0.0)


@pytest.mark.parametrize("kind", ["bool", "float"])
@pytest.mark.parametrize("mode", ["eager", "static"])
def test_a_fully_masked_row_gives_zeros_as_pytorch(kind: str, mode: str) -> None:
    q, k, v = _qkv()
    allowed = np.ones((3, 5), bool)
    allowed[1] = False
    mask = allowed if kind == "bool" else np.where(allowed, 0.0, -INF)
    diff = [0, 1, 2] + ([3] if kind == "float" else [])
    cot = np.random.default_rng(1).standard_normal((2, 3, 3))
    y, grads = _value_and_grads(lambda *t: F.scaled_dot_product_attention(*t),
                                [q, k, v, mask], diff, cot, mode)
    assert not np.isnan(y).any() and not any(np.isnan(g).any() for g in grads)
    np.testing.assert_array_equal(y[:, 1], 0.0)  # PyTorch >= 2.5: a "safe" softmax
    np.testing.assert_array_equal(grads[0][:, 1], 0.0)
    torch = pytest.importorskip("torch")
    tin = [torch.tensor(a, requires_grad=i in diff) for i, a in enumerate([q, k, v, mask])]
    ty = torch.nn.functional.scaled_dot_product_attention(*tin)
    (ty * torch.tensor(cot)).sum().backward()
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    for i, g in zip(diff, grads, strict=True):
        np.testing.assert_allclose(g, tin[i].grad.numpy(), rtol=1e-10, atol=1e-12)


def test_attention_probs_fully_masked_row_is_zero_when_safe_and_nan_otherwise() -> None:
    q, k, _ = (dlrun.tensor(a) for a in _qkv())
    mask = dlrun.tensor(np.ones((3, 5), bool))
    mask = dlrun.where(dlrun.tensor(np.arange(3)[:, None] == 1), False, mask)
    kw = dict(scale=0.5, causal=False, mask_kind="bool")
    safe = A.attention_probs(q, k, mask, safe=True, **kw).numpy()
    plain = A.attention_probs(q, k, mask, safe=False, **kw).numpy()
    np.testing.assert_array_equal(safe[:, 1], 0.0)
    assert np.isnan(plain[:, 1]).all()  # a plain softmax, as nn.MultiheadAttention's weights
    np.testing.assert_array_equal(np.delete(safe, 1, 1), np.delete(plain, 1, 1))
    np.testing.assert_allclose(safe.sum(-1)[:, [0, 2]], 1.0, rtol=1e-14)


# ----- arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 4), (2, 2, 3, 5), (3, 3, 5)])
def test_a_mask_of_a_wrong_shape_raises_naming_both_shapes(shape: tuple[int, ...]) -> None:
    q, k, v = (dlrun.tensor(a) for a in _qkv())
    with pytest.raises(ValueError) as err:
        F.scaled_dot_product_attention(q, k, v, attn_mask=dlrun.zeros(*shape))
    assert str(shape) in str(err.value) and "(2, 3, 5)" in str(err.value)


def test_default_scale_is_one_over_sqrt_of_the_query_width() -> None:
    q, k, v = (dlrun.tensor(a) for a in _qkv())
    y = F.scaled_dot_product_attention(q, k, v).numpy()
    np.testing.assert_array_equal(y, F.scaled_dot_product_attention(q, k, v, scale=0.5).numpy())
    assert not np.allclose(y, F.scaled_dot_product_attention(q, k, v, scale=1.0).numpy())
    np.testing.assert_allclose(y, np_attention(*_qkv(), scale=1 / math.sqrt(4)), rtol=1e-12)


@pytest.mark.parametrize("kw, match", [
    ({"attn_mask": np.ones((3, 5), bool), "is_causal": True}, "not both"),
    ({"dropout_p": 1.5}, "dropout_p"),
    ({"dropout_p": -0.1}, "dropout_p"),
])
def test_bad_arguments_raise(kw: dict[str, Any], match: str) -> None:
    q, k, v = (dlrun.tensor(a) for a in _qkv())
    with pytest.raises(ValueError, match=match):
        F.scaled_dot_product_attention(q, k, v, **kw)


# ----- dropout --------------------------------------------------------------------------------


def _dropped(q: dlrun.Tensor, k: dlrun.Tensor, v: dlrun.Tensor) -> dlrun.Tensor:
    dlrun.manual_seed(11)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=dlrun.tensor(BOOL_HEADS[0, 0]),
                                          dropout_p=0.4)


def test_dropout_static_equals_eager_with_the_same_seed() -> None:
    arrays = _qkv()
    cot = np.random.default_rng(2).standard_normal((2, 3, 3))
    y_e, g_e = _value_and_grads(_dropped, arrays, [0, 1, 2], cot, "eager")
    y_s, g_s = _value_and_grads(_dropped, arrays, [0, 1, 2], cot, "static")
    np.testing.assert_array_equal(y_s, y_e)
    for a, b in zip(g_s, g_e, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert not np.allclose(y_e, np_attention(*arrays, mask=BOOL_HEADS[0, 0]))  # it drops


def test_dropout_applies_the_seeded_mask_and_its_gradients_match_finite_differences() -> None:
    arrays = _qkv()
    dlrun.manual_seed(11)
    drop = R.dropout_mask(shape=(2, 3, 5), p=0.4, dtype=np.dtype(np.float64),
                          device="cpu").numpy()
    assert set(np.unique(drop)) == {0.0, 1 / 0.6}
    with dlrun.no_grad():
        y = _dropped(*(dlrun.tensor(a) for a in arrays)).numpy()
    np.testing.assert_allclose(y, np_attention(*arrays, mask=BOOL_HEADS[0, 0], drop=drop),
                               rtol=1e-12, atol=1e-14)
    check_gradients(OpSpec("sdpa_dropout", _dropped, [a.shape for a in arrays]))
