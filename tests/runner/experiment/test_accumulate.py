"""Gradient accumulation (train.accumulate): K micro-batches of B equal one batch of K x B, in
both modes, with a warm-up schedule and a short last batch; two traces in static mode; resume
from the middle of an accumulated step; mixed precision skips a step as a whole."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dlrun.config import validate_config
from dlrun.runner import train as runner
from dlrun.runner.commands.compare import compare, markdown
from dlrun.runner.commands.graph_report import graph_report
from dlrun.runner.events import StepEnd
from dlrun.runner.experiment import batch_tensors, build_experiment
from dlrun.runner.experiment.accumulate import Accumulator
from dlrun.runner.train import Trainer
from tests.cli_helpers import assert_cli_fails

# 216 training rows: batches of 5 x 4 = 20 leave a last step of 16 rows (micro-batches 5, 5, 5, 1)
MLP = {
    "name": "acc-mlp", "seed": 3, "dtype": "float64",
    "data": {"name": "blobs", "options": {"n": 240, "n_classes": 3, "n_features": 4}},
    "model": {"type": "mlp", "hidden": [16], "activation": "tanh"},
    "optimizer": {"name": "adam", "lr": 0.01},
    "schedule": {"name": "cosine", "interval": "step", "warmup_steps": 3, "min_lr": 0.001},
    "train": {"epochs": 2, "batch_size": 5, "drop_last": False, "grad_clip_norm": 1.0},
    "logging": {"log_every": 1, "plots": False},
}
# 45 training windows of 8 tokens: steps of 3 x 3 = 9 windows (LSTM: 2 x 3 = 6, a last step of
# 3 windows: a short step of one micro-batch)
GPT = {
    "name": "acc-gpt", "seed": 1, "dtype": "float64",
    "data": {"name": "tokens", "options": {"n": 50, "seq_len": 8, "vocab_size": 11}},
    "model": {"type": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8,
              "dropout": 0.0},
    "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.1, "decay": "matrices"},
    "schedule": {"name": "cosine", "interval": "step", "warmup_steps": 2},
    "train": {"epochs": 1, "batch_size": 3, "drop_last": False},
    "logging": {"log_every": 1, "plots": False},
}

LSTM = {**GPT, "name": "acc-lstm", "model": {"type": "lstm", "embedding_dim": 8, "hidden_size": 16},
        "optimizer": {"name": "sgd", "lr": 0.5, "momentum": 0.9},
        "schedule": {"name": "step", "interval": "step", "step_size": 2, "gamma": 0.5,
                     "warmup_steps": 1}}


def _cfg(base: dict, mode: str = "static", **train: Any) -> Any:
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    cfg["mode"] = mode
    cfg["train"] = {**cfg["train"], **train}
    return validate_config(cfg, "test")


def _train(cfg: Any) -> tuple[Trainer, list[StepEnd]]:
    events: list[Any] = []
    trainer = Trainer(cfg, callbacks=[events.append], write=False)
    trainer.run()
    return trainer, [e for e in events if isinstance(e, StepEnd)]


def _params(trainer: Trainer) -> list[np.ndarray]:
    return [p.numpy() for p in trainer.exp.model.parameters()]


@pytest.mark.parametrize("mode", ["eager", "static"])
@pytest.mark.parametrize(("base", "k"), [(MLP, 4), (GPT, 3), (LSTM, 2)],
                         ids=["mlp", "gpt", "lstm"])
def test_k_micro_batches_equal_one_k_times_larger_batch(base: dict, k: int, mode: str) -> None:
    b = base["train"]["batch_size"]
    acc, acc_steps = _train(_cfg(base, mode, accumulate=k))
    big, big_steps = _train(_cfg(base, mode, batch_size=k * b))
    # optimizer steps are what is counted: steps, epochs, the warm-up schedule's rates
    assert [(e.step, e.epoch) for e in acc_steps] == [(e.step, e.epoch) for e in big_steps]
    assert len(acc_steps) > 4
    assert [e.lr for e in acc_steps] == pytest.approx([e.lr for e in big_steps], rel=1e-15)
    assert [e.samples for e in acc_steps] == [e.samples for e in big_steps]
    np.testing.assert_allclose([e.loss for e in acc_steps], [e.loss for e in big_steps],
                               rtol=1e-12, atol=1e-12)
    for a, c in zip(_params(acc), _params(big), strict=True):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)
    assert not np.allclose(_params(acc)[0], _params(_train(_cfg(base, mode))[0])[0])
    if mode == "static":  # the micro-step and the update (+ a short micro-batch for the MLP)
        step = acc.exp.train_step
        assert step.update.trace_count == 1
        assert step.micro.trace_count == (2 if base is MLP else 1)


def test_static_mode_traces_the_micro_step_and_the_update_once() -> None:
    cfg = _cfg(MLP, "static", accumulate=4, drop_last=True, epochs=3)
    trainer, steps = _train(cfg)
    assert len(steps) == 3 * 10
    step = trainer.exp.train_step
    assert (step.micro.trace_count, step.update.trace_count, step.trace_count) == (1, 1, 2)
    report = graph_report(cfg)
    assert list(report["parts"]) == ["micro_step", "update"]
    micro, update = (report["parts"][k]["text"] for k in ("micro_step", "update"))
    assert "matmul" in micro and "matmul" not in update  # forward and backward: micro only
    assert "sqrt" in update and "sqrt" not in micro  # Adam's step: the update only
    assert report["text"].index("# micro_step") < report["text"].index("# update")


@pytest.mark.parametrize("mode", ["eager", "static"])
def test_interrupted_inside_an_accumulated_step_and_resumed_equals_uninterrupted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    cfg = _cfg(MLP, mode, accumulate=4, eval_every=4, checkpoint_every=3)
    full = runner.train(cfg, runs_dir=tmp_path / "full")
    calls = {"n": 0}
    set_weight = Accumulator.set_weight

    def interrupt_the_fourteenth_micro_batch(self: Accumulator, weight: float) -> None:
        calls["n"] += 1  # 13 micro-steps done: 3 steps and one micro-batch of the 4th
        if calls["n"] == 14:
            raise KeyboardInterrupt
        set_weight(self, weight)

    monkeypatch.setattr(Accumulator, "set_weight", interrupt_the_fourteenth_micro_batch)
    part = runner.train(cfg, runs_dir=tmp_path / "part")
    monkeypatch.undo()
    assert part.status == "interrupted" and part.steps == 3  # mid-epoch (11 steps per epoch)
    resumed = runner.resume(part.run_dir)
    assert resumed.steps == full.steps == 22
    assert resumed.parameters_sha256 == full.parameters_sha256


@pytest.mark.parametrize("mode", ["eager", "static"])
def test_fp16_skips_the_whole_accumulated_step_on_an_overflow(mode: str) -> None:
    cfg = validate_config({**_cfg(MLP, mode).model_dump(), "dtype": "float32",
                           "precision": "fp16", "optimizer": {"name": "sgd", "lr": 0.1},
                           "schedule": {"name": "constant"},
                           "train": {"batch_size": 4, "accumulate": 2}}, "test")
    exp = build_experiment(cfg)
    xb, yb = next(iter(exp.train_loader))
    x, y = batch_tensors(exp, xb.copy(), yb)
    bad = xb.copy()
    bad[5] = 1e6  # the second micro-batch overflows float16: its gradients are inf/nan
    before = [p.numpy().copy() for p in exp.model.parameters()]
    scale = float(exp.amp.scaler.scale.item())
    with np.errstate(all="ignore"):  # the overflow is the point
        exp.train_step(*batch_tensors(exp, bad, yb))
    for p, q in zip(exp.model.parameters(), before, strict=True):
        np.testing.assert_array_equal(p.numpy(), q)  # skipped, the good micro-batch included
    assert float(exp.amp.scaler.scale.item()) == scale / 2
    exp.train_step(x, y)  # a good step moves the weights by the unscaled mean gradient
    moved = [p.numpy() - q for p, q in zip(exp.model.parameters(), before, strict=True)]
    assert all(np.all(np.isfinite(m)) for m in moved) and np.abs(moved[0]).max() > 0
    ref = build_experiment(validate_config({**cfg.model_dump(), "precision": "fp32",
                                            "train": {"batch_size": 8}}, "test"))
    ref.train_step(x, y)
    for m, p, q in zip(moved, ref.model.parameters(), before, strict=True):
        np.testing.assert_allclose(m, p.numpy() - q, rtol=0.05, atol=1e-3)


def test_compare_runs_with_accumulation_and_agrees() -> None:
    cfg = _cfg(MLP, accumulate=4, drop_last=True)
    report = compare(cfg, steps=4, warmup=1, timed=10)
    assert report["agree"] and report["accumulate"] == 4
    assert report["static"]["traces"] == 2
    assert report["max_rel_param_diff"] < 1e-12
    assert "accumulates 4 micro-batches of 5" in markdown(report)


def test_accumulate_below_one_is_a_config_error(tiny_config, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    assert_cli_fails(["train", str(tiny_config()), "--set", "train.accumulate=0",
                      "--runs-dir", str(runs)], "train.accumulate", ">= 1")
    assert not runs.exists()


def test_the_last_step_batch_must_reach_every_rank() -> None:
    from dlrun.errors import ConfigError
    from dlrun.runner.parallel import check_batches

    cfg = _cfg(MLP, accumulate=2, batch_size=50)
    check_batches(cfg, 2, 553)  # a last step of 53 rows: 27 / 26
    with pytest.raises(ConfigError, match="last batch of 1 sample"):
        check_batches(cfg, 2, 501)  # 5 steps of 100 and 1 row


def test_the_accumulator_keeps_buffers_for_trainable_parameters_only() -> None:
    import dlrun
    from dlrun import nn

    frozen, trained = nn.Parameter(dlrun.ones(2)), nn.Parameter(dlrun.ones(3))
    frozen.requires_grad = False
    acc = Accumulator([frozen, trained], "cpu", np.float64)
    assert [g.shape for g in acc.grads] == [(3,)]
    for _ in range(2):
        (trained * 2.0).sum().backward()
        acc.add((trained * 0.0).sum())
    acc.take()
    assert frozen.grad is None and np.array_equal(trained.grad.numpy(), np.full(3, 4.0))
