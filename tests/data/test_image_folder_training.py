"""image_folder end to end: a CNN learns a real image folder; eval uses the saved statistics;
prefetching and augmentation keep runs exact (resume == uninterrupted); bad folders through the
real CLI end in one line, exit 1, nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from dlrun.cli import app
from dlrun.config import load_config
from dlrun.runner import train as runner
from dlrun.runner.commands.evaluate import evaluate
from dlrun.runner.events import StepEnd
from tests.cli_helpers import assert_cli_fails
from tests.conftest import BAD_FOLDERS


def _config(tmp_path: Path, folder: Path, **train) -> Path:
    cfg = {
        "name": "folder", "seed": 0, "mode": "static", "device": "cpu",
        "data": {"name": "image_folder", "val_fraction": 0.25,
                 "options": {"path": str(folder), "augment": {"flip": True, "crop_padding": 2}}},
        "model": {"type": "cnn", "channels": [6], "kernel_size": 3, "hidden": [16]},
        "optimizer": {"name": "adam", "lr": 0.01},
        "train": {"epochs": 4, "batch_size": 8, **train},
        "logging": {"plots": False, "log_every": 5},
    }
    path = tmp_path / "folder.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_cnn_learns_an_image_folder_and_eval_uses_the_saved_statistics(
        image_folder_factory, tmp_path: Path) -> None:
    folder = image_folder_factory(per_class=16)
    cfg = load_config(_config(tmp_path, folder, epochs=8))
    events: list = []
    summary = runner.train(cfg, callbacks=[events.append], runs_dir=tmp_path / "runs")
    losses = [e.loss for e in events if isinstance(e, StepEnd)]
    assert sum(losses[-6:]) < 0.3 * sum(losses[:6])
    assert summary.final["val_accuracy"] == 1.0
    run = Path(summary.run_dir)
    saved = load_config(run / "config.yaml").data.options
    assert saved["size"] == [12, 12] and saved["channels"] == 1
    assert set(saved["normalize"]) == {"mean", "std"}
    # eval rebuilds the data from the saved config: the same statistics, the same metrics,
    # even after images are added (which would move freshly fitted statistics)
    for i in range(8):
        Image.fromarray(np.full((12, 12), 255, np.uint8), "L").save(folder / "a" / f"w{i}.png")
    result = evaluate(run, split="train", tag="last", write=False)
    assert result["metrics"]["train_accuracy"] > 0.5


@pytest.mark.parametrize("prefetch", [0, 3])
def test_resumed_mid_epoch_with_augmentation_equals_uninterrupted(
        image_folder_factory, tmp_path: Path, prefetch: int) -> None:
    folder = image_folder_factory(per_class=10)
    path = _config(tmp_path, folder, epochs=2, batch_size=4)  # 15 images: 3 steps per epoch
    cfg = load_config(path, [f"data.prefetch={prefetch}", "logging.log_every=1"])
    reference = load_config(path, ["data.prefetch=0"])
    full = runner.train(reference, runs_dir=tmp_path / "full")

    def interrupt(event) -> None:
        if isinstance(event, StepEnd) and event.step == 4:  # mid-epoch
            raise KeyboardInterrupt

    part = runner.train(cfg, callbacks=[interrupt], runs_dir=tmp_path / "part")
    assert part.status == "interrupted" and part.steps == 4
    resumed = runner.resume(part.run_dir)
    assert resumed.steps == full.steps
    assert resumed.parameters_sha256 == full.parameters_sha256


@pytest.mark.parametrize("setup", ["empty", "empty_class", "truncated"])
def test_bad_folders_through_the_cli(bad_image_folder, tmp_path: Path, setup: str) -> None:
    root = bad_image_folder(setup)
    runs = tmp_path / "runs"
    assert_cli_fails(["train", str(_config(tmp_path, root)), "--runs-dir", str(runs)],
                     BAD_FOLDERS[setup])
    assert not runs.exists() and not (root / ".dlrun-cache").exists()


def test_mixed_modes_are_said_once_through_the_cli(image_folder_factory, tmp_path: Path) -> None:
    root = image_folder_factory(per_class=4, formats=("png",))
    Image.fromarray(np.zeros((12, 12, 3), np.uint8), "RGB").save(root / "a" / "rgb.png")
    args = ["train", str(_config(tmp_path, root, epochs=1)), "--runs-dir", str(tmp_path / "r"),
            "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.count("converted 1 of 9 images to L (1 RGB)") == 1, result.output


def test_the_loaders_read_the_memory_map_without_copying_it(image_folder_factory,
                                                            tmp_path: Path) -> None:
    from dlrun.runner.experiment import build_experiment

    exp = build_experiment(load_config(_config(tmp_path, image_folder_factory(per_class=4))))
    assert isinstance(exp.bundle.train.x, np.memmap)
    assert exp.train_loader.x is exp.bundle.train.x  # the map itself, not an in-memory copy
    assert exp.loader("val").x is exp.bundle.train.x
    xb, _ = next(iter(exp.train_loader))
    assert xb.dtype == np.float32 and xb.shape == (6, 1, 12, 12)  # 6 training images
