"""Losses read in batches (as on a GPU, where a read per step would sync the device every step)
give the same run as reading every step, and still stop at the first non-finite loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlrun.config import load_config
from dlrun.errors import NumericalError
from dlrun.runner.io.metrics_log import MetricsLogger
from dlrun.runner.io.pending_losses import PendingLosses, read_every
from dlrun.runner.io.rundir import create_run_dir
from dlrun.runner.train import Trainer


def _train(cfg, root: Path, every: int) -> tuple[dict, Path, list]:
    events: list = []
    run = create_run_dir(root, cfg.name)
    trainer = Trainer(cfg, [events.append], run_dir=run)
    trainer.logger = MetricsLogger(run)
    trainer.pending = PendingLosses(every)
    return trainer.run(), run, events


def test_reading_every_7_steps_gives_the_same_run_with_fewer_reads(tiny_config,
                                                                    tmp_path: Path) -> None:
    cfg = load_config(tiny_config(), ["logging.log_every=5", "train.eval_every=9"])
    one, run1, ev1 = _train(cfg, tmp_path / "a", 1)
    seven, run7, ev7 = _train(cfg, tmp_path / "b", 7)
    assert seven.parameters_sha256 == one.parameters_sha256
    assert seven.final == one.final
    rows = [(json.loads(a), json.loads(b)) for a, b in zip(
        (run1 / "metrics.jsonl").read_text().splitlines(),
        (run7 / "metrics.jsonl").read_text().splitlines(), strict=True)]
    for a, b in rows:  # the same records; only the measured step times differ
        a.pop("step_ms", None), b.pop("step_ms", None)
        assert a == b
    steps = [(e.step, e.loss) for e in ev1 if type(e).__name__ == "StepEnd"]
    assert [(e.step, e.loss) for e in ev7 if type(e).__name__ == "StepEnd"] == steps
    assert one.loss_reads_per_step == 1.0
    assert seven.loss_reads_per_step < 0.5  # read at logs, evaluations, epoch ends, every 7


def test_a_nan_found_in_a_batch_of_losses_names_its_step_and_is_never_saved(
        tiny_config, tmp_path: Path) -> None:
    cfg = load_config(tiny_config(), ["optimizer.name=sgd", "optimizer.lr=1e4",  # NaN at 6
                                      "train.checkpoint_every=4", "model.dropout=0.0",
                                      "logging.log_every=1000"])
    with pytest.raises(NumericalError, match=r"at step \d+") as first:
        _train(cfg, tmp_path / "a", 1)
    with pytest.raises(NumericalError, match=r"at step \d+") as batched:
        _train(cfg, tmp_path / "b", 50)
    assert str(batched.value) == str(first.value)
    run = next((tmp_path / "b").iterdir())
    step = int(str(batched.value).split("at step ")[1].split()[0])
    # a checkpoint is written only after its steps' losses were read and checked
    assert step > 4
    saved = json.loads((run / "checkpoints" / "last.json").read_text())
    assert saved["progress"]["step"] == 4 * ((step - 1) // 4)
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"


def test_losses_are_read_every_step_on_the_cpu_and_at_log_points_on_a_gpu() -> None:
    assert read_every("cpu", 50) == 1
    assert read_every("cuda:0", 50) == 50
