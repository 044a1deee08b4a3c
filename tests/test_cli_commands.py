"""Each command is a typed signature, one runner call and an error boundary: with the runner
function patched (fastapi-cli's tests/test_cli.py style), the config and the options it receives
are the ones the command line gave; what it returns is drawn by the renderer."""

from __future__ import annotations

import sys
from pathlib import Path
from unittest.mock import patch

import pytest
from typer.testing import CliRunner

from dlrun.cli import app
from dlrun.config import ExperimentConfig
from dlrun.distributed.launch import JobPlace, worker_args
from dlrun.errors import DistributedError
from dlrun.runner.records import RunSummary

runner = CliRunner()


def _summary(status: str = "completed") -> RunSummary:
    return RunSummary(name="tiny", status=status, mode="eager", device="cpu", steps=3,
                      final={"val_loss": 0.5}, run_dir="runs/x", wall_seconds=0.1)


def test_train_passes_the_config_with_every_override(tiny_config, tmp_path: Path) -> None:
    with patch("dlrun.runner.train.train", return_value=_summary()) as train:
        result = runner.invoke(app, ["train", str(tiny_config()), "--set", "optimizer.lr=0.1",
                                     "--set", "train.epochs=2", "--mode", "eager", "--device",
                                     "cpu", "--seed", "3", "--runs-dir", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    cfg = train.call_args.args[0]
    assert isinstance(cfg, ExperimentConfig)
    assert (cfg.optimizer.lr, cfg.train.epochs, cfg.mode, cfg.device, cfg.seed) == \
        (0.1, 2, "eager", "cpu", 3)
    assert train.call_args.kwargs["runs_dir"] == tmp_path
    assert train.call_args.kwargs["world"] is None
    assert "tiny — completed" in result.output and "val_loss" in result.output


def test_train_resume_reads_no_config_and_an_interrupted_run_exits_130(tmp_path: Path) -> None:
    with patch("dlrun.runner.train.resume", return_value=_summary("interrupted")) as resume:
        result = runner.invoke(app, ["train", "--resume", str(tmp_path), "-q"])
    assert result.exit_code == 130, result.output
    assert resume.call_args.args[0] == tmp_path


def test_train_without_a_config_is_one_error_line() -> None:
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 1 and "give a CONFIG file" in result.output


def test_eval_passes_split_tag_and_overrides(tmp_path: Path) -> None:
    answer = {"split": "val", "checkpoint": "best", "step": 4, "metrics": {"val_loss": 0.25}}
    with patch("dlrun.runner.commands.evaluate.evaluate", return_value=answer) as evaluate:
        result = runner.invoke(app, ["eval", str(tmp_path), "--split", "val", "--tag", "last",
                                     "--data.root", "/data", "--mode", "static", "--device",
                                     "cpu"])
    assert result.exit_code == 0, result.output
    assert evaluate.call_args.args[0] == tmp_path
    assert evaluate.call_args.kwargs == {"split": "val", "tag": "last", "overrides": [
        "mode=static", "device=cpu", "data.root=/data"]}
    assert "evaluation on the val split" in result.output and "0.25" in result.output


def test_export_passes_its_options_and_the_renderer_says_what_was_written(tmp_path: Path) -> None:
    answer = {"checkpoint": "best", "path": "m.onnx", "format": "onnx", "opset": 18,
              "onnx_nodes": 7, "verified_on": "val", "batch_sizes": [1, 4],
              "max_abs_error": 1e-7, "max_rel_error": 2e-6}
    with patch("dlrun.runner.commands.export_run.export", return_value=answer) as export:
        result = runner.invoke(app, ["export", str(tmp_path), "--out", "m.onnx", "--opset", "18",
                                     "--tag", "last"])
    assert result.exit_code == 0, result.output
    assert export.call_args.kwargs == {"fmt": "onnx", "out": Path("m.onnx"), "opset": 18,
                                       "tag": "last"}
    assert "exported best to m.onnx (onnx, opset 18, 7 nodes" in result.output
    assert "batches of 1 and 4" in result.output


def _report(agree: bool) -> dict:
    return {"agree": agree, "max_rel_loss_diff": 0.0 if agree else 1.0, "tolerance": 1e-5}


@pytest.mark.parametrize("agree, code", [(True, 0), (False, 2)])
def test_compare_passes_steps_and_exits_2_on_disagreement(tiny_config, tmp_path: Path,
                                                          agree: bool, code: int) -> None:
    with patch("dlrun.runner.commands.compare.compare", return_value=_report(agree)) as compare, \
            patch("dlrun.runner.commands.compare.write_report", return_value=tmp_path), \
            patch("dlrun.render.print_compare"):
        result = runner.invoke(app, ["compare", str(tiny_config()), "--steps", "7", "--timed",
                                     "9", "--warmup", "2", "--seed", "5", "--device", "cpu"])
    assert result.exit_code == code, result.output
    cfg = compare.call_args.args[0]
    assert cfg.seed == 5 and cfg.device == "cpu"
    kwargs = compare.call_args.kwargs
    assert (kwargs["steps"], kwargs["timed"], kwargs["warmup"], kwargs["cuda_graphs"]) == \
        (7, 9, 2, False)
    assert ("disagree" in result.output) is not agree


def test_graph_passes_the_passes_flag_and_checks_the_format(tiny_config) -> None:
    report = {"dot": "digraph {}"}
    with patch("dlrun.runner.commands.graph_report.graph_report", return_value=report) as graph:
        result = runner.invoke(app, ["graph", str(tiny_config()), "--no-passes", "--format",
                                     "dot", "--set", "model.hidden=[4]"])
    assert result.exit_code == 0, result.output
    cfg, passes, world = graph.call_args.args
    assert cfg.model.hidden == [4] and passes is False and world is None
    assert "digraph {}" in result.output
    bad = runner.invoke(app, ["graph", str(tiny_config()), "--format", "svg"])
    assert bad.exit_code == 1 and "--format: expected text or dot" in bad.output


def test_gradcheck_passes_its_options(tiny_config) -> None:
    report = {"passed": False, "message": "1 parameter failed", "parameters": []}
    with patch("dlrun.runner.commands.gradcheck.gradcheck", return_value=report) as check, \
            patch("dlrun.render.print_gradcheck"):
        result = runner.invoke(app, ["gradcheck", str(tiny_config()), "--batch", "2", "--eps",
                                     "1e-5", "--max-per-param", "3"])
    assert result.exit_code == 1 and "1 parameter failed" in result.output
    assert check.call_args.kwargs == {"batch": 2, "eps": 1e-5, "max_per_param": 3}


def test_sweep_passes_its_options(tiny_config, tmp_path: Path) -> None:
    with patch("dlrun.runner.sweep.driver.sweep", return_value={}) as sweep, \
            patch("dlrun.render.print_sweep_summary") as shown:
        result = runner.invoke(app, ["sweep", str(tiny_config()), "--trials", "4", "--workers",
                                     "2", "--storage", "sqlite:///s.db", "--name", "s", "--new",
                                     "--runs-dir", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    assert sweep.call_args.kwargs | {"callbacks": None} == {
        "callbacks": None, "trials": 4, "workers": 2, "storage": "sqlite:///s.db",
        "runs_dir": tmp_path, "name": "s", "new": True}
    shown.assert_called_once()


def test_runs_and_runs_show_use_the_folder_given(tmp_path: Path) -> None:
    with patch("dlrun.runner.commands.runs.list_runs_table", return_value=[]) as listed:
        assert runner.invoke(app, ["runs", "--dir", str(tmp_path)]).exit_code == 0
    assert listed.call_args.args == (tmp_path,)
    with patch("dlrun.runner.commands.runs.show_run") as show, patch("dlrun.render.print_run"):
        assert runner.invoke(app, ["runs", "--dir", str(tmp_path), "show", "abc"]).exit_code == 0
    assert show.call_args.args == ("abc", tmp_path)


# ----- --nproc: the decision is distributed.launch's; the CLI exits with the job's status -----


def test_nproc_launches_the_same_command_without_nproc(tiny_config, monkeypatch) -> None:
    path = str(tiny_config())
    argv = ["train", path, "--nproc", "2", "-q"]
    monkeypatch.setattr(sys, "argv", ["dlrun", *argv])
    with patch("dlrun.distributed.launch.launch", return_value=0) as launch, \
            patch("dlrun.distributed.world.launched_size", return_value=1), \
            patch("dlrun.runner.train.train") as train:
        result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    assert launch.call_args.args == (["train", path, "-q"], 2)
    train.assert_not_called()


def test_nproc_checks_the_batch_before_launching(tiny_config, monkeypatch) -> None:
    argv = ["train", str(tiny_config()), "--set", "train.batch_size=15", "--nproc", "2"]
    monkeypatch.setattr(sys, "argv", ["dlrun", *argv])
    with patch("dlrun.distributed.launch.launch") as launch, \
            patch("dlrun.distributed.world.launched_size", return_value=1):
        result = runner.invoke(app, argv)
    assert result.exit_code == 1 and "batch_size" in result.output
    launch.assert_not_called()


def test_the_launch_decision() -> None:
    from dlrun.distributed.launch import join_or_launch

    assert worker_args(["train", "c.yaml", "--nproc", "4", "--nproc=2", "-q"]) == \
        ["train", "c.yaml", "-q"]
    checked: list[int] = []
    with patch("dlrun.distributed.world.launched_size", return_value=1), \
            patch("dlrun.distributed.world.join", return_value=None), \
            patch("dlrun.distributed.launch.launch", return_value=130) as launch:
        assert join_or_launch(None, ["train"], checked.append) == JobPlace()
        assert join_or_launch(1, ["train"], checked.append) == JobPlace()
        assert join_or_launch(3, ["x", "--nproc", "3"], checked.append) == \
            JobPlace(exit_status=130)
    assert checked == [3] and launch.call_args.args == (["x"], 3)
    with patch("dlrun.distributed.world.launched_size", return_value=2), \
            pytest.raises(DistributedError, match="leave --nproc out under mpiexec"):
        join_or_launch(4, ["train"], checked.append)
