"""Evaluate a saved checkpoint on a data split, and sample text from a language model.

`evaluate(run_dir_or_checkpoint, split)` rebuilds the model from the run's saved config, loads the
weights, measures the task's metrics and writes them to eval.json beside the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

import dlrun
from dlrun import functional as F
from dlrun.config import load_config
from dlrun.errors import ConfigError
from dlrun.runner import checkpoint as ckpt
from dlrun.runner.experiment import Experiment, build_experiment, evaluate_split
from dlrun.runner.rundir import atomic_write_text, find_run_config
from dlrun.runner.state import load_model


def load_run(path: Path | str, tag: str = "best", overrides: list[str] | None = None
             ) -> tuple[Experiment, Path, dict[str, Any]]:
    """(experiment with the checkpoint's weights, checkpoint path, checkpoint meta)."""
    path = Path(path)
    run_dir, config = find_run_config(path)
    cfg = load_config(config, overrides or [])
    target = path
    if path.is_dir():
        ckdir = run_dir / "checkpoints"
        target = ckdir / f"{tag}.json" if (ckdir / f"{tag}.json").is_file() else ckdir
    arrays, meta = ckpt.load_checkpoint(target)
    exp = build_experiment(cfg)
    load_model(exp, arrays, str(target))
    return exp, Path(ckpt.resolve_checkpoint(target)), meta


def evaluate(path: Path | str, split: str | None = None, tag: str = "best",
             overrides: list[str] | None = None, write: bool = True) -> dict[str, Any]:
    """Metrics of a checkpoint on `split` (default: test when the dataset has one, else val);
    `overrides` are config overrides (mode, device, data.root, ...)."""
    exp, target, meta = load_run(path, tag, overrides)
    if split is None:
        split = "test" if exp.bundle.test is not None else "val"
    if split not in ("train", "val", "test") or getattr(exp.bundle, split, None) is None:
        available = ", ".join(exp.bundle.splits())
        raise ConfigError(f"--split {split}: the dataset has no such split (has {available})")
    keep: dict[str, Any] = {}
    metrics = evaluate_split(exp, split, keep)
    result: dict[str, Any] = {
        "checkpoint": str(target), "split": split, "step": meta.get("progress", {}).get("step"),
        "mode": exp.cfg.mode, "device": exp.device, "metrics": metrics,
    }
    if "confusion" in keep:
        result["confusion"] = keep["confusion"].tolist()
        result["classes"] = [str(c) for c in exp.bundle.meta.get(
            "classes", range(len(keep["confusion"])))]
    if write:
        out = target.with_name("eval.json")  # the latest evaluation (checkpoint, split inside)
        atomic_write_text(out, json.dumps(result, indent=2))
        result["written_to"] = str(out)
    return result


def sample_text(path: Path | str, prompt: str = "\n", length: int = 200,
                temperature: float = 1.0, seed: int = 0, tag: str = "best") -> str:
    """Generate `length` characters from a character language model, starting from `prompt`."""
    from dlrun.data.text import decode, encode

    exp, _, _ = load_run(path, tag, ["mode=eager"])
    vocab = exp.bundle.meta.get("vocab")
    if exp.task != "language_model" or not vocab:
        raise ConfigError(f"{path}: sampling needs a character language model run")
    if temperature <= 0:
        raise ConfigError(f"--temperature must be > 0, got {temperature}")
    window = int(exp.bundle.meta.get("seq_len", 64))
    ids = list(encode(prompt or "\n", vocab))
    rng = np.random.default_rng(seed)
    exp.model.eval()
    with dlrun.no_grad():
        for _ in range(length):
            x = dlrun.tensor(np.array([ids[-window:]], dtype=np.int64), device=exp.device)
            logits = exp.model(x)[0, -1] * (1.0 / temperature)
            probs = F.softmax(logits.to_dtype(np.float64), 0).numpy()
            ids.append(int(rng.choice(len(probs), p=probs / probs.sum())))
    return decode(ids, vocab)
