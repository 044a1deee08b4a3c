"""The command line: help works through the console script and `python -m dlrun`."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from dlrun.cli import app


def test_help_lists_the_app() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "dlrun" in result.output


def test_python_m_dlrun_help() -> None:
    out = subprocess.run([sys.executable, "-m", "dlrun", "--help"], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and "dlrun 0.1.0" in result.output


def test_train_eval_compare_graph(tiny_config, tmp_path) -> None:
    runner = CliRunner()
    cfg = tiny_config()
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["train", str(cfg), "--set", "train.epochs=1", "--mode", "eager",
                                 "--runs-dir", str(runs), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "completed" in result.output
    (run,) = runs.iterdir()
    saved = (run / "config.yaml").read_text()
    assert "mode: eager" in saved and "epochs: 1" in saved
    result = runner.invoke(app, ["eval", str(run)])
    assert result.exit_code == 0, result.output
    assert "val_accuracy" in result.output
    out = tmp_path / "cmp.json"
    result = runner.invoke(app, ["compare", str(cfg), "--steps", "5", "--timed", "10",
                                 "--warmup", "1", "--json", str(out), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    assert '"agree": true' in out.read_text() and "Speedup" in result.output
    result = runner.invoke(app, ["graph", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "fuse" in result.output and "= input(index=0)" in result.output


def test_bad_config_is_one_line_exit_1_and_no_traceback(tiny_config, tmp_path) -> None:
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["train", str(tiny_config()), "--set", "optimizer.lr=-1",
                                      "--set", "train.batch_sise=3", "--runs-dir", str(runs)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "optimizer.lr" in result.output and "batch_size" in result.output
    assert not runs.exists()  # nothing was created


def test_debug_shows_the_traceback(tmp_path) -> None:
    result = CliRunner().invoke(app, ["--debug", "train", str(tmp_path / "missing.yaml")])
    assert result.exit_code != 0 and result.exception is not None


def test_missing_config_file(tmp_path) -> None:
    result = CliRunner().invoke(app, ["train", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1 and "missing.yaml" in result.output
