"""MultiheadAttention, TransformerEncoderLayer and TransformerEncoder against PyTorch.

With torch installed, each case builds the torch layer (float64), copies its weights into the
dlrun layer through a safetensors file and back, and compares outputs, attention weights, input
gradients and parameter gradients (rtol 1e-10) in eager and static mode. Without torch, the
layers' gradchecks (TRANSFORMER_SPECS, rows of tests/nn/test_layers_grad.py's table), static ==
eager, the state_dict keys and the mask semantics are still checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import dlrun
from dlrun import functional as F
from dlrun import nn
from tests.nn.modcheck import module_spec

_rng = np.random.default_rng(3)
KPM = np.zeros((2, 5), bool)
KPM[1, 3:] = True  # batch 1: the last two keys are padding
FLOAT_KPM = np.where(KPM, -np.inf, _rng.standard_normal((2, 5)))
CAUSAL = np.triu(np.ones((3, 3), bool), 1)  # True = not allowed (nn.MultiheadAttention)
FLOAT_CAUSAL = np.where(CAUSAL, -np.inf, 0.0)
BOOL_MASK = _rng.random((3, 5)) < 0.3
BOOL_MASK[:, 0] = False  # every query keeps a key
FLOAT_MASK_3D = _rng.standard_normal((4, 3, 5))  # (N * H, L, S)
FLOAT_MASK_3D[:, 1, 2] = -np.inf


@dataclass
class Case:
    """A layer built the same way from torch.nn or dlrun.nn, and how to call it."""

    name: str
    make: Callable[[Any], Any]  # make(nn module) -> layer
    inputs: list[Any]  # shapes (random normal, differentiated) or np.ndarray (float: diff)
    call: Callable[..., Any] = lambda m, x: m(x)
    train: bool = False
    seed: int | None = None  # reseed before each call (dropout in training mode)
    nondiff: tuple[int, ...] = ()  # float inputs not differentiated (a mask the layer drops)

    def __repr__(self) -> str:
        return self.name


def _mha(**kw: Any) -> Callable[[Any], Any]:
    return lambda lib: lib.MultiheadAttention(4, 2, **kw)


def _layer(lib: Any, **kw: Any) -> Any:
    return lib.TransformerEncoderLayer(4, 2, dim_feedforward=6, **kw)


def _self(**kw: Any) -> Callable[..., Any]:
    """Self-attention (query is key is value) with an optional attn_mask and padding mask."""
    names = ("attn_mask", "key_padding_mask")
    return lambda m, x, *masks: m(x, x, x, **dict(zip(names[:len(masks)], masks, strict=True)),
                                  **kw)


CASES = [
    Case("mha_batch_first_self", _mha(batch_first=True), [(2, 3, 4)], _self(), train=True),
    Case("mha_cross_padding_per_head_weights", _mha(), [(3, 2, 4), (5, 2, 4), (5, 2, 4), KPM],
         lambda m, q, k, v, kpm: m(q, k, v, key_padding_mask=kpm, average_attn_weights=False)),
    Case("mha_batch_first_bool_mask_no_weights", _mha(batch_first=True),
         [(2, 3, 4), (2, 5, 4), BOOL_MASK],
         lambda m, q, kv, am: m(q, kv, kv, attn_mask=am, need_weights=False)),
    Case("mha_float_mask_3d_float_padding", _mha(),
         [(3, 2, 4), (5, 2, 4), FLOAT_MASK_3D, FLOAT_KPM],
         lambda m, q, kv, am, kpm: m(q, kv, kv, attn_mask=am, key_padding_mask=kpm)),
    Case("mha_is_causal_no_weights", _mha(batch_first=True), [(2, 3, 4), FLOAT_CAUSAL],
         _self(is_causal=True, need_weights=False), nondiff=(1,)),  # SDPA's is_causal instead
    Case("mha_is_causal_padding_weights", _mha(), [(3, 2, 4), CAUSAL, KPM[:, :3]],
         _self(is_causal=True)),  # the padding mask (or the weights) keep attn_mask in use
    Case("mha_unbatched_3d_mask", _mha(), [(3, 4), (5, 4), FLOAT_MASK_3D[:2], FLOAT_KPM[1]],
         lambda m, q, kv, am, kpm: m(q, kv, kv, attn_mask=am, key_padding_mask=kpm)),
    Case("mha_kdim_vdim_no_bias", _mha(kdim=3, vdim=5, bias=False, batch_first=True),
         [(2, 3, 4), (2, 5, 3), (2, 5, 5), KPM],
         lambda m, q, k, v, kpm: m(q, k, v, key_padding_mask=kpm, need_weights=False)),
    Case("layer_relu_post_norm_masks", lambda lib: _layer(lib), [(3, 2, 4), CAUSAL, KPM[:, :3]],
         lambda m, x, am, kpm: m(x, src_mask=am, src_key_padding_mask=kpm)),
    Case("layer_relu_norm_first_batch_first", lambda lib: _layer(lib, norm_first=True,
                                                                 batch_first=True),
         [(2, 3, 4), FLOAT_CAUSAL], lambda m, x, am: m(x, src_mask=am, is_causal=True),
         nondiff=(1,)),
    Case("layer_gelu_module_post_norm_batch_first", lambda lib: _layer(
        lib, activation=lib.GELU(approximate="tanh"), batch_first=True),  # a callable
         [(2, 3, 4), KPM[:, :3]], lambda m, x, kpm: m(x, src_key_padding_mask=kpm)),
    Case("layer_gelu_norm_first_no_bias", lambda lib: _layer(lib, activation="gelu",
                                                             norm_first=True, bias=False),
         [(3, 2, 4), BOOL_MASK[:, :3]], lambda m, x, am: m(x, src_mask=am)),
    Case("encoder_2_layers_norm", lambda lib: lib.TransformerEncoder(
        _layer(lib, activation="gelu"), 2, norm=lib.LayerNorm(4), enable_nested_tensor=False),
        [(3, 2, 4), CAUSAL, KPM[:, :3]],
        lambda m, x, am, kpm: m(x, mask=am, src_key_padding_mask=kpm)),
    Case("encoder_2_layers_is_causal", lambda lib: lib.TransformerEncoder(
        _layer(lib, norm_first=True, batch_first=True), 2, enable_nested_tensor=False),
        [(2, 3, 4), FLOAT_CAUSAL], lambda m, x, am: m(x, mask=am, is_causal=True),
        nondiff=(1,)),
]
DROPOUT_CASES = [
    Case("mha_dropout_weights", _mha(dropout=0.3), [(3, 2, 4)], _self(), train=True, seed=5),
    Case("mha_dropout_no_weights", _mha(dropout=0.3, batch_first=True), [(2, 3, 4), KPM[:, :3]],
         lambda m, x, kpm: m(x, x, x, key_padding_mask=kpm, need_weights=False), train=True,
         seed=5),
    Case("layer_dropout_train", lambda lib: _layer(lib, dropout=0.2), [(3, 2, 4), CAUSAL],
         lambda m, x, am: m(x, src_mask=am), train=True, seed=5),
]


def _outputs(y: Any) -> list[Any]:
    """The non-None tensors of a layer's result (MultiheadAttention's weights may be None)."""
    return [t for t in (y if isinstance(y, tuple) else (y,)) if t is not None]


class Call(nn.Module):
    """A case's layer as a module of its inputs alone (flattened outputs), for the gradchecks."""

    def __init__(self, case: Case) -> None:
        super().__init__()
        self.inner = case.make(nn).train(case.train)
        self.case = case

    def forward(self, *xs: dlrun.Tensor) -> dlrun.Tensor:
        if self.case.seed is not None:
            dlrun.manual_seed(self.case.seed)
        return F.cat([t.reshape(-1) for t in _outputs(self.case.call(self.inner, *xs))])


# the gradchecked cases; for the deep ones, the parameters whose gradients are checked (with
# the inputs') as central differences cost two calls per element
GRADCHECKED = {
    "mha_cross_padding_per_head_weights": None, "mha_float_mask_3d_float_padding": None,
    "mha_is_causal_no_weights": None, "mha_unbatched_3d_mask": None,
    "mha_kdim_vdim_no_bias": None, "layer_relu_post_norm_masks": None,
    "layer_gelu_norm_first_no_bias": None, "mha_dropout_weights": None,
    "mha_dropout_no_weights": None,
    "encoder_2_layers_norm": ["layers.0.norm1.weight", "layers.0.linear1.bias",
                              "layers.1.self_attn.out_proj.weight", "layers.1.linear2.bias",
                              "norm.bias"],
    "layer_dropout_train": ["self_attn.in_proj_bias", "linear1.weight", "norm2.weight"],
}
TRANSFORMER_SPECS = [
    module_spec(c.name, Call(c), c.inputs, rtol=1e-5, atol=1e-7, nondiff=c.nondiff,
                params=None if GRADCHECKED[c.name] is None else
                [f"inner.{n}" for n in GRADCHECKED[c.name]])
    for c in CASES + DROPOUT_CASES if c.name in GRADCHECKED
]


# ----- running a case -------------------------------------------------------------------------


def _arrays(case: Case) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [a if isinstance(a, np.ndarray) else rng.standard_normal(a) for a in case.inputs]


def _diff(case: Case, arrays: list[np.ndarray]) -> list[int]:
    return [i for i, a in enumerate(arrays) if a.dtype.kind == "f" and i not in case.nondiff]


def _cotangents(case: Case, m: nn.Module, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Random cotangents shaped like the case's outputs."""
    with dlrun.no_grad():
        ys = _outputs(case.call(m, *(dlrun.tensor(a) for a in arrays)))
    rng = np.random.default_rng(1)
    return [rng.standard_normal(y.shape) for y in ys]


def run_dlrun(case: Case, m: nn.Module, arrays: list[np.ndarray], cots: list[np.ndarray],
              mode: str) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, np.ndarray]]:
    """Outputs, input gradients and parameter gradients of sum(outputs * cots)."""
    diff, n = _diff(case, arrays), len(cots)

    def step(*args: dlrun.Tensor) -> tuple[list, list]:
        if case.seed is not None:
            dlrun.manual_seed(case.seed)
        xs = args[n:]
        ys = _outputs(case.call(m, *xs))
        sum(((y * c).sum() for y, c in zip(ys, args[:n], strict=True)), start=0.0).backward()
        return ys, [xs[i].grad for i in diff]

    m.zero_grad()
    run = dlrun.compile(step) if mode == "static" else step
    xs = [dlrun.tensor(a, requires_grad=i in diff) for i, a in enumerate(arrays)]
    ys, grads = run(*(dlrun.tensor(c) for c in cots), *xs)
    return ([y.numpy() for y in ys], [g.numpy() for g in grads],
            {n: p.grad.numpy() for n, p in m.named_parameters()})


def _make_dlrun(case: Case) -> nn.Module:
    dlrun.manual_seed(0)
    return case.make(nn).double().train(case.train)


# ----- without torch ------------------------------------------------------------------------

EXPECTED_KEYS = {
    "mha": ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"],
    "mha_kdim": ["q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias",
                 "out_proj.weight", "out_proj.bias"],
    "layer": ["self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
              "self_attn.out_proj.bias", "linear1.weight", "linear1.bias", "linear2.weight",
              "linear2.bias", "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"],
}
EXPECTED_KEYS["encoder"] = [f"layers.{i}.{k}" for i in range(2) for k in EXPECTED_KEYS["layer"]
                            ] + ["norm.weight", "norm.bias"]
KEY_CASES = {"mha": _mha(), "mha_kdim": _mha(kdim=3, vdim=5), "layer": _layer,
             "encoder": lambda lib: lib.TransformerEncoder(_layer(lib), 2, norm=lib.LayerNorm(4),
                                                           enable_nested_tensor=False)}


@pytest.mark.parametrize("name", list(KEY_CASES))
def test_state_dict_keys_are_pytorchs(name: str) -> None:
    keys = list(KEY_CASES[name](nn).state_dict())
    assert keys == EXPECTED_KEYS[name]
    try:
        import torch
    except ImportError:
        return
    assert keys == list(KEY_CASES[name](torch.nn).state_dict())


@pytest.mark.parametrize("case", CASES + DROPOUT_CASES, ids=repr)
def test_static_equals_eager(case: Case) -> None:
    arrays = _arrays(case)
    m = _make_dlrun(case)
    cots = _cotangents(case, m, arrays)
    eager = run_dlrun(case, m, arrays, cots, "eager")
    static = run_dlrun(case, m, arrays, cots, "static")
    _assert_close(static, eager, rtol=1e-12, atol=1e-13)


def _assert_close(got: tuple, want: tuple, rtol: float, atol: float) -> float:
    """Compare (outputs, input grads, param grads); return the largest absolute difference."""
    worst = 0.0
    pairs = [*zip(got[0], want[0], strict=True), *zip(got[1], want[1], strict=True),
             *((got[2][k], want[2][k]) for k in want[2])]
    assert set(got[2]) == set(want[2])
    for a, b in pairs:
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)
        worst = max(worst, float(np.nanmax(np.abs(a - b), initial=0.0)))
    return worst


# ----- against PyTorch ------------------------------------------------------------------------


def _torch_pair(case: Case, tmp_path: Path) -> tuple[Any, nn.Module]:
    """The torch layer and a dlrun layer holding its weights (via safetensors, and back)."""
    torch = pytest.importorskip("torch")
    st_torch = pytest.importorskip("safetensors.torch")
    st_numpy = pytest.importorskip("safetensors.numpy")
    torch.manual_seed(0)
    tm = case.make(torch.nn).double().train(case.train)
    st_torch.save_file(tm.state_dict(), str(tmp_path / "torch.safetensors"))
    m = case.make(nn).double().train(case.train)
    m.load_state_dict(st_numpy.load_file(str(tmp_path / "torch.safetensors")))
    st_numpy.save_file({k: np.ascontiguousarray(v.numpy()) for k, v in m.state_dict().items()},
                       str(tmp_path / "dlrun.safetensors"))
    back = case.make(torch.nn).double()
    back.load_state_dict(st_torch.load_file(str(tmp_path / "dlrun.safetensors")), strict=True)
    for k, v in tm.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    return tm, m


def run_torch(case: Case, tm: Any, arrays: list[np.ndarray], cots: list[np.ndarray]
              ) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, np.ndarray]]:
    import torch

    diff = _diff(case, arrays)
    xs = [torch.tensor(a, requires_grad=i in diff) for i, a in enumerate(arrays)]
    ys = _outputs(case.call(tm, *xs))
    sum((y * torch.tensor(c)).sum() for y, c in zip(ys, cots, strict=True)).backward()
    return ([y.detach().numpy() for y in ys], [xs[i].grad.numpy() for i in diff],
            {n: p.grad.numpy() for n, p in tm.named_parameters()})


@pytest.mark.parametrize("mode", ["eager", "static"])
@pytest.mark.parametrize("case", CASES, ids=repr)
def test_matches_pytorch(case: Case, mode: str, tmp_path: Path) -> None:
    tm, m = _torch_pair(case, tmp_path)
    arrays = _arrays(case)
    cots = _cotangents(case, m, arrays)
    want = run_torch(case, tm, arrays, cots)
    got = run_dlrun(case, m, arrays, cots, mode)
    assert [y.shape for y in got[0]] == [y.shape for y in want[0]]
    _assert_close(got, want, rtol=1e-10, atol=1e-12)


# ----- semantics, init and errors -------------------------------------------------------------


def _mha_and_input(**kw: Any) -> tuple[nn.MultiheadAttention, dlrun.Tensor]:
    dlrun.manual_seed(0)
    m = nn.MultiheadAttention(4, 2, batch_first=True, **kw).double()
    return m, dlrun.tensor(np.random.default_rng(0).standard_normal((2, 5, 4)))


def test_a_bool_mask_marks_the_keys_that_may_not_be_attended() -> None:
    m, x = _mha_and_input()
    q = x[:, :3]
    out, w = m(q, x, x, attn_mask=BOOL_MASK, key_padding_mask=KPM)
    blocked = BOOL_MASK[None] | KPM[:, None, :]
    np.testing.assert_array_equal(w.numpy()[np.broadcast_to(blocked, w.shape)], 0.0)
    assert (w.numpy()[~np.broadcast_to(blocked, w.shape)] > 0).all()
    np.testing.assert_allclose(w.numpy().sum(-1), 1.0, rtol=1e-14)
    as_float = [np.where(a, -np.inf, 0.0) for a in (BOOL_MASK, KPM)]
    out2, w2 = m(q, x, x, attn_mask=as_float[0], key_padding_mask=as_float[1])
    np.testing.assert_array_equal(out.numpy(), out2.numpy())
    np.testing.assert_array_equal(w.numpy(), w2.numpy())


@pytest.mark.parametrize("batch_first, query, weights", [
    (True, (2, 3, 4), [(2, 3, 5), (2, 2, 3, 5)]),
    (False, (3, 2, 4), [(2, 3, 5), (2, 2, 3, 5)]),
    (False, (3, 4), [(3, 5), (2, 3, 5)]),  # unbatched
])
def test_output_and_weight_shapes(batch_first: bool, query: tuple[int, ...],
                                  weights: list[tuple[int, ...]]) -> None:
    m = nn.MultiheadAttention(4, 2, batch_first=batch_first)
    q = dlrun.randn(*query)
    kv = dlrun.randn(*(query[:-2] + (5, 4) if batch_first or len(query) == 2 else (5, 2, 4)))
    for average, shape in zip((True, False), weights, strict=True):
        out, w = m(q, kv, kv, average_attn_weights=average)
        assert out.shape == query and w.shape == shape
    assert m(q, kv, kv, need_weights=False)[1] is None


def test_a_fully_masked_query_gives_nan_weights_or_zero_attention_as_pytorch() -> None:
    m, x = _mha_and_input()
    pad = np.zeros((2, 5), bool)
    pad[1] = True  # batch 1: every key is padding
    out, w = m(x, x, x, key_padding_mask=pad)
    assert np.isnan(w.numpy()[1]).all() and np.isnan(out.numpy()[1]).all()  # a plain softmax
    assert not np.isnan(w.numpy()[0]).any()
    out, _ = m(x, x, x, key_padding_mask=pad, need_weights=False)  # through SDPA: zeros
    np.testing.assert_allclose(out.numpy()[1], np.broadcast_to(m.out_proj.bias.numpy(), (5, 4)))
    torch = pytest.importorskip("torch")
    tm = torch.nn.MultiheadAttention(4, 2, batch_first=True).double().train()
    tm.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in m.state_dict().items()})
    tx = torch.from_numpy(x.numpy()).requires_grad_()  # requires_grad: not the no-grad fast path
    for need in (True, False):
        want = tm(tx, tx, tx, key_padding_mask=torch.from_numpy(pad), need_weights=need)[0]
        got = m(x, x, x, key_padding_mask=pad, need_weights=need)[0]
        np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_dropout_is_off_in_eval_mode() -> None:
    m, x = _mha_and_input(dropout=0.5)
    train_out = m(x, x, x)[0].numpy()
    m.eval()
    eval_out, w = m(x, x, x)
    np.testing.assert_allclose(w.numpy().sum(-1), 1.0, rtol=1e-14)
    assert not np.allclose(train_out, eval_out.numpy())
    m.dropout = 0.0
    m.train()
    np.testing.assert_array_equal(m(x, x, x)[0].numpy(), eval_out.numpy())


def test_pytorch_init() -> None:
    dlrun.manual_seed(0)
    m = nn.MultiheadAttention(64, 4)
    np.testing.assert_array_equal(m.in_proj_bias.numpy(), 0.0)
    np.testing.assert_array_equal(m.out_proj.bias.numpy(), 0.0)
    w = m.in_proj_weight.numpy()
    bound = np.sqrt(6.0 / (64 + 3 * 64))  # xavier_uniform_ on the (3E, E) matrix
    assert w.shape == (192, 64) and np.abs(w).max() <= bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound
    assert isinstance(m.out_proj, nn.Linear) and m.out_proj.weight.shape == (64, 64)
    layer = nn.TransformerEncoderLayer(8, 2)
    assert (layer.linear1.weight.shape, layer.self_attn.dropout, layer.dropout.p) == ((2048, 8),
                                                                                      0.1, 0.1)


def test_encoder_layers_are_independent_copies_of_the_layer() -> None:
    dlrun.manual_seed(0)
    layer = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6)
    enc = nn.TransformerEncoder(layer, 3)
    assert len(enc.layers) == 3 and enc.norm is None
    params = [list(lay.parameters()) for lay in (layer, *enc.layers)]
    assert len({id(p) for ps in params for p in ps}) == 4 * len(params[0])
    for ps in params[1:]:
        for a, b in zip(ps, params[0], strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    with dlrun.no_grad():
        enc.layers[0].linear1.weight.fill_(0.5)
    assert not np.any(enc.layers[1].linear1.weight.numpy() == 0.5)
    assert not np.any(layer.linear1.weight.numpy() == 0.5)


@pytest.mark.parametrize("make, call, error, match", [
    (lambda: nn.MultiheadAttention(6, 4), None, ValueError, "divisible"),
    (lambda: nn.MultiheadAttention(4, 2, add_bias_kv=True), None, NotImplementedError,
     "add_bias_kv"),
    (lambda: nn.TransformerEncoderLayer(4, 2, activation="tanh"), None, ValueError, "tanh"),
    (lambda: nn.MultiheadAttention(4, 2), lambda m, x: m(x, x, x, is_causal=True), ValueError,
     "is_causal needs attn_mask"),
    (lambda: nn.MultiheadAttention(4, 2), lambda m, x: m(x, x, x, attn_mask=np.zeros((3, 4))),
     ValueError, r"\(3, 4\), but should be \(3, 3\)"),
    (lambda: nn.MultiheadAttention(4, 2), lambda m, x: m(x, x, x, attn_mask=np.zeros((2, 3, 3))),
     ValueError, r"\(2, 3, 3\), but should be \(4, 3, 3\)"),
    (lambda: nn.MultiheadAttention(4, 2), lambda m, x: m(x, x, x, key_padding_mask=KPM),
     ValueError, r"\(2, 5\), but should be \(2, 3\)"),
    (lambda: nn.MultiheadAttention(4, 2),
     lambda m, x: m(x, x, x, key_padding_mask=np.zeros((2, 3), np.int64)), TypeError,
     "bool and floating"),
])
def test_bad_arguments_raise(make: Callable, call: Callable | None, error: type, match: str
                             ) -> None:
    with pytest.raises(error, match=match):
        m = make()
        call(m, dlrun.randn(3, 2, 4))
