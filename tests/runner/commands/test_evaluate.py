"""dlrun eval: a saved checkpoint evaluates to the numbers the run reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlrun.config import load_config
from dlrun.errors import CheckpointError
from dlrun.runner import train as runner
from dlrun.runner.commands.evaluate import evaluate


def test_eval_reproduces_the_run_metrics(tiny_config, tmp_path: Path) -> None:
    cfg = load_config(tiny_config(), ["model.dropout=0.0"])
    summary = runner.train(cfg, runs_dir=tmp_path)
    result = evaluate(summary.run_dir, split="val", tag="last")
    assert result["split"] == "val" and result["step"] == summary.steps
    assert result["metrics"]["val_loss"] == pytest.approx(summary.final["val_loss"], rel=1e-6)


def test_eval_of_a_missing_or_corrupt_checkpoint(tiny_config, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such"):
        evaluate(tmp_path / "nope")
    summary = runner.train(load_config(tiny_config(), ["train.epochs=1"]), runs_dir=tmp_path)
    weights = Path(summary.run_dir) / "checkpoints" / "best.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError):
        evaluate(summary.run_dir)


def test_eval_writes_eval_json_beside_the_checkpoint(tiny_config, tmp_path: Path) -> None:
    import json

    summary = runner.train(load_config(tiny_config(), ["train.epochs=1"]), runs_dir=tmp_path)
    result = evaluate(summary.run_dir, split="val", tag="last")
    written = Path(summary.run_dir) / "checkpoints" / "eval.json"
    assert result["written_to"] == str(written)
    saved = json.loads(written.read_text())
    assert saved["split"] == "val" and saved["metrics"] == result["metrics"]
    assert "confusion" in saved and len(saved["confusion"]) == 3
