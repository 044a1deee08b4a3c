"""Module: registration, traversal, state_dict / load_state_dict, modes, device/dtype, repr."""

from __future__ import annotations

import numpy as np
import pytest

import dlrun
from dlrun import nn
from dlrun.errors import CheckpointError


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.scale = nn.Parameter(dlrun.ones(4))
        self.register_buffer("steps", dlrun.zeros(()))
        self.register_buffer("cache", dlrun.zeros(2), persistent=False)

    def forward(self, x: dlrun.Tensor) -> dlrun.Tensor:
        return self.bn(self.fc(x)) * self.scale


def test_parameters_buffers_and_state_dict_names_follow_pytorch() -> None:
    m = Block()
    assert [n for n, _ in m.named_parameters()] == [
        "scale", "fc.weight", "fc.bias", "bn.weight", "bn.bias"]
    assert [n for n, _ in m.named_buffers()] == [
        "steps", "cache", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"]
    assert list(m.state_dict()) == [
        "scale", "steps", "fc.weight", "fc.bias", "bn.weight", "bn.bias", "bn.running_mean",
        "bn.running_var", "bn.num_batches_tracked"]
    assert m.num_parameters() == 4 + 12 + 4 + 4 + 4
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in m.parameters())
    assert not any(t.requires_grad for t in m.state_dict().values())


def test_setattr_rules() -> None:
    m = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="weight"):
        m.weight = dlrun.zeros(2, 2)
    m.bias = None
    assert m.bias is None and "bias" not in m.state_dict()
    m.extra = 3
    assert m.extra == 3 and "extra" not in m.state_dict()

    class Bad(nn.Module):
        def __init__(self) -> None:
            self.w = nn.Parameter(dlrun.ones(1))

    with pytest.raises(AttributeError, match="super"):
        Bad()
    with pytest.raises(AttributeError, match="nope"):
        _ = m.nope


def test_shared_parameters_are_listed_once() -> None:
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(seq.parameters())) == 2
    assert seq.num_parameters() == 6


def test_load_state_dict_copies_in_place_and_round_trips() -> None:
    dlrun.manual_seed(0)
    a, b = Block(), Block()
    a.train()
    a(dlrun.randn(5, 3))  # moves running stats
    weight_obj, mean_obj = b.fc.weight, b.bn.running_mean
    b.load_state_dict(a.state_dict())
    assert b.fc.weight is weight_obj and b.bn.running_mean is mean_obj
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=k)
    x = dlrun.randn(4, 3)
    a.eval(), b.eval()
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


def test_load_state_dict_accepts_numpy_arrays() -> None:
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    b.load_state_dict({k: v.numpy() for k, v in a.state_dict().items()})
    np.testing.assert_array_equal(a.weight.numpy(), b.weight.numpy())


def test_load_state_dict_shape_mismatch_names_key_and_both_shapes() -> None:
    m = nn.Sequential(nn.Linear(4, 3))
    sd = nn.Sequential(nn.Linear(5, 3)).state_dict()
    before = m[0].weight.numpy().copy()
    with pytest.raises(CheckpointError) as err:
        m.load_state_dict(sd)
    msg = str(err.value)
    assert "0.weight" in msg and "(3, 5)" in msg and "(3, 4)" in msg
    np.testing.assert_array_equal(m[0].weight.numpy(), before)  # nothing was copied


def test_load_state_dict_strict_and_non_strict() -> None:
    m = nn.Linear(2, 2)
    sd = dict(m.state_dict())
    del sd["bias"]
    sd["extra"] = dlrun.zeros(1)
    with pytest.raises(CheckpointError, match="missing keys: bias.*unexpected keys: extra"):
        m.load_state_dict(sd)
    result = m.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["bias"] and result.unexpected_keys == ["extra"]


def test_train_eval_propagate() -> None:
    m = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(0.5)))
    assert m.training and m[1][0].training
    m.eval()
    assert not m.training and not m[1][0].training
    m.train()
    assert m[1][0].training


def test_zero_grad() -> None:
    m = nn.Linear(2, 1)
    m(dlrun.randn(3, 2)).sum().backward()
    assert m.weight.grad is not None
    m.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(m.weight.grad.numpy(), 0.0)
    m.zero_grad()
    assert m.weight.grad is None and m.bias.grad is None


def test_to_double_keeps_parameter_objects() -> None:
    m = nn.BatchNorm1d(3)
    w = m.weight
    m.double()
    assert m.weight is w and w.dtype == np.float64 and m.running_var.dtype == np.float64
    assert m.num_batches_tracked.dtype == np.int64
    m.float()
    assert w.dtype == np.float32


def test_containers() -> None:
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert len(seq) == 3 and isinstance(seq[1], nn.ReLU)
    assert list(seq[1:].state_dict()) == ["2.weight", "2.bias"]  # slices keep names
    seq.append(nn.Sigmoid())
    assert seq(dlrun.randn(4, 2)).shape == (4, 1)
    ml = nn.ModuleList([nn.Linear(1, 1) for _ in range(3)])
    assert len(ml) == 3 and list(ml.state_dict())[-1] == "2.bias"
    md = nn.ModuleDict({"a": nn.Linear(1, 2)})
    assert "a" in md and list(md.state_dict()) == ["a.weight", "a.bias"]


def test_repr_shows_the_tree() -> None:
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    assert repr(seq) == (
        "Sequential(\n  (0): Linear(in_features=2, out_features=3, bias=True)\n  (1): ReLU()\n)"
    )
    assert "Parameter containing" in repr(seq[0].bias)


def test_parameter_from_tensor_and_array() -> None:
    t = dlrun.randn(2, 2)
    p = nn.Parameter(t)
    assert p.requires_grad and p.is_leaf and isinstance(p, dlrun.Tensor)
    np.testing.assert_array_equal(p.numpy(), t.numpy())
    q = nn.Parameter(np.ones(3), requires_grad=False)
    assert not q.requires_grad and q.shape == (3,)
    assert type(p * 2.0) is dlrun.Tensor
