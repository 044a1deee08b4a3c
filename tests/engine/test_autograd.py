"""Eager autograd behaviour: accumulation, broadcasting, reuse, no_grad, memory release."""

from __future__ import annotations

import gc
import sys
import weakref

import numpy as np
import pytest

import dlrun
from dlrun import functional as F


def test_grad_accumulates_across_backward_calls() -> None:
    x = dlrun.tensor([1.0, 2.0], requires_grad=True)
    (x * 3.0).sum().backward()
    (x * 2.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 5.0])


def test_tensor_used_twice_gets_both_contributions() -> None:
    x = dlrun.tensor([2.0, -1.0], requires_grad=True)
    y = x * x + x  # d/dx = 2x + 1
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [5.0, -1.0])


def test_broadcast_gradient_reduces_to_operand_shape() -> None:
    a = dlrun.tensor(np.ones((3, 1)), requires_grad=True)
    b = dlrun.tensor(np.ones((4,)), requires_grad=True)
    (a * b).sum().backward()
    assert a.grad.shape == (3, 1) and b.grad.shape == (4,)
    np.testing.assert_allclose(a.grad.numpy(), np.full((3, 1), 4.0))
    np.testing.assert_allclose(b.grad.numpy(), np.full((4,), 3.0))


def test_no_grad_records_nothing() -> None:
    x = dlrun.tensor([1.0], requires_grad=True)
    with dlrun.no_grad():
        y = x * 2.0
    assert not y.requires_grad and y._ctx is None
    assert dlrun.is_grad_enabled()


def test_non_scalar_backward_needs_gradient() -> None:
    x = dlrun.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="scalar"):
        (x * 2.0).backward()
    (x * 2.0).backward(dlrun.tensor([1.0, 0.5]))
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 1.0])


def test_backward_without_grad_raises() -> None:
    with pytest.raises(RuntimeError, match="does not require grad"):
        dlrun.tensor([1.0]).sum().backward()


def test_retain_grad_on_intermediate() -> None:
    x = dlrun.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3.0
    h.retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), [6.0, 12.0])
    np.testing.assert_allclose(x.grad.numpy(), [18.0, 36.0])


def test_deep_chain_has_no_recursion_limit() -> None:
    x = dlrun.tensor([0.5], requires_grad=True)
    y = x
    for _ in range(3 * sys.getrecursionlimit()):
        y = y * 1.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0])


def test_backward_frees_the_graph() -> None:
    x = dlrun.tensor(np.ones((4, 4)), requires_grad=True)
    h = x * 2.0
    probe = weakref.ref(h)
    loss = (h.tanh() * 3.0).sum()
    del h
    assert probe() is not None  # kept alive by the graph until backward
    loss.backward()
    gc.collect()
    assert probe() is None


def test_memory_does_not_grow_over_steps() -> None:
    import tracemalloc

    rng = np.random.default_rng(0)
    w = dlrun.tensor(rng.standard_normal((64, 32)), requires_grad=True)
    x = dlrun.tensor(rng.standard_normal((16, 64)))

    def step() -> None:
        loss = F.relu(x @ w).mean()
        loss.backward()
        with dlrun.no_grad():
            w.copy_(w - 0.01 * w.grad)
        w.grad = None

    for _ in range(5):
        step()
    tracemalloc.start()
    for _ in range(20):
        step()
    first, _ = tracemalloc.get_traced_memory()
    for _ in range(200):
        step()
    second, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert second - first < 64 * 1024


def test_in_place_update_of_leaf_requires_no_grad() -> None:
    w = dlrun.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="no_grad"):
        w.copy_(w * 2.0)
    with dlrun.no_grad():
        w.sub_(dlrun.tensor([0.5]))
    np.testing.assert_allclose(w.numpy(), [0.5])


def test_detach_cuts_the_graph() -> None:
    x = dlrun.tensor([3.0], requires_grad=True)
    y = x * x.detach()
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0])


def test_integer_outputs_do_not_require_grad() -> None:
    x = dlrun.tensor([[1.0, 3.0]], requires_grad=True)
    assert not x.argmax(1).requires_grad
    assert not (x > 2.0).requires_grad
    values, indices = x.max(dim=1)
    assert values.requires_grad and indices.dtype == np.int64
