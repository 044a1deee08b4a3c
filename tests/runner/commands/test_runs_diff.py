"""`dlrun runs diff` on real run directories: new runs, a run written by an older dlrun
(tests/runner/fixtures/), a run killed before its summary, a sweep's top trials."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlrun.cli import app
from dlrun.config import load_config, validate_config
from dlrun.errors import CheckpointError
from dlrun.runner.commands.runs_diff import diff_runs, labels_of
from dlrun.runner.io.metrics_log import read_metrics, read_run_summary
from dlrun.runner.train import train
from tests.cli_helpers import assert_cli_fails
from tests.conftest import TINY

OLD_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "20261206-034821-oldrun"
PNG = b"\x89PNG\r\n\x1a\n"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny runs that differ in lr and hidden size, and a copy of the old run (trained once
    per module; each test gets its own copy)."""
    root = tmp_path_factory.mktemp("trained") / "runs"
    for name, lr, hidden in (("slow", 0.001, [16]), ("fast", 0.02, [8])):
        cfg = {**TINY, "name": name, "optimizer": {"name": "adam", "lr": lr},
               "model": {"type": "mlp", "hidden": hidden},
               "train": {"epochs": 2, "batch_size": 16}}
        train(validate_config(cfg), runs_dir=root)
    shutil.copytree(OLD_RUN, root / OLD_RUN.name)
    return root


@pytest.fixture
def runs(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "runs"))


def test_diff_of_two_runs(runs: Path) -> None:
    before = _snapshot(runs)
    diff = diff_runs(["slow", "fast"], runs)
    assert [r["label"] for r in diff["runs"]] == ["slow", "fast"]
    config = {c["key"]: c["values"] for c in diff["config"]}
    assert config["optimizer.lr"] == [0.001, 0.02] and config["model.hidden"] == [[16], [8]]
    assert config["name"] == ["slow", "fast"] and "seed" not in config  # the same: left out
    summaries = [read_run_summary(next(runs.glob(f"*-{n}"))) for n in ("slow", "fast")]
    metrics = {(m["kind"], m["metric"]): m["values"] for m in diff["metrics"]}
    assert metrics["final", "val_accuracy"] == [s.final["val_accuracy"] for s in summaries]
    bests = [s.best.value for s in summaries]
    assert metrics["best", "val_loss"] == bests
    assert diff["best"]["index"] == bests.index(min(bests))
    assert diff["best"]["metric"] == "best val_loss" and diff["best"]["goal"] == "lowest"
    plot = Path(diff["plot"])
    assert plot.parent == runs and plot.name.startswith("diff-") and plot.suffix == ".png"
    assert plot.read_bytes()[:8] == PNG
    plot.unlink()
    assert _snapshot(runs) == before  # the runs are only read
    json.dumps(diff)


def test_an_old_run_and_a_run_without_summary(runs: Path, tmp_path: Path) -> None:
    crashed = runs / "20991231-235959-crashed"
    shutil.copytree(next(runs.glob("*-fast")), crashed)
    (crashed / "summary.json").unlink()
    diff = diff_runs([OLD_RUN.name, "slow", str(crashed)], runs, out=tmp_path / "d.png")
    old, _, killed = diff["runs"]
    assert old["status"] == "interrupted" and old["steps"] == 9 and old["task"] == "classification"
    assert killed["status"] == "running/crashed" and killed["steps"] == 26
    config = {c["key"]: c["values"] for c in diff["config"]}
    assert config["data.options.n_features"] == [2, 4, 4]
    metrics = {(m["kind"], m["metric"]): m["values"] for m in diff["metrics"]}
    last_val = [r for r in read_metrics(crashed) if "val_loss" in r][-1]["val_loss"]
    assert metrics["final", "val_loss"][0] == pytest.approx(0.3556841313838959)
    assert metrics["final", "val_loss"][2] == last_val  # the last record stands in
    assert metrics["best", "val_loss"][2] is None
    assert Path(diff["plot"]) == tmp_path / "d.png" and (tmp_path / "d.png").is_file()


def test_refusals(runs: Path, tiny_config) -> None:
    regression = tiny_config(name="reg", data={"name": "linear", "options": {"n": 200}},
                             model={"type": "linear"}, train={"epochs": 1, "batch_size": 32})
    train(load_config(regression), runs_dir=runs)
    before = _snapshot(runs)
    with pytest.raises(CheckpointError, match="slow is a classification run but reg is a "
                                              "regression run"):
        diff_runs(["slow", "reg"], runs)
    with pytest.raises(CheckpointError, match="two runs or more"):
        diff_runs(["slow"], runs)
    inside = next(runs.glob("*-fast")) / "diff.png"
    with pytest.raises(CheckpointError, match="inside the compared run"):
        diff_runs(["slow", "fast"], runs, out=inside)
    with pytest.raises(CheckpointError, match="nope"):
        diff_runs(["slow", "nope"], runs)
    assert _snapshot(runs) == before


def test_labels_of_repeated_names() -> None:
    dirs = [Path("20260101-000000-a"), Path("20260101-000001-a"), Path("20260101-000002-b")]
    assert labels_of(dirs) == ["a#1", "a#2", "b"]


def test_cli_diff_table_json_and_one_line_errors(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "curves.png"
    result = CliRunner().invoke(app, ["runs", "--dir", str(runs), "diff", "slow", "fast",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "optimizer.lr" in result.output and "final val_accuracy" in result.output
    assert "* best:" in result.output and f"curves: {out}" in result.output.replace("\n", "")
    result = CliRunner().invoke(app, ["runs", "diff", "slow", "fast", "--dir", str(runs),
                                      "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["plot"] == str(out) and len(data["runs"]) == 2
    assert_cli_fails(["runs", "diff", "slow", "--dir", str(runs)], "two runs or more")


def test_diff_of_a_sweeps_top_trials(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    from dlrun.runner.sweep.driver import sweep
    from tests.runner.sweep.sweep_helpers import write_config

    config = write_config(tmp_path, {"sweep.trials": 3, "train.epochs": 1})
    summary = sweep(load_config(config), str(config), runs_dir=tmp_path / "runs")
    folder = Path(summary["folder"])
    diff = diff_runs([folder], top=2)
    assert [r["label"] for r in diff["runs"]][0] == f"trial {summary['best']['number']}"
    assert len(diff["runs"]) == 2 and diff["best"]["index"] == 0
    assert diff["best"]["metric"] == "sweep val_loss" and diff["best"]["goal"] == "lowest"
    metrics = {(m["kind"], m["metric"]): m["values"] for m in diff["metrics"]}
    trial_values = {metrics["final", "val_loss"][0], metrics["best", "val_loss"][0]}
    assert summary["best"]["value"] in trial_values  # the sweep's best trial comes first
    assert {c["key"] for c in diff["config"]} & {"optimizer.lr", "model.hidden"}
    assert Path(diff["plot"]).parent == folder.parent  # beside the sweep, not inside it
