"""Plots: one PNG per metric family, nothing for an empty run, [] without matplotlib."""

from __future__ import annotations

import builtins
import math
from pathlib import Path
from typing import Any

import pytest

from dlrun.runner.io.metrics_log import MetricsLogger
from dlrun.runner.io.plots import line_chart, metric_family, plot_metrics

PNG = b"\x89PNG\r\n\x1a\n"


def fill(run: Path) -> None:
    log = MetricsLogger(run)
    for step in range(1, 41):
        log.log({"step": step, "epoch": step // 10, "train_loss": 3.0 / step, "lr": 0.1,
                 "time": step * 0.01})
        if step % 10 == 0:
            log.log({"step": step, "epoch": step // 10, "val_loss": 2.0 / step,
                     "val_acc": step / 50, "split": "val"})
    log.log({"step": 41, "train_loss": math.nan})


@pytest.mark.parametrize(
    ("key", "family"),
    [("train_loss", "loss"), ("val_loss", "loss"), ("loss", "loss"), ("val/acc", "acc"),
     ("test_accuracy", "accuracy"), ("lr", "lr"), ("train", "train")],
)
def test_metric_family(key: str, family: str) -> None:
    assert metric_family(key) == family


def test_one_png_per_family(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    fill(tmp_path)
    (tmp_path / "plots").mkdir()
    paths = plot_metrics(tmp_path)
    assert [p.name for p in paths] == ["acc.png", "loss.png", "lr.png"]
    for p in paths:
        assert p.parent == tmp_path / "plots" and p.read_bytes()[:8] == PNG
    assert not [p for p in (tmp_path / "plots").iterdir() if p.suffix != ".png"]


def test_empty_run_writes_nothing(tmp_path: Path) -> None:
    assert plot_metrics(tmp_path) == []
    MetricsLogger(tmp_path).log({"step": 1, "epoch": 0, "note": "warming up"})
    assert plot_metrics(tmp_path) == []
    assert not (tmp_path / "plots").exists()


def test_without_matplotlib_returns_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(tmp_path)
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert plot_metrics(tmp_path) == []


def test_line_chart(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = line_chart(tmp_path / "c" / "speed.png",
                      {"eager": ([1, 2, 3], [5.0, 4.0, 4.5]), "static": ([1, 2, 3], [2.0, 1.9, 2])},
                      title="step time", xlabel="step", ylabel="ms")
    assert path.read_bytes()[:8] == PNG
