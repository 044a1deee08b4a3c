"""Checkpoint contents: model, optimizer, schedule, loader position and RNG state, without pickle.

Arrays (weights, optimizer buffers) go to the safetensors file (see checkpoint.pack_state);
everything else is JSON metadata.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlrun.engine import rng
from dlrun.errors import CheckpointError
from dlrun.runner.experiment.record import Experiment
from dlrun.runner.io.checkpoint import pack_state, unpack_state
from dlrun.runner.records import Progress


def capture(exp: Experiment, progress: Progress) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, meta) describing the run at this point; `progress` is the trainer's counters."""
    arrays, opt_json = pack_state(exp.model.state_dict(), exp.optimizer.state_dict())
    meta = {
        "progress": progress.to_json(),
        "optimizer": opt_json,
        "scheduler": exp.scheduler.state_dict() if exp.scheduler is not None else None,
        "loader": exp.train_loader.state_dict(),
        "rng": rng.get_state("cpu") if exp.device == "cpu" else None,
        "amp": exp.amp.state_dict() if exp.amp is not None else {},  # fp16 loss scale
    }
    return arrays, meta


def load_model(exp: Experiment, arrays: dict[str, np.ndarray], source: str) -> None:
    """Copy a checkpoint's weights into the model; a mismatch names the key and shapes."""
    model_sd, _ = unpack_state(arrays)
    try:
        exp.model.load_state_dict(model_sd, strict=True)
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{source}: the checkpoint does not fit the model: {e}") from None


def restore(exp: Experiment, arrays: dict[str, np.ndarray], meta: dict[str, Any],
            source: str) -> Progress:
    """Load a checkpoint into the experiment; returns the trainer's saved counters."""
    load_model(exp, arrays, source)
    _, opt_state = unpack_state(arrays, meta.get("optimizer") or {})
    exp.optimizer.load_state_dict(opt_state)
    if exp.scheduler is not None and meta.get("scheduler") is not None:
        exp.scheduler.load_state_dict(meta["scheduler"])
    exp.train_loader.load_state_dict(meta["loader"])
    if meta.get("rng") is not None:
        rng.set_state(meta["rng"], "cpu")
    if exp.amp is not None:
        exp.amp.load_state_dict(meta.get("amp") or {})
    return Progress.from_json(meta["progress"])
