"""The Tensor API a PyTorch user expects: creation, dtypes, conversion, operators, methods."""

from __future__ import annotations

import numpy as np
import pytest

import dlrun
from dlrun.errors import DeviceError


def test_tensor_defaults_to_float32_and_keeps_float64() -> None:
    assert dlrun.tensor([1.0, 2.0]).dtype == np.float32
    assert dlrun.tensor(np.zeros(3)).dtype == np.float64
    assert dlrun.tensor([1, 2]).dtype == np.int64
    assert dlrun.tensor([1, 2], dtype="float64").dtype == np.float64


def test_creation_functions() -> None:
    assert dlrun.zeros(2, 3).shape == (2, 3)
    assert dlrun.ones((2, 3)).numpy().sum() == 6
    assert dlrun.arange(5).numpy().tolist() == [0, 1, 2, 3, 4]
    assert dlrun.full((2,), 7.0).numpy().tolist() == [7.0, 7.0]
    assert dlrun.zeros_like(dlrun.ones(2, 2, dtype="float64")).dtype == np.float64


def test_seeded_random_is_reproducible() -> None:
    dlrun.manual_seed(7)
    a = dlrun.randn(3, 4).numpy()
    dlrun.manual_seed(7)
    b = dlrun.randn(3, 4).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, dlrun.randn(3, 4).numpy())


def test_item_numpy_detach() -> None:
    x = dlrun.tensor([[2.5]], requires_grad=True)
    assert x.item() == 2.5
    assert isinstance(x.numpy(), np.ndarray)
    assert not x.detach().requires_grad


def test_operators_follow_numpy_broadcasting() -> None:
    a = np.arange(6.0).reshape(2, 3)
    b = np.array([1.0, 2.0, 3.0])
    ta, tb = dlrun.tensor(a), dlrun.tensor(b)
    np.testing.assert_allclose((ta + tb).numpy(), a + b)
    np.testing.assert_allclose((ta - tb).numpy(), a - b)
    np.testing.assert_allclose((ta * tb).numpy(), a * b)
    np.testing.assert_allclose((ta / tb).numpy(), a / b)
    np.testing.assert_allclose((ta**2).numpy(), a**2)
    np.testing.assert_allclose((2.0 - ta).numpy(), 2.0 - a)
    np.testing.assert_allclose((-ta).numpy(), -a)
    np.testing.assert_allclose((ta @ tb).numpy(), a @ b)
    np.testing.assert_array_equal((ta > tb).numpy(), a > b)
    np.testing.assert_array_equal((ta == 1.0).numpy(), a == 1.0)


def test_scalars_keep_the_tensor_dtype() -> None:
    x = dlrun.tensor([1.0, 2.0])
    assert (x * 2.5).dtype == np.float32
    assert (x + 1).dtype == np.float32


def test_methods_with_pytorch_names() -> None:
    x = dlrun.tensor(np.arange(12.0).reshape(3, 4))
    assert x.sum(dim=1, keepdim=True).shape == (3, 1)
    values, indices = x.max(dim=1)
    assert values.numpy().tolist() == [3.0, 7.0, 11.0] and indices.numpy().tolist() == [3, 3, 3]
    assert x.transpose(0, 1).shape == (4, 3)
    assert x.permute(1, 0).shape == (4, 3)
    assert x.reshape(2, -1).shape == (2, 6)
    assert x.view(12).shape == (12,)
    assert x.unsqueeze(0).shape == (1, 3, 4)
    assert x.logsumexp(1).shape == (3,)
    assert [p.shape for p in x.split(2, dim=1)] == [(3, 2), (3, 2)]
    assert dlrun.stack([x, x]).shape == (2, 3, 4)
    assert dlrun.cat([x, x], dim=1).shape == (3, 8)
    assert x[1:, ::2].shape == (2, 2)
    assert x[dlrun.tensor([0, 2])].shape == (2, 4)


def test_bool_of_multi_element_tensor_is_ambiguous() -> None:
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(dlrun.tensor([1.0, 2.0]))
    assert bool(dlrun.tensor([1.0]))


def test_cuda_without_cupy_gives_clear_error() -> None:
    if dlrun.cuda_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError, match="CuPy|GPU"):
        dlrun.tensor([1.0], device="cuda")


def test_unknown_device() -> None:
    with pytest.raises(DeviceError, match="unknown device"):
        dlrun.tensor([1.0], device="tpu")


def test_auto_device_falls_back_to_cpu() -> None:
    expected = "cuda:0" if dlrun.cuda_available() else "cpu"
    assert dlrun.tensor([1.0], device="auto").device == expected


def test_shape_rules_agree_with_forward() -> None:
    from tests.engine.opcheck import make_inputs
    from tests.engine.prims.test_grads import SPECS

    for spec in SPECS:
        # every node the forward created must agree with its primitive's shape rule
        ts = [dlrun.tensor(a, requires_grad=a.dtype.kind == "f") for a in make_inputs(spec)]
        stack, seen = [spec.fn(*ts)], set()
        while stack:
            t = stack.pop()
            if t._ctx is None or id(t) in seen:
                continue
            seen.add(id(t))
            _, prim, inputs, attrs = t._ctx
            shape, dtype = prim.shape_rule(*inputs, **attrs)
            assert (tuple(shape), np.dtype(dtype)) == (t.shape, t.dtype), (spec.name, prim.name)
            stack.extend(inputs)


def test_deepcopy_copies_values_and_grad_and_shares_the_array_module() -> None:
    import copy

    from dlrun import nn

    layer = nn.Linear(3, 2)
    layer.weight.grad = dlrun.ones(2, 3)
    clone = copy.deepcopy(layer)
    assert type(clone.weight) is nn.Parameter and clone.weight is not layer.weight
    np.testing.assert_array_equal(clone.weight.numpy(), layer.weight.numpy())
    assert clone.weight._xp is layer.weight._xp and clone.weight.requires_grad
    clone.weight.grad.numpy()[...] = 5.0  # its own gradient array
    assert layer.weight.grad.numpy().max() == 1.0
    with dlrun.no_grad():
        clone.weight.copy_(clone.weight * 0.0)
    assert layer.weight.numpy().any()
