"""Weight-decay parameter groups (nanoGPT's configure_optimizers): which parameters decay,
tied weights once, AdamW on two groups, state_dict round trip, the config's optimizer.decay."""

from __future__ import annotations

import numpy as np
import pytest

import dlrun
from dlrun import nn, optim
from dlrun.config import validate_config
from dlrun.runner.experiment.builders import build_optimizer


class TinyLM(nn.Module):
    """Embedding -> Linear (bias) -> LayerNorm -> head tied to the embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(11, 4)
        self.fc = nn.Linear(4, 4)
        self.ln = nn.LayerNorm(4)
        self.head = nn.Linear(4, 11, bias=False)
        self.head.weight = self.wte.weight  # tied: one Parameter, two modules

    def forward(self, x: dlrun.Tensor) -> dlrun.Tensor:
        return self.head(self.ln(self.fc(self.wte(x))))


def _names(model: nn.Module, group: dict) -> list[str]:
    ids = {id(p) for p in group["params"]}
    return [n for n, p in model.named_parameters() if id(p) in ids]


def test_matrices_decay_biases_and_norms_do_not() -> None:
    dlrun.manual_seed(0)
    model = TinyLM()
    params = list(model.parameters()) + [model.head.weight]  # the tied weight given twice
    decay, no_decay = optim.decay_groups(params, 0.1)
    assert _names(model, decay) == ["wte.weight", "fc.weight"]
    assert _names(model, no_decay) == ["fc.bias", "ln.weight", "ln.bias"]
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    assert len(optim.decay_groups([model.fc.weight], 0.1)) == 1  # no empty group
    opt = optim.AdamW(optim.decay_groups(params, 0.1), lr=1e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == 5


def test_adamw_leaves_a_no_decay_parameter_untouched_by_decay() -> None:
    w = nn.Parameter(dlrun.tensor(np.ones((2, 3))))
    b = nn.Parameter(dlrun.tensor(np.ones(3)))
    opt = optim.AdamW(optim.decay_groups([w, b], 0.5), lr=0.1)
    for _ in range(3):
        w.grad, b.grad = dlrun.zeros(2, 3), dlrun.zeros(3)  # no gradient: only decay moves
        opt.step()
    np.testing.assert_allclose(w.numpy(), np.full((2, 3), (1 - 0.1 * 0.5) ** 3), rtol=1e-6)
    np.testing.assert_array_equal(b.numpy(), np.ones(3))


def test_two_groups_state_dict_round_trip() -> None:
    def make() -> tuple[nn.Module, optim.Optimizer]:
        dlrun.manual_seed(1)
        model = TinyLM()
        return model, optim.AdamW(optim.decay_groups(model.parameters(), 0.1), lr=1e-2)

    def train(model: nn.Module, opt: optim.Optimizer, steps: int) -> None:
        x = dlrun.tensor(np.arange(8).reshape(2, 4) % 11)
        for _ in range(steps):
            model(x).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()

    ref_model, ref_opt = make()
    train(ref_model, ref_opt, 6)

    model, opt = make()
    train(model, opt, 3)
    state = opt.state_dict()
    assert [g["weight_decay"] for g in state["param_groups"]] == [0.1, 0.0]
    assert [g["params"] for g in state["param_groups"]] == [[0, 1], [2, 3, 4]]
    weights = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    model2, opt2 = make()
    model2.load_state_dict(weights)
    opt2.param_groups[1]["weight_decay"] = 0.3  # restored from the state_dict below
    opt2.load_state_dict(state)
    assert [g["weight_decay"] for g in opt2.param_groups] == [0.1, 0.0]
    train(model2, opt2, 3)
    for (name, a), b in zip(ref_model.state_dict().items(), model2.state_dict().values(),
                            strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("decay, weight_decay, groups", [
    ("all", 0.1, [(5, 0.1)]),
    ("matrices", 0.1, [(2, 0.1), (3, 0.0)]),
    ("matrices", 0.0, [(5, 0.0)]),  # nothing decays: one group
])
def test_config_optimizer_decay(decay: str, weight_decay: float, groups: list) -> None:
    cfg = validate_config({"data": {"name": "tokens"}, "model": {"type": "lstm"},
                           "optimizer": {"name": "adamw", "weight_decay": weight_decay,
                                         "decay": decay}})
    model = TinyLM()
    opt = build_optimizer(cfg, list(model.parameters()) + [model.head.weight])
    assert [(len(g["params"]), g["weight_decay"]) for g in opt.param_groups] == groups
