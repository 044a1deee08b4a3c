"""Primitives that pick a faster formulation for some shapes or layouts (BLAS sums, 2-D GEMMs
for N-D @ 2-D, one-hot embedding gradients, assembled slices): every path against the plain
NumPy reference in float64, in the layouts that select it."""

from __future__ import annotations

import numpy as np
import pytest

from dlrun.engine.prims.linalg import matmul
from dlrun.engine.prims.movement import assemble_slices, index_add
from dlrun.engine.prims.reduce import GEMV_MIN_SIZE, log_softmax, softmax
from dlrun.engine.prims.reduce import sum as sum_

RNG = np.random.default_rng(0)


def _layouts(shape):
    x = RNG.standard_normal(shape)
    yield "C", x
    perm = (1, 0, *range(2, len(shape)))
    yield "permuted", np.ascontiguousarray(x.transpose(perm)).transpose(perm)
    yield "sliced", np.concatenate([x, x], axis=-1)[..., : shape[-1]]


@pytest.mark.parametrize("shape,axis", [
    ((2048, 65), (1,)), ((2048, 512), (0,)), ((64, 16, 28, 28), (0, 2, 3)),
    ((32, 64, 65), (0, 1)), ((16, 32, 40), (1,)), ((300, 70), (0, 1)), ((40, 30, 20), (2,)),
])
@pytest.mark.parametrize("keepdims", [False, True])
def test_large_sums_match_numpy_in_every_layout(shape, axis, keepdims) -> None:
    assert np.prod(shape) >= GEMV_MIN_SIZE or shape == (16, 32, 40)
    for layout, x in _layouts(shape):
        want = x.sum(axis=axis, keepdims=keepdims)
        got = sum_.forward(np, x, axis=axis, keepdims=keepdims)
        assert got.shape == want.shape, layout
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-11, err_msg=layout)
        out = np.empty(want.shape)
        assert sum_.forward(np, x, axis=axis, keepdims=keepdims, out=out) is out
        np.testing.assert_allclose(out, want, rtol=1e-11, atol=1e-11, err_msg=layout)


def test_softmax_and_log_softmax_over_long_batches_of_short_rows() -> None:
    x = RNG.standard_normal((2048, 65)) * 5
    e = np.exp(x - x.max(1, keepdims=True))
    ref = e / e.sum(1, keepdims=True)
    np.testing.assert_allclose(softmax.forward(np, x, axis=1), ref, rtol=1e-12)
    np.testing.assert_allclose(log_softmax.forward(np, x, axis=1), np.log(ref), rtol=1e-11,
                               atol=1e-12)


@pytest.mark.parametrize("a_shape", [(4, 5, 6), (3, 4, 5, 6)])
def test_nd_by_2d_products_in_every_layout(a_shape) -> None:
    b = RNG.standard_normal((6, 7))
    for layout, a in _layouts(a_shape):
        want = np.einsum("...k,km->...m", a, b)
        np.testing.assert_allclose(matmul.forward(np, a, b), want, rtol=1e-12, err_msg=layout)
        out = np.empty(want.shape)
        assert matmul.forward(np, a, b, out=out) is out
        np.testing.assert_allclose(out, want, rtol=1e-12, err_msg=layout)
        strided = np.empty(want.shape[:-1] + (14,))[..., ::2]  # a non-contiguous out
        matmul.forward(np, a, b, out=strided)
        np.testing.assert_allclose(strided, want, rtol=1e-12, err_msg=layout)


@pytest.mark.parametrize("size,n", [(65, 2048), (5000, 2048)])  # one-hot GEMM / sorted runs
def test_embedding_gradients_sum_repeated_rows(size, n) -> None:
    idx = RNG.integers(0, min(size, 300), (n // 64, 64))
    for layout, g in _layouts((n // 64, 64, 8)):
        want = np.zeros((size, 8))
        np.add.at(want, idx.reshape(-1), g.reshape(-1, 8))
        got = index_add.forward(np, g, idx, axis=0, size=size)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=layout)


def test_assembled_rows_and_blocks_in_any_order() -> None:
    parts = [RNG.standard_normal((3, 4)) for _ in range(3)]
    rows = ((("i", 2),), (("i", 0),), (("i", 1),))
    got = assemble_slices.forward(np, *parts, shape=(3, 3, 4), indices=rows)
    np.testing.assert_array_equal(got, np.stack([parts[1], parts[2], parts[0]]))
    full = ("s", None, None, None)
    blocks = ((full, ("s", 4, 8, 1)), (full, ("s", 0, 4, 1)), (full, ("s", 8, 12, 1)))
    got = assemble_slices.forward(np, *parts, shape=(3, 12), indices=blocks)
    np.testing.assert_array_equal(got, np.concatenate([parts[1], parts[0], parts[2]], axis=1))
    out = np.full((3, 12), np.nan)
    assemble_slices.forward(np, *parts, shape=(3, 12), indices=blocks, out=out)
    np.testing.assert_array_equal(out, got)
    gaps = ((full, ("s", 0, 4, 1)), (full, ("s", 8, 12, 1)))  # not covering: zeros between
    got = assemble_slices.forward(np, parts[0], parts[1], shape=(3, 12), indices=gaps)
    np.testing.assert_array_equal(got[:, 4:8], 0)


@pytest.mark.parametrize("a_shape,b_shape", [((5, 1), (1, 4)), ((3, 5, 1), (1, 4)),
                                             ((2, 3, 5, 1), (3, 1, 4)), ((4, 1), (2, 1, 3))])
def test_products_over_one_column_are_outer_products(a_shape, b_shape) -> None:
    a, b = RNG.standard_normal(a_shape), RNG.standard_normal(b_shape)
    want = np.matmul(a, b)
    got = matmul.forward(np, a, b)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-14)
    out = np.empty(want.shape)
    assert matmul.forward(np, a, b, out=out) is out
    np.testing.assert_allclose(out, want, rtol=1e-14)


def test_float32_erf_is_within_a_few_ulp_and_may_write_over_its_input() -> None:
    special = pytest.importorskip("scipy.special")
    from dlrun.engine.prims.elementwise import erf

    x = np.concatenate([np.linspace(-6, 6, 100001), [1e-30, -1e-30, 1e-8, 0.0, -0.0]])
    x = x.astype(np.float32)
    got = erf.forward(np, x)
    ref = special.erf(x.astype(np.float64))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=5e-7, atol=0)
    np.testing.assert_array_equal(np.signbit(got[-2:]), [False, True])
    special_values = erf.forward(np, np.array([np.inf, -np.inf, np.nan], np.float32))
    np.testing.assert_array_equal(special_values, [1.0, -1.0, np.nan])
    y = x.copy()
    assert erf.forward(np, y, out=y) is y  # in place, as a fused chain may run it
    np.testing.assert_array_equal(y, got)
