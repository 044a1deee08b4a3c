"""The training loop end to end: run directory, learning, determinism, resume, NaN, early stop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlrun.config import load_config
from dlrun.errors import NumericalError
from dlrun.runner import train as runner
from dlrun.runner.events import EpochEnd, RunFinished, RunStarted, StepEnd


@pytest.mark.parametrize("mode", ["eager", "static"])
def test_run_directory_and_learning(tiny_config, tmp_path: Path, mode: str) -> None:
    events = []
    cfg = load_config(tiny_config(), [f"mode={mode}"])
    summary = runner.train(cfg, callbacks=[events.append], runs_dir=tmp_path / "runs")
    run = Path(summary.run_dir)
    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "summary.json",
                 "checkpoints/last.safetensors", "checkpoints/last.json",
                 "checkpoints/best.safetensors"):
        assert (run / name).is_file(), name
    assert list((run / "plots").glob("*.png"))
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert load_config(run / "config.yaml") == cfg  # the resolved config is what was saved
    kinds = [type(e) for e in events]
    assert kinds[0] is RunStarted and kinds[-1] is RunFinished
    assert kinds.count(EpochEnd) == 3 and kinds.count(StepEnd) == summary.steps
    losses = [e.loss for e in events if isinstance(e, StepEnd)]
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])
    assert summary.final["val_accuracy"] > 0.9
    if mode == "static":
        assert summary.trace_counts["train_step"] == 1


@pytest.mark.parametrize("mode", ["eager", "static"])
def test_same_seed_same_parameters_hash(tiny_config, tmp_path: Path, mode: str) -> None:
    cfg = load_config(tiny_config(), [f"mode={mode}", "train.epochs=1"])
    a = runner.train(cfg, runs_dir=tmp_path / "a").parameters_sha256
    b = runner.train(cfg, runs_dir=tmp_path / "b").parameters_sha256
    c = runner.train(cfg.model_copy(update={"seed": 4}), runs_dir=tmp_path / "c")
    assert a == b != c.parameters_sha256


@pytest.mark.parametrize("mode", ["eager", "static"])
def test_interrupted_and_resumed_equals_uninterrupted(tiny_config, tmp_path: Path,
                                                      mode: str) -> None:
    cfg = load_config(tiny_config(), [f"mode={mode}", "train.eval_every=7",
                                      "schedule.name=step", "schedule.gamma=0.5"])
    full = runner.train(cfg, runs_dir=tmp_path / "full")

    def interrupt(event) -> None:
        if isinstance(event, StepEnd) and event.step == 20:  # mid-epoch (15 steps per epoch)
            raise KeyboardInterrupt

    part = runner.train(cfg, callbacks=[interrupt], runs_dir=tmp_path / "part")
    assert part.status == "interrupted" and part.steps == 20
    resumed = runner.resume(part.run_dir)
    assert resumed.steps == full.steps
    assert resumed.parameters_sha256 == full.parameters_sha256


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(
        tiny_config, tmp_path: Path) -> None:
    cfg = load_config(tiny_config(), ["optimizer.name=sgd", "optimizer.lr=1e30",
                                      "train.checkpoint_every=1", "model.dropout=0.0"])
    with pytest.raises(NumericalError, match=r"at step \d+") as info:
        runner.train(cfg, runs_dir=tmp_path / "runs")
    run = next((tmp_path / "runs").iterdir())
    last = json.loads((run / "checkpoints" / "last.json").read_text())
    step = int(str(info.value).split("at step ")[1].split()[0])
    assert last["progress"]["step"] == step - 1  # the failing step was not saved
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"


def test_early_stopping(tiny_config, tmp_path: Path) -> None:
    cfg = load_config(tiny_config(), [
        "train.epochs=20", "train.early_stopping={metric: val_loss, patience: 1, min_delta: 10}"])
    summary = runner.train(cfg, runs_dir=tmp_path / "runs")
    assert summary.status == "early_stopped" and summary.epochs == 2


def test_early_stopping_on_an_unmeasured_metric_is_a_config_error(tiny_config,
                                                                   tmp_path: Path) -> None:
    from dlrun.errors import ConfigError

    cfg = load_config(tiny_config(), ["train.early_stopping={metric: val_r2}"])
    with pytest.raises(ConfigError, match="val_r2.*val_accuracy"):
        runner.train(cfg, runs_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()  # refused before a run directory was made


def test_the_logged_learning_rate_is_the_one_each_step_used(tiny_config, tmp_path: Path) -> None:
    cfg = load_config(tiny_config(), [
        "schedule={name: cosine, interval: step, warmup_steps: 4, decay_steps: 12, min_lr: 0.001}",
        "logging.log_every=1", "train.max_steps=12", "logging.plots=false"])
    events = []
    summary = runner.train(cfg, callbacks=[events.append], runs_dir=tmp_path)
    rows = [json.loads(line) for line in
            (Path(summary.run_dir) / "metrics.jsonl").read_text().splitlines()]
    logged = [r["lr"] for r in rows if "lr" in r]
    warmup = [0.01 * (k + 1) / 5 for k in range(4)]  # nanoGPT's warm-up for steps 0..3
    assert logged[:4] == pytest.approx(warmup)
    assert logged[4] == pytest.approx(0.01)  # the first cosine step: the peak rate
    assert [e.lr for e in events if isinstance(e, StepEnd)] == pytest.approx(logged)
