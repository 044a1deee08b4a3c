"""A run directory written before the typed records (summary.json, metrics.jsonl and checkpoints
as dlrun wrote them then, in tests/runner/fixtures/) still lists, evaluates and resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dlrun.config import load_config
from dlrun.runner import train as runner
from dlrun.runner.commands.evaluate import evaluate
from dlrun.runner.commands.runs import list_runs_table, show_run
from dlrun.runner.io.metrics_log import read_metrics, read_run_summary
from dlrun.runner.records import RunSummary

OLD_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "20261206-034821-oldrun"


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    """A copy of the old run (interrupted at step 9 of 12) under tmp_path/runs."""
    run = tmp_path / "runs" / OLD_RUN.name
    shutil.copytree(OLD_RUN, run)
    return run


def test_the_old_summary_reads_back_to_the_same_json(old_run: Path) -> None:
    written = json.loads((old_run / "summary.json").read_text())
    summary = read_run_summary(old_run)
    assert summary is not None and summary.status == "interrupted" and summary.steps == 9
    assert summary.best.metric == "val_loss" and summary.best.step == 6
    assert summary.to_json() == written


def test_a_summary_missing_keys_takes_defaults() -> None:
    summary = RunSummary.from_json({"name": "x", "status": "failed", "error": "boom", "new": 1})
    assert summary.final == {} and summary.best.value is None and summary.error == "boom"


def test_the_old_run_lists_and_shows(old_run: Path) -> None:
    (row,) = list_runs_table(old_run.parent)
    assert row["name"] == "oldrun" and row["status"] == "interrupted" and row["steps"] == 9
    assert row["best_metric"] == "val_loss" and row["best_value"] == pytest.approx(0.35568413)
    assert row["main_metric"] == "val_accuracy"
    info = show_run(old_run.name, old_run.parent)
    assert info["summary"]["final"]["val_accuracy"] == pytest.approx(0.8333333)
    assert [r["step"] for r in info["metrics"]][-1] == 8


def test_the_old_run_evaluates(old_run: Path) -> None:
    result = evaluate(old_run, split="val", tag="best")
    assert result["step"] == 6
    assert result["metrics"]["val_loss"] == pytest.approx(0.3556841313838959, rel=1e-6)


def test_the_old_run_resumes_where_it_stopped(old_run: Path, tmp_path: Path) -> None:
    """Resumed from the old checkpoint at step 9, the run ends as a fresh run does (to float
    rounding: the steps before the checkpoint ran on the engine of that time)."""
    resumed = runner.resume(old_run)
    assert resumed.status == "completed" and resumed.steps == 12
    fresh = runner.train(load_config(old_run / "config.yaml"), runs_dir=tmp_path / "fresh")
    assert resumed.final["val_loss"] == pytest.approx(fresh.final["val_loss"], rel=1e-4)
    steps = [r["step"] for r in read_metrics(old_run) if "train_loss" in r]
    assert steps == sorted(steps) and steps[-1] == 12
