"""Every bad input of DESIGN.md section 6: one clear line, a non-zero exit, no traceback, and
existing runs and checkpoints untouched."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dlrun.backend import cuda_available
from dlrun.cli import app
from tests.cli_helpers import assert_cli_fails as _fails


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def trained(tiny_config, tmp_path: Path) -> Path:
    result = CliRunner().invoke(app, ["train", str(tiny_config()), "--set", "train.epochs=1",
                                      "--runs-dir", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    return next((tmp_path / "runs").iterdir())


def test_malformed_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: [unclosed\n")
    _fails(["train", str(bad)], "bad.yaml", "line")


def test_unknown_key_and_wrong_type_all_at_once(tiny_config) -> None:
    path = tiny_config(train__epochs="three", optimizer__lrr=0.1)
    out = _fails(["train", str(path)], "train.epochs", "optimizer.lrr", "did you mean 'lr'")
    assert out.count(path.name) >= 2


def test_impossible_value(tiny_config) -> None:
    _fails(["train", str(tiny_config(), ), "--set", "train.batch_size=0"], "train.batch_size")


def test_every_bad_override_at_once_and_nothing_created(tiny_config, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    out = _fails(["train", str(tiny_config(optimizer__lr=-1)), "--runs-dir", str(runs),
                  "--set", "optimizer.lrr=0.1", "--set", "model.hiden=3"],
                 "--set optimizer.lrr=0.1: optimizer.lrr: unknown key; did you mean 'lr'?",
                 "--set model.hiden=3: model.hiden: unknown key; did you mean 'hidden'?",
                 "optimizer.lr: expected a number > 0, got -1")
    assert out.count("\n") == 3 and not runs.exists()


def test_bad_model_section(tiny_config) -> None:
    _fails(["train", str(tiny_config(model={"type": "mlp", "hiden": [3]}))], "model.hiden",
           "hidden")


def test_missing_dataset_without_network(tmp_path: Path, monkeypatch) -> None:
    from dlrun.data import download

    monkeypatch.setenv("DLRUN_DATA_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setitem(download.SOURCES, "mnist", download.SOURCES["mnist"].__class__(
        "mnist", ("http://127.0.0.1:9/",), download.SOURCES["mnist"].files))
    monkeypatch.setattr(download, "BACKOFF", 0.0)
    cfg = tmp_path / "mnist.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"name": "mnist"}, "model": {"type": "linear"}}))
    _fails(["train", str(cfg), "--runs-dir", str(tmp_path / "runs")],
           "train-images-idx3-ubyte.gz")


def test_corrupt_dataset_file(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "mnist").mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        with gzip.open(root / "mnist" / name, "wb") as f:
            f.write(b"\x00\x00\x08\x03 not really idx")
    cfg = tmp_path / "mnist.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"name": "mnist", "root": str(root)},
                                   "model": {"type": "linear"}}))
    _fails(["train", str(cfg), "--runs-dir", str(tmp_path / "runs")], "mnist")


def test_corrupt_checkpoint_leaves_the_run_untouched(trained: Path) -> None:
    weights = trained / "checkpoints" / "last.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    before = _snapshot(trained)
    _fails(["eval", str(trained), "--tag", "last"], "last")
    _fails(["train", "unused.yaml", "--resume", str(trained)], "last")
    assert _snapshot(trained) == before


def test_checkpoint_that_does_not_fit_the_model(trained: Path) -> None:
    _fails(["eval", str(trained), "--set", "model.hidden=[7]"], "1.weight", "(7, 4)", "(16, 4)")


def test_missing_gpu(tiny_config, tmp_path: Path) -> None:
    if cuda_available():
        pytest.skip("a GPU is present")
    _fails(["train", str(tiny_config()), "--device", "cuda", "--runs-dir", str(tmp_path / "r")],
           "CuPy")
    assert not (tmp_path / "r").exists()


def test_nan_loss_names_the_step(tiny_config, tmp_path: Path) -> None:
    _fails(["train", str(tiny_config()), "--set", "optimizer.lr=1e30", "--set",
            "optimizer.name=sgd", "--runs-dir", str(tmp_path / "r")], "at step")


def test_not_a_run_directory(tmp_path: Path) -> None:
    _fails(["eval", str(tmp_path)], "not a run folder")
    _fails(["train", "x.yaml", "--resume", str(tmp_path)], "not a run folder")
