"""`dlrun sweep` on the command line: bad input is one error line, exit 1 and no sweep folder;
a good sweep prints the ranked trials and best.yaml; `dlrun runs` lists it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlrun.cli import app
from tests.cli_helpers import assert_cli_fails
from tests.runner.sweep.sweep_helpers import write_config

pytest.importorskip("optuna")
LR = {"space": "loguniform", "lower": 1.0e-3, "upper": 1.0e-1}


def _fails(tmp_path: Path, config: Path, *needles: str, extra: tuple[str, ...] = ()) -> None:
    runs = tmp_path / "runs"
    assert_cli_fails(["sweep", str(config), "--runs-dir", str(runs), *extra], *needles)
    assert not runs.exists() or not any(runs.iterdir()), "a half-made sweep folder"


@pytest.mark.parametrize(("changes", "needles"), [
    ({"sweep.parameters": {}}, ("sweep.parameters", "empty search space")),
    ({"sweep.metric": "val_acuracy"}, ("sweep.metric", "never logged", "val_accuracy")),
    ({"sweep.parameters": {"optimizer.lrr": LR}}, ("optimizer.lrr", "did you mean 'optimizer.lr'")),
    ({"sweep.parameters": {"model.hiden": {"values": [[8]]}}}, ("model.hiden", "hidden")),
    ({"sweep.parameters": {"optimizer.lr": {"space": "uniform", "lower": 0.1, "upper": 0.01}}},
     ("sweep.parameters.optimizer.lr.upper", "greater than lower")),
    ({"sweep.parameters": {"optimizer.lr": {"space": "loguniform", "lower": 0, "upper": 1}}},
     ("lower", "log scale")),
    ({"sweep.sampler": "grid", "sweep.parameters": {"optimizer.lr": LR}},
     ("sweep.parameters.optimizer.lr", "values")),
    ({"sweep.parameters": {"optimizer.lr": {"space": "uniform", "lower": 0.0, "upper": 1}}},
     ("optimizer.lr", "does not make a valid config")),
    ({"sweep.smapler": "grid"}, ("sweep.smapler", "did you mean 'sampler'")),
])
def test_bad_sweep_config_is_one_line(tmp_path: Path, changes: dict, needles: tuple) -> None:
    _fails(tmp_path, write_config(tmp_path, changes), *needles)


def test_unreachable_storage_is_one_line(tmp_path: Path) -> None:
    _fails(tmp_path, write_config(tmp_path), "--storage", "cannot connect",
           extra=("--storage", "postgresql://u:secret@127.0.0.1:1/db"))
    result = CliRunner().invoke(app, ["sweep", str(write_config(tmp_path)), "--runs-dir",
                                      str(tmp_path / "r"), "--storage",
                                      "postgresql://u:secret@127.0.0.1:1/db"])
    assert "secret" not in result.output


def test_config_without_sweep_section(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().split("sweep:")[0])
    _fails(tmp_path, path, "no sweep section")


def test_optuna_missing_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    _fails(tmp_path, write_config(tmp_path), "needs Optuna", "dlrun[sweep]")


def test_sweep_prints_ranked_trials_and_runs_lists_it(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["sweep", str(write_config(tmp_path)), "--runs-dir",
                                      str(runs), "--trials", "3"])
    assert result.exit_code == 0, result.output
    assert "starting a new sweep" in result.output and "best.yaml" in result.output
    assert "3/3 trials finished" in result.output
    listed = CliRunner().invoke(app, ["runs", "--dir", str(runs)])
    assert listed.exit_code == 0 and "tiny-sweep" in listed.output and "3/3" in listed.output
    shown = CliRunner().invoke(app, ["runs", "show", "tiny-sweep", "--dir", str(runs)])
    assert shown.exit_code == 0 and "trials, best first" in shown.output
