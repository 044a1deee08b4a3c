"""A character model trained the nanoGPT way (stride-1 windows at random offsets, AdamW on two
parameter groups, warm-up + cosine to min_lr), interrupted and resumed: same weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dlrun.config import load_config
from dlrun.runner import train as runner
from dlrun.runner.events import StepEnd

CORPUS = "to be or not to be, that is the question; whether tis nobler in the mind.\n" * 12


@pytest.mark.parametrize("mode", ["eager", "static"])
def test_random_windows_two_groups_cosine_resume(tmp_path: Path, mode: str) -> None:
    (tmp_path / "corpus.txt").write_text(CORPUS)
    config = tmp_path / "lm.yaml"
    config.write_text(yaml.safe_dump({
        "name": "lm", "mode": mode,
        "data": {"name": "text", "options": {"path": str(tmp_path / "corpus.txt"),
                                             "seq_len": 16, "stride": 1}},
        "model": {"type": "lstm", "embedding_dim": 8, "hidden_size": 16},
        "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.1, "decay": "matrices"},
        "schedule": {"name": "cosine", "warmup_steps": 3, "decay_steps": 20, "min_lr": 0.001,
                     "interval": "step"},
        "train": {"max_steps": 24, "batch_size": 8, "sampling": "random", "eval_every": 8,
                  "grad_clip_norm": 1.0},
        "logging": {"plots": False},
    }))
    cfg = load_config(config)
    full = runner.train(cfg, runs_dir=tmp_path / "full")
    assert full.status == "completed" and full.steps == 24
    assert full.final["val_loss"] < 3.0  # learnt something (ln 26 = 3.26 at the start)

    def interrupt(event: object) -> None:
        if isinstance(event, StepEnd) and event.step == 11:  # mid-epoch, mid-cosine
            raise KeyboardInterrupt

    part = runner.train(cfg, callbacks=[interrupt], runs_dir=tmp_path / "part")
    assert part.status == "interrupted" and part.steps == 11
    resumed = runner.resume(part.run_dir)
    assert resumed.steps == 24
    assert resumed.parameters_sha256 == full.parameters_sha256
    assert resumed.final["val_loss"] == full.final["val_loss"]
