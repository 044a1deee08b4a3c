"""Listing run directories (newest first, with status) and showing one run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dlrun.config import load_config
from dlrun.errors import CheckpointError, ConfigError
from dlrun.runner.commands.runs import NO_SUMMARY, list_runs_table, show_run
from dlrun.runner.train import train


@pytest.fixture
def two_runs(tiny_config, tmp_path) -> Path:
    """runs/ with a finished eager run, then a finished static run named 'second'."""
    root = tmp_path / "runs"
    train(load_config(tiny_config(mode="eager", train={"epochs": 1, "batch_size": 16})),
          runs_dir=root)
    train(load_config(tiny_config(name="second", train={"epochs": 1, "batch_size": 16})),
          runs_dir=root)
    return root


def test_table_lists_runs_newest_first(two_runs) -> None:
    rows = list_runs_table(two_runs)
    assert [r["name"] for r in rows] == ["second", "tiny"]
    second, first = rows
    assert second["run"].endswith("-second") and second["mode"] == "static"
    assert first["mode"] == "eager" and first["device"] == "cpu"
    for r in rows:
        assert r["status"] == "completed" and r["steps"] == 13  # 216 training samples / 16
        assert r["best_metric"] == "val_loss" and r["best_value"] > 0
        assert r["main_metric"] == "val_accuracy" and 0 <= r["main_value"] <= 1
        assert len(r["date"]) == 19 and r["date"][:2] == "20"


def test_a_run_without_summary_is_running_or_crashed(two_runs) -> None:
    (old,) = two_runs.glob("*-tiny")
    crashed = two_runs / "20991231-235959-crashed"
    shutil.copytree(old, crashed)
    (crashed / "summary.json").unlink()
    rows = list_runs_table(two_runs)
    assert rows[0]["run"] == crashed.name and rows[0]["status"] == NO_SUMMARY
    assert rows[0]["date"] == "2099-12-31 23:59:59"
    assert rows[0]["mode"] == "eager" and rows[0]["steps"] == 13  # from config and metrics
    assert rows[0]["best_value"] is None


def test_show_run(two_runs) -> None:
    info = show_run("second", two_runs)
    assert info["name"] == "second" and info["status"] == "completed"
    assert info["config"]["name"] == "second" and info["config"]["mode"] == "static"
    assert info["config"]["train"]["epochs"] == 1  # the resolved config, defaults included
    assert info["summary"]["status"] == "completed"
    assert 1 <= len(info["metrics"]) <= 5 and info["metrics"][-1]["step"] == 13
    assert info["metrics_records"] >= len(info["metrics"])
    names = {f["name"] for f in info["checkpoints"]}
    assert {"last.safetensors", "last.json", "best.safetensors"} <= names
    assert any(f["name"] == "loss.png" for f in info["plots"])
    by_path = show_run(Path(info["path"]) / "checkpoints" / "last.json", two_runs)
    assert by_path["run"] == info["run"]
    json.dumps(info)  # plain data


def test_unknown_run_and_missing_folder(two_runs, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="nope"):
        show_run("nope", two_runs)
    with pytest.raises(CheckpointError, match="no such runs folder"):
        list_runs_table(tmp_path / "elsewhere")
    assert list_runs_table(tmp_path) == []  # a folder without runs: an empty table


def test_filters_last_and_sort(two_runs, tmp_path) -> None:
    old = Path(__file__).resolve().parents[1] / "fixtures" / "20261206-034821-oldrun"
    shutil.copytree(old, two_runs / old.name)  # interrupted, the oldest
    assert [r["name"] for r in list_runs_table(two_runs, name="sec*")] == ["second"]
    assert [r["name"] for r in list_runs_table(two_runs, name="*-tiny")] == ["tiny"]  # folder
    assert [r["name"] for r in list_runs_table(two_runs, status="interrupted")] == ["oldrun"]
    assert [r["name"] for r in list_runs_table(two_runs, last=2)] == ["second", "tiny"]
    rows = list_runs_table(two_runs)
    for metric, higher in (("val_loss", False), ("val_accuracy", True)):
        ranked = list_runs_table(two_runs, sort=metric)
        values = [r["final"][metric] for r in ranked]
        assert values == sorted((r["final"][metric] for r in rows), reverse=higher)
    assert list_runs_table(two_runs, status="failed") == []


def test_filter_errors(two_runs) -> None:
    with pytest.raises(ConfigError, match="--status: expected one of .* got 'complete'; did "
                                          "you mean 'completed'"):
        list_runs_table(two_runs, status="complete")
    with pytest.raises(ConfigError, match="--sort: no run here has the final metric "
                                          "'val_acc'; did you mean 'val_accuracy'"):
        list_runs_table(two_runs, sort="val_acc")
    with pytest.raises(ConfigError, match="--last"):
        list_runs_table(two_runs, last=0)
