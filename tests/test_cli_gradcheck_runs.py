"""`dlrun gradcheck` and `dlrun runs [show]` through typer's CliRunner."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from dlrun import cli
from dlrun.cli import app
from dlrun.config import load_config
from dlrun.engine.prims import REGISTRY
from dlrun.runner.train import train


def _one_error_line(output: str) -> str:
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


def test_gradcheck_passes(tiny_config) -> None:
    result = CliRunner().invoke(app, ["gradcheck", str(tiny_config()), "--batch", "3",
                                      "--max-per-param", "5", "--set", "model.hidden=[8]"])
    assert result.exit_code == 0, result.output
    assert "1.weight" in result.output and "4.bias" in result.output
    assert "passed" in result.output and "FAIL" not in result.output


def test_gradcheck_catches_a_wrong_gradient(tiny_config, monkeypatch) -> None:
    monkeypatch.setattr(REGISTRY["tanh"], "vjp", lambda g, y, x: (g * (1.0 - y),))
    result = CliRunner().invoke(app, ["gradcheck", str(tiny_config()),
                                      "--set", "model.activation=tanh"])
    assert result.exit_code == 1
    assert "FAIL" in result.output
    line = _one_error_line(result.output)
    assert "gradient check failed for 2 of 4 parameters (1.weight, 1.bias)" in line


def test_gradcheck_bad_input(tiny_config, tmp_path) -> None:
    result = CliRunner().invoke(app, ["gradcheck", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1 and "missing.yaml" in _one_error_line(result.output)
    result = CliRunner().invoke(app, ["gradcheck", str(tiny_config()), "--batch", "0"])
    assert result.exit_code == 1 and "batch" in _one_error_line(result.output)


@pytest.fixture
def runs_dir(tiny_config, tmp_path) -> Path:
    root = tmp_path / "runs"
    for name in ("first", "second"):
        cfg = tiny_config(name=name, mode="eager", train={"epochs": 1, "batch_size": 16})
        train(load_config(cfg), runs_dir=root)
    return root


def test_runs_table_and_show(runs_dir, monkeypatch) -> None:
    monkeypatch.setattr(cli, "console", Console(width=200))  # a wide terminal: every column
    runner = CliRunner()
    result = runner.invoke(app, ["runs", "--dir", str(runs_dir)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.index("-second") < out.index("-first")  # newest first
    assert out.count("completed") == 2 and "eager/cpu" in out
    assert "best val_loss" in out and "final val_accuracy" in out  # one metric: in the header
    result = runner.invoke(app, ["runs", "show", "second", "--dir", str(runs_dir)])
    assert result.exit_code == 0, result.output
    assert "completed" in result.output and "last.safetensors" in result.output
    assert "name: second" in result.output  # the resolved config
    result = runner.invoke(app, ["runs", "--dir", str(runs_dir), "show", "first"])
    assert result.exit_code == 0, result.output
    assert "name: first" in result.output


def test_runs_errors(runs_dir, tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["runs", "--dir", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "nowhere" in _one_error_line(result.output)
    result = runner.invoke(app, ["runs", "show", "nope", "--dir", str(runs_dir)])
    assert result.exit_code == 1 and "nope" in _one_error_line(result.output)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["runs", "--dir", str(empty)])
    assert result.exit_code == 0 and "no runs" in result.output


def test_runs_filters_on_the_command_line(runs_dir) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["runs", "--dir", str(runs_dir), "--name", "fir*"])
    assert result.exit_code == 0, result.output
    assert "-first" in result.output and "-second" not in result.output
    result = runner.invoke(app, ["runs", "--dir", str(runs_dir), "--sort", "val_loss",
                                 "--last", "2", "--status", "completed", "--wide"])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if line.startswith("run "))
    assert header.split()[-2:] == ["final", "val_loss"] and "date" in header  # --wide
    result = runner.invoke(app, ["runs", "--dir", str(runs_dir), "--status", "complete"])
    assert result.exit_code == 1
    assert "did you mean 'completed'" in _one_error_line(result.output)
