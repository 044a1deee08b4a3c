"""Every primitive: forward against NumPy and gradients against central differences (float64)."""

from __future__ import annotations

import numpy as np
import pytest

import dlrun
from dlrun import functional as F
from dlrun.engine.prims import REGISTRY
from dlrun.engine.prims import conv as C
from dlrun.engine.prims import elementwise as E
from dlrun.engine.prims import movement as M
from dlrun.engine.prims import reduce as R
from tests.engine.opcheck import (
    Int,
    OpSpec,
    check_gradients,
    eager_value_and_grads,
    make_inputs,
)
from tests.engine.prims.test_attention import ATTENTION_SPECS

TIES = np.array([[1.0, 3.0, 3.0, -1.0], [2.0, 2.0, 0.5, 1.0]])  # two-way ties: FD sees 1/2
TIES_B = np.array([[1.0, 0.0, 3.0, 4.0], [2.0, 1.0, 0.5, -2.0]])
COND = np.array([[True, False, True, False], [False, False, True, True]])


def _np_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _np_conv(x, w, stride=1, padding=0, dilation=1):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    ow = (wd + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, o, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride : i * stride + dilation * (kh - 1) + 1 : dilation,
                       j * stride : j * stride + dilation * (kw - 1) + 1 : dilation]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w)
    return out


def _np_pool(x, k, s, p, reduce):
    n, c, h, w = x.shape
    fill = -np.inf if reduce is np.max else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=fill)
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = reduce(xp[:, :, i * s : i * s + k, j * s : j * s + k], axis=(2, 3))
    return out


def _ce_ref(x, t):
    logp = x - np.log(np.exp(x - x.max(1, keepdims=True)).sum(1, keepdims=True)) - x.max(
        1, keepdims=True)
    return -logp[np.arange(len(t)), t].mean()


POS = dict(positive=True)
SPECS = [
    # elementwise
    OpSpec("add_broadcast", lambda a, b: a + b, [(3, 4), (4,)], lambda a, b: a + b),
    OpSpec("add_broadcast_both", lambda a, b: a + b, [(2, 1, 3), (4, 1)], lambda a, b: a + b),
    OpSpec("sub", lambda a, b: a - b, [(3, 4), (3, 1)], lambda a, b: a - b),
    OpSpec("mul", lambda a, b: a * b, [(3, 4), (1, 4)], lambda a, b: a * b),
    OpSpec("mul_self", lambda a: a * a, [(3, 4)], lambda a: a * a),
    OpSpec("div", lambda a, b: a / b, [(3, 4), (3, 4)], lambda a, b: a / b, **POS),
    OpSpec("rdiv_scalar", lambda a: 2.0 / a, [(3,)], lambda a: 2.0 / a, **POS),
    OpSpec("neg", lambda a: -a, [(5,)], lambda a: -a),
    OpSpec("clone", lambda a: a.clone() * a, [(5,)], lambda a: a.copy() * a),
    OpSpec("pow_tensor", lambda a, b: a**b, [(3, 4), (3, 4)], np.power, **POS),
    OpSpec("pow_scalar", lambda a: a**2.5, [(3, 4)], lambda a: a**2.5, **POS),
    OpSpec("maximum_ties", dlrun.maximum, [TIES, TIES_B], np.maximum),
    OpSpec("minimum_ties", dlrun.minimum, [TIES, TIES_B], np.minimum),
    OpSpec("exp", F.exp, [(3, 4)], np.exp),
    OpSpec("log", F.log, [(3, 4)], np.log, **POS),
    OpSpec("sqrt", F.sqrt, [(3, 4)], np.sqrt, **POS),
    OpSpec("abs", F.abs, [(3, 4)], np.abs),
    OpSpec("tanh", F.tanh, [(3, 4)], np.tanh),
    OpSpec("sigmoid", F.sigmoid, [(3, 4)], lambda a: 1 / (1 + np.exp(-a))),
    OpSpec("relu", F.relu, [(3, 4)], lambda a: np.maximum(a, 0)),
    OpSpec("relu_grad", lambda g, y: E.relu_grad(g, y), [(3, 4), (3, 4)], nondiff=(1,)),
    OpSpec("leaky_relu", lambda a: F.leaky_relu(a, 0.1), [(3, 4)],
           lambda a: np.where(a > 0, a, 0.1 * a)),
    OpSpec("gelu", F.gelu, [(3, 4)]),
    OpSpec("gelu_tanh", lambda a: F.gelu(a, approximate="tanh"), [(3, 4)]),
    OpSpec("where", lambda a, b: dlrun.where(dlrun.tensor(COND), a, b), [(2, 4), (4,)],
           lambda a, b: np.where(COND, a, b)),
    OpSpec("clamp", lambda a: a.clamp(-0.5, 0.5), [(3, 4)], lambda a: np.clip(a, -0.5, 0.5)),
    OpSpec("cast_roundtrip", lambda a: (a.float() * 3.0).double(), [(3, 4)],
           lambda a: (a.astype(np.float32) * np.float32(3)).astype(np.float64),
           eps=1e-2, rtol=1e-4, atol=1e-4),
    # reductions
    OpSpec("sum_all", lambda a: a.sum(), [(3, 4)], np.sum),
    OpSpec("sum_dim", lambda a: a.sum(1), [(3, 4)], lambda a: a.sum(1)),
    OpSpec("sum_squares", lambda a, b: R.sum_squares(a, b), [(3, 4), (5,)],
           lambda a, b: (a * a).sum() + (b * b).sum()),
    OpSpec("sum_dims_keepdim", lambda a: a.sum((0, 2), keepdim=True), [(2, 3, 4)],
           lambda a: a.sum((0, 2), keepdims=True)),
    OpSpec("mean_dim", lambda a: a.mean(-1), [(3, 4)], lambda a: a.mean(-1)),
    OpSpec("var", lambda a: a.var(1), [(3, 4)], lambda a: a.var(1, ddof=1)),
    OpSpec("std_keepdim", lambda a: a.std(0, keepdim=True), [(3, 4)],
           lambda a: a.std(0, ddof=1, keepdims=True)),
    OpSpec("amax_ties", lambda a: a.amax(1), [TIES], lambda a: a.max(1)),
    OpSpec("amax_all_ties", lambda a: a.max(), [TIES], np.max),
    OpSpec("amin_keepdim", lambda a: a.amin(0, keepdim=True), [(3, 4)],
           lambda a: a.min(0, keepdims=True)),
    OpSpec("max_dim_values", lambda a: a.max(dim=1).values, [(3, 4)], lambda a: a.max(1)),
    OpSpec("logsumexp", lambda a: a.logsumexp(1), [(3, 4)],
           lambda a: np.log(np.exp(a).sum(1))),
    OpSpec("logsumexp_keepdim", lambda a: a.logsumexp((0, 1), keepdim=True), [(3, 4)],
           lambda a: np.log(np.exp(a).sum(keepdims=True))),
    OpSpec("softmax", lambda a: F.softmax(a, 1), [(3, 4)], lambda a: _np_softmax(a, 1)),
    OpSpec("log_softmax", lambda a: F.log_softmax(a, 0), [(3, 4)],
           lambda a: np.log(_np_softmax(a, 0))),
    # linear algebra
    OpSpec("matmul", lambda a, b: a @ b, [(3, 4), (4, 5)], np.matmul),
    OpSpec("matmul_batched_broadcast", lambda a, b: a @ b, [(2, 3, 4), (4, 5)], np.matmul),
    OpSpec("matmul_broadcast_left", lambda a, b: a @ b, [(3, 4), (2, 4, 5)], np.matmul),
    OpSpec("matmul_vec", lambda a, b: a @ b, [(4,), (4, 5)], np.matmul),
    OpSpec("matmul_mat_vec", lambda a, b: a @ b, [(3, 4), (4,)], np.matmul),
    OpSpec("linear", F.linear, [(2, 4), (3, 4), (3,)], lambda x, w, b: x @ w.T + b),
    # movement
    OpSpec("reshape", lambda a: a.reshape(4, -1), [(2, 3, 2)], lambda a: a.reshape(4, -1)),
    OpSpec("flatten", lambda a: a.flatten(1), [(2, 3, 2)], lambda a: a.reshape(2, 6)),
    OpSpec("permute", lambda a: a.permute(2, 0, 1), [(2, 3, 4)],
           lambda a: a.transpose(2, 0, 1)),
    OpSpec("transpose", lambda a: a.transpose(0, 1), [(2, 3)], lambda a: a.T),
    OpSpec("expand", lambda a: a.expand(2, 3, 4), [(3, 1)],
           lambda a: np.broadcast_to(a, (2, 3, 4))),
    OpSpec("squeeze_unsqueeze", lambda a: a.squeeze(1).unsqueeze(0), [(3, 1, 2)],
           lambda a: a.reshape(1, 3, 2)),
    OpSpec("cat", lambda a, b: dlrun.cat([a, b], dim=1), [(2, 3), (2, 2)],
           lambda a, b: np.concatenate([a, b], 1)),
    OpSpec("stack", lambda a, b: dlrun.stack([a, b], dim=1), [(2, 3), (2, 3)],
           lambda a, b: np.stack([a, b], 1)),
    OpSpec("split", lambda a: dlrun.cat([p * (i + 1) for i, p in enumerate(a.split(2, 1))], 1),
           [(2, 5)], lambda a: a * np.array([1, 1, 2, 2, 3])),
    OpSpec("chunk", lambda a: a.chunk(3, 0)[1], [(6, 2)], lambda a: a[2:4]),
    OpSpec("getitem_slices", lambda a: a[1:, ::2], [(3, 4)], lambda a: a[1:, ::2]),
    OpSpec("getitem_int_none_ellipsis", lambda a: a[..., 1, None], [(2, 3, 4)],
           lambda a: a[..., 1, None]),
    OpSpec("getitem_negative_step", lambda a: a[::-1, -1], [(3, 4)], lambda a: a[::-1, -1]),
    OpSpec("assemble_slices_overlapping", lambda g, h: M.assemble_slices(
        g, h, shape=(3, 4), indices=((("s", 1, None, None), ("s", None, None, 2)),
                                     (("i", 2),))), [(2, 2), (4,)]),
    OpSpec("assemble_column_blocks", lambda g, h, k: M.assemble_slices(
        g, h, k, shape=(3, 7), indices=tuple(
            (("s", None, None, None), ("s", a, b, 1)) for a, b in ((0, 2), (4, 7), (2, 4)))),
        [(3, 2), (3, 3), (3, 2)]),
    OpSpec("assemble_disjoint_rows_with_gap", lambda g, h: M.assemble_slices(
        g, h, shape=(4, 3), indices=((("i", 0),), (("i", 2),))), [(3,), (3,)]),
    OpSpec("getitem_many_slices", lambda a: dlrun.stack([a[:, t] * (t + 1.0) for t in range(4)]),
           [(2, 4, 3)], lambda a: np.stack([a[:, t] * (t + 1.0) for t in range(4)])),
    OpSpec("take_repeated", lambda a, i: a[i], [(5, 3), np.array([[0, 2], [2, 4], [0, 0]])],
           lambda a, i: a[i]),
    OpSpec("take_axis1", lambda a, i: a[:, i], [(2, 5), np.array([4, 4, 1])],
           lambda a, i: a[:, i]),
    OpSpec("advanced_pairs", lambda a, i, j: a[i, j], [(3, 4), np.array([0, 2, 2]),
           np.array([1, 3, 3])], lambda a, i, j: a[i, j]),
    OpSpec("index_add", lambda g, i: M.index_add(g, i, axis=0, size=4),
           [(3, 2), np.array([1, 3, 1])]),
    OpSpec("gather", lambda a, i: a.gather(1, i), [(3, 4), np.array([[0, 0], [3, 1], [2, 2]])],
           lambda a, i: np.take_along_axis(a, i, 1)),
    OpSpec("scatter_add", lambda g, i: M.scatter_add(g, i, axis=1, shape=(3, 4)),
           [(3, 2), np.array([[0, 0], [3, 1], [2, 2]])]),
    OpSpec("pad", lambda a: F.pad(a, (1, 2, 0, 1), value=0.5), [(2, 3)],
           lambda a: np.pad(a, ((0, 1), (1, 2)), constant_values=0.5)),
    # convolution and pooling
    OpSpec("conv2d", lambda x, w: F.conv2d(x, w), [(2, 2, 5, 5), (3, 2, 3, 3)], _np_conv),
    OpSpec("conv2d_stride_pad_bias", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1),
           [(2, 2, 6, 5), (3, 2, 3, 3), (3,)],
           lambda x, w, b: _np_conv(x, w, 2, 1) + b.reshape(1, -1, 1, 1)),
    OpSpec("conv2d_dilation", lambda x, w: F.conv2d(x, w, padding=2, dilation=2),
           [(1, 2, 5, 5), (2, 2, 3, 3)], lambda x, w: _np_conv(x, w, 1, 2, 2)),
    OpSpec("im2col_strided_dilated", lambda x: C.im2col(
        x, kernel=(2, 3), stride=(2, 1), dilation=(1, 2)), [(2, 2, 5, 6)]),
    OpSpec("max_pool2d_grad_tiling", lambda g, x: C.max_pool2d_grad(
        g, x, F.max_pool2d(x, 2), kernel=(2, 2), stride=(2, 2), padding=(0, 0)),
        [(2, 2, 2, 3), (2, 2, 4, 6)], nondiff=(1,)),
    OpSpec("col2im_strided_dilated", lambda g: C.col2im(
        g, x_shape=(2, 2, 5, 6), kernel=(2, 3), stride=(2, 1), dilation=(1, 2)), [(2, 12, 4)]),
    OpSpec("im2col_padded", lambda x: C.im2col(
        x, kernel=(3, 2), stride=(2, 1), dilation=(1, 2), padding=(2, 1)), [(2, 2, 5, 4)],
        lambda x: C.im2col.forward(np, np.pad(x, ((0, 0), (0, 0), (2, 2), (1, 1))),
                                   kernel=(3, 2), stride=(2, 1), dilation=(1, 2))),
    OpSpec("im2col_padding_wider_than_kernel", lambda x: C.im2col(
        x, kernel=(2, 2), stride=(1, 3), dilation=(1, 1), padding=(3, 3)), [(1, 2, 2, 3)],
        lambda x: C.im2col.forward(np, np.pad(x, ((0, 0), (0, 0), (3, 3), (3, 3))),
                                   kernel=(2, 2), stride=(1, 3), dilation=(1, 1))),
    OpSpec("col2im_padded", lambda g: C.col2im(
        g, x_shape=(2, 2, 5, 4), kernel=(3, 2), stride=(2, 1), dilation=(1, 2), padding=(2, 1)),
        [(12, 2 * 4 * 4)],
        lambda g: C.col2im.forward(np, g, x_shape=(2, 2, 9, 6), kernel=(3, 2), stride=(2, 1),
                                   dilation=(1, 2))[:, :, 2:7, 1:5]),
    OpSpec("max_pool2d", lambda x: F.max_pool2d(x, 2), [(2, 2, 4, 6)],
           lambda x: _np_pool(x, 2, 2, 0, np.max)),
    OpSpec("max_pool2d_overlap_pad", lambda x: F.max_pool2d(x, 3, stride=2, padding=1),
           [(1, 2, 5, 5)], lambda x: _np_pool(x, 3, 2, 1, np.max)),
    OpSpec("max_pool2d_grad", lambda g, x: C.max_pool2d_grad(
        g, x, F.max_pool2d(x, 3, 2, 1), kernel=(3, 3), stride=(2, 2), padding=(1, 1)),
        [(1, 2, 3, 3), (1, 2, 5, 5)], nondiff=(1,)),
    OpSpec("max_pool2d_select", lambda g, x: C.max_pool2d_select(
        g, x, F.max_pool2d(x, 3, 2, 1), kernel=(3, 3), stride=(2, 2), padding=(1, 1)),
        [(1, 2, 5, 5), (1, 2, 5, 5)], nondiff=(1,)),
    OpSpec("avg_pool2d", lambda x: F.avg_pool2d(x, 3, stride=2, padding=1), [(1, 2, 5, 5)],
           lambda x: _np_pool(x, 3, 2, 1, np.mean)),
    OpSpec("avg_pool2d_grad", lambda g: C.avg_pool2d_grad(
        g, x_shape=(1, 2, 5, 5), kernel=(3, 3), stride=(2, 2), padding=(1, 1)), [(1, 2, 3, 3)]),
    # layers and losses
    OpSpec("embedding", lambda w, i: F.embedding(i, w), [(6, 3), Int(6, (2, 5))],
           lambda w, i: w[i]),
    OpSpec("dropout", lambda a: (dlrun.manual_seed(3), F.dropout(a, 0.4))[1], [(4, 5)]),
    OpSpec("layer_norm", lambda x, w, b: F.layer_norm(x, (4,), w, b), [(3, 4), (4,), (4,)]),
    OpSpec("batch_norm_train", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
           [(4, 3, 2, 2), (3,), (3,)]),
    OpSpec("batch_norm_eval", lambda x, m, v: F.batch_norm(x, m, v, training=False),
           [(4, 3), (3,), np.array([0.5, 1.0, 2.0])], nondiff=(1, 2)),
    OpSpec("cross_entropy", lambda x, t: F.cross_entropy(x, t), [(5, 4), Int(4, (5,))], _ce_ref),
    OpSpec("cross_entropy_sum_smooth", lambda x, t: F.cross_entropy(
        x, t, reduction="sum", label_smoothing=0.2), [(5, 4), Int(4, (5,))]),
    OpSpec("cross_entropy_ignore_weight", lambda x, t, w: F.cross_entropy(
        x, dlrun.where(t == 1, -100, t), weight=w), [(6, 3), Int(3, (6,)), (3,)],
        nondiff=(2,), positive=False),
    OpSpec("cross_entropy_nd_none", lambda x, t: F.cross_entropy(x, t, reduction="none"),
           [(2, 3, 4), Int(3, (2, 4))]),
    OpSpec("cross_entropy_probs", lambda x, p: F.cross_entropy(x, F.softmax(p, 1)),
           [(3, 4), (3, 4)], nondiff=(1,)),
    OpSpec("nll_loss", lambda x, t: F.nll_loss(F.log_softmax(x, 1), t), [(5, 4), Int(4, (5,))],
           _ce_ref),
    OpSpec("mse_loss", F.mse_loss, [(3, 4), (3, 4)], lambda a, b: ((a - b) ** 2).mean()),
    OpSpec("l1_loss_sum", lambda a, b: F.l1_loss(a, b, reduction="sum"), [(3, 4), (3, 4)],
           lambda a, b: np.abs(a - b).sum()),
    OpSpec("bce_with_logits", F.binary_cross_entropy_with_logits, [(3, 4), (3, 4)],
           lambda x, y: (np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))).mean(),
           nondiff=(1,)),
    OpSpec("bce_with_logits_pos_weight", lambda x, y, p: F.binary_cross_entropy_with_logits(
        x, y, pos_weight=p), [(3, 4), (3, 4), (4,)], nondiff=(1,), positive=True),
    # attention (tests/engine/prims/test_attention.py)
    *ATTENTION_SPECS,
]


def _primitives_used(spec: OpSpec) -> set[str]:
    arrays = make_inputs(spec)
    ts = [dlrun.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    root = spec.fn(*ts)
    seen, stack, names = set(), [root], set()
    while stack:
        t = stack.pop()
        if t._ctx is None or id(t) in seen:
            continue
        seen.add(id(t))
        names.add(t._ctx[1].name)
        stack.extend(t._ctx[2])
    return names


@pytest.mark.parametrize("spec", [s for s in SPECS if s.ref is not None], ids=lambda s: s.name)
def test_forward_matches_numpy(spec: OpSpec) -> None:
    arrays = make_inputs(spec)
    y, _ = eager_value_and_grads(spec, arrays, None)
    np.testing.assert_allclose(y, spec.ref(*arrays), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_gradients_match_finite_differences(spec: OpSpec) -> None:
    check_gradients(spec)


def test_float32_forward_matches_float64() -> None:
    for spec in SPECS:
        if spec.ref is None or spec.name.startswith("cast"):
            continue
        a64 = make_inputs(spec)
        a32 = make_inputs(spec, dtype=np.float32)
        y32, _ = eager_value_and_grads(spec, a32, None)
        y64, _ = eager_value_and_grads(spec, a64, None)
        assert y32.dtype == np.float32 or y32.dtype.kind != "f", spec.name
        np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5, err_msg=spec.name)


def test_every_differentiable_primitive_is_gradchecked() -> None:
    used = set().union(*(_primitives_used(s) for s in SPECS))
    differentiable = {n for n, p in REGISTRY.items() if p.differentiable}
    assert differentiable - used == set()


def test_max_pool_ties_route_the_gradient_to_the_first_maximum() -> None:
    # PyTorch's rule (finite differences would split it, so this is not in the gradcheck table)
    x = dlrun.tensor([[[[1.0, 5.0, 2.0, 2.0], [5.0, 0.0, 2.0, 1.0]]]], requires_grad=True)
    F.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[[[0, 1, 1, 0], [0, 0, 0, 0]]]])
