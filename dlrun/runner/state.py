"""Checkpoint contents: model, optimizer, schedule, loader position and RNG state, without pickle.

Arrays (weights, optimizer buffers) go to the safetensors file under `model.<name>` and
`optim.<param index>.<name>`; everything else is JSON metadata.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlrun.engine import rng
from dlrun.errors import CheckpointError
from dlrun.runner.experiment import Experiment


def capture(exp: Experiment, progress: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, meta) describing the run at this point; `progress` is the trainer's counters."""
    arrays = {f"model.{k}": np.array(v.numpy(), copy=True)
              for k, v in exp.model.state_dict().items()}
    opt = exp.optimizer.state_dict()
    for index, st in opt["state"].items():
        for name, value in st.items():
            arrays[f"optim.{index}.{name}"] = np.asarray(value)
    meta = {
        "progress": progress,
        "optimizer": {"param_groups": opt["param_groups"],
                      "state_keys": {str(i): sorted(st) for i, st in opt["state"].items()}},
        "scheduler": exp.scheduler.state_dict() if exp.scheduler is not None else None,
        "loader": exp.train_loader.state_dict(),
        "rng": rng.get_state("cpu") if exp.device == "cpu" else None,
    }
    return arrays, meta


def restore(exp: Experiment, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> dict:
    """Load a checkpoint into the experiment; returns the trainer's saved counters."""
    model_sd = {k[len("model."):]: v for k, v in arrays.items() if k.startswith("model.")}
    try:
        exp.model.load_state_dict(model_sd, strict=True)
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint does not fit the model: {e}") from None
    opt_meta = meta.get("optimizer", {})
    state = {int(i): {n: arrays[f"optim.{i}.{n}"] for n in names}
             for i, names in opt_meta.get("state_keys", {}).items()}
    exp.optimizer.load_state_dict({"state": state, "param_groups": opt_meta["param_groups"]})
    if exp.scheduler is not None and meta.get("scheduler") is not None:
        exp.scheduler.load_state_dict(meta["scheduler"])
    exp.train_loader.load_state_dict(meta["loader"])
    if meta.get("rng") is not None:
        rng.set_state(meta["rng"], "cpu")
    return dict(meta["progress"])
