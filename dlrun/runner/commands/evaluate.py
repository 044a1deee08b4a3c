"""Evaluate a saved checkpoint on a data split, and sample text from a language model.

`evaluate(run_dir_or_checkpoint, split)` rebuilds the model from the run's saved config, loads the
weights, measures the task's metrics and writes them to eval.json beside the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dlrun.config import load_config
from dlrun.data.tokenize import Tokenizer
from dlrun.errors import ConfigError, DataError
from dlrun.models.generation import check_sampling
from dlrun.runner.evaluation import evaluate_split
from dlrun.runner.experiment import Experiment, build_experiment
from dlrun.runner.io import checkpoint as ckpt
from dlrun.runner.io.rundir import atomic_write_text, find_run_config, run_tokenizer
from dlrun.runner.io.state import load_model


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


def _prompt_ids(prompt: str, tokenizer: Tokenizer) -> list[int]:
    """The prompt's token ids; a DataError (naming the characters a character vocabulary
    lacks) says it is about --prompt."""
    try:
        return [int(i) for i in tokenizer.encode(prompt)]
    except DataError as e:
        raise DataError(f"--prompt: {e} ({tokenizer.vocab_size} tokens)") from None


def sample_text(path: Path | str, prompt: str | None = None, length: int = 200,
                temperature: float = 1.0, seed: int = 0, tag: str = "best",
                top_k: int | None = None, overrides: list[str] | None = None,
                method: str = "auto") -> dict[str, Any]:
    """Generate `length` tokens (characters for a character model) from a language model after
    `prompt` (default: a newline), encoded and decoded with the run's tokenizer.

    The run's mode decides eager or static (`overrides` may change it: ["mode=static"]); a GPT
    decodes with a KV cache, a recurrent model carries its state (see models.generation);
    method='recompute' re-runs the model on the last seq_len (GPT: block_size) tokens for
    every one, eagerly. Returns the text (prompt included) and the speed of the generation loop
    (tokens per second, after the compile).
    """
    from dlrun.models.generation import generate

    check_sampling(temperature, top_k, prefix="--")
    if length < 0:
        raise ConfigError(f"--sample must be >= 0, got {length}")
    exp, _, _ = load_run(path, tag, overrides)
    tokenizer = run_tokenizer(find_run_config(Path(path))[0], exp.bundle.meta)
    if exp.task != "language_model" or tokenizer is None:
        raise ConfigError(f"{path}: sampling needs a language model run with a tokenizer")
    ids = _prompt_ids(prompt or tokenizer.default_prompt(), tokenizer)
    window = None  # a GPT's recompute crops to its block_size
    if method == "recompute" and not hasattr(exp.model, "block_size"):
        window = int(exp.bundle.meta.get("seq_len", 64))  # what the recurrent model trained on
    out = generate(exp.model, ids, length, temperature=temperature, top_k=top_k, seed=seed,
                   static=exp.cfg.mode == "static", method=method, window=window)
    return {"text": tokenizer.decode(out.ids), "tokens": out.new_tokens,
            "seconds": out.seconds, "tokens_per_second": out.tokens_per_second,
            "method": out.method, "mode": "static" if out.static else "eager", "traces": out.traces,
            "temperature": temperature, "top_k": top_k, "seed": seed}
