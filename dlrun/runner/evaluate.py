"""Evaluate a saved checkpoint on a data split: `evaluate(run_dir_or_checkpoint, split)`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlrun.config import load_config
from dlrun.errors import CheckpointError, ConfigError
from dlrun.runner import checkpoint as ckpt
from dlrun.runner.experiment import build_experiment, evaluate_split
from dlrun.runner.state import load_model


def _run_dir_of(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise CheckpointError(f"{path}: no config.yaml in it or above it (not a dlrun run)")


def evaluate(path: Path | str, split: str | None = None, tag: str = "best") -> dict[str, Any]:
    """Load the run's config and checkpoint (`tag`: best, falling back to last) and measure
    on `split` (default: test when the dataset has one, else val)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such run directory or checkpoint")
    run_dir = _run_dir_of(path if path.is_dir() else path.parent)
    cfg = load_config(run_dir / "config.yaml")
    target = path
    if path.is_dir():
        ckdir = run_dir / "checkpoints"
        target = ckdir / f"{tag}.json" if (ckdir / f"{tag}.json").is_file() else ckdir
    arrays, meta = ckpt.load_checkpoint(target)
    exp = build_experiment(cfg)
    load_model(exp, arrays, str(target))
    if split is None:
        split = "test" if exp.bundle.test is not None else "val"
    if split not in ("train", "val", "test") or getattr(exp.bundle, split, None) is None:
        available = ", ".join(exp.bundle.splits())
        raise ConfigError(f"--split {split}: the dataset has no such split (has {available})")
    metrics = evaluate_split(exp, split)
    return {"run_dir": str(run_dir), "checkpoint": str(target), "split": split,
            "step": meta.get("progress", {}).get("step"), "metrics": metrics}
