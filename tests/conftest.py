"""Shared fixtures and markers: `gpu` skips without CUDA, `realdata` without the datasets,
`mpi` without mpi4py and mpiexec."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def real_data_dir() -> Path | None:
    """$DLRUN_DATA_DIR, else ../shared/data beside the project root; None when neither exists."""
    env = os.environ.get("DLRUN_DATA_DIR")
    for candidate in (Path(env) if env else None, ROOT.parent / "shared" / "data"):
        if candidate is not None and candidate.is_dir():
            return candidate
    return None


def _cuda_ok() -> bool:
    from dlrun.backend import cuda_available

    return cuda_available()


def _mpi_ok() -> bool:
    import importlib.util

    from dlrun.distributed.launch import find_mpiexec
    from dlrun.errors import DistributedError

    try:
        find_mpiexec()
    except DistributedError:
        return False
    return importlib.util.find_spec("mpi4py") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mpi_items = [i for i in items if "mpi" in i.keywords]
    if mpi_items and not _mpi_ok():
        skip = pytest.mark.skip(reason="needs mpi4py and MPICH's mpiexec (dlrun[mpi])")
        for item in mpi_items:
            item.add_marker(skip)
    gpu_items = [i for i in items if "gpu" in i.keywords]
    if gpu_items and not _cuda_ok():
        skip = pytest.mark.skip(reason="needs CUDA and CuPy")
        for item in gpu_items:
            item.add_marker(skip)
    if real_data_dir() is None:
        skip = pytest.mark.skip(reason="real datasets not found ($DLRUN_DATA_DIR, ../shared/data)")
        for item in items:
            if "realdata" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def data_dir() -> Path:
    """The real dataset folder (tests using it must be marked `realdata`)."""
    d = real_data_dir()
    if d is None:
        pytest.skip("real datasets not found")
    return d


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# ----- tiny offline experiments (runner and CLI tests) ---------------------------------------
TINY = {
    "name": "tiny",
    "seed": 3,
    "mode": "static",
    "data": {"name": "blobs", "options": {"n": 240, "n_classes": 3, "n_features": 4,
                                           "spread": 1.0}},
    "model": {"type": "mlp", "hidden": [16], "dropout": 0.2},
    "optimizer": {"name": "adam", "lr": 0.01},
    "train": {"epochs": 3, "batch_size": 16},
    "logging": {"log_every": 5},
}


@pytest.fixture
def tiny_config(tmp_path: Path):
    """Write a tiny config (optionally changed) and return its path."""

    def make(**changes) -> Path:
        cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
        for dotted, value in changes.items():
            section, _, key = dotted.partition("__")
            if key:
                cfg[section][key] = value
            else:
                cfg[section] = value
        path = tmp_path / f"tiny-{len(list(tmp_path.glob('tiny-*.yaml')))}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make


# ----- a small real text (tokenizer and token-file tests) -----------------------------------------
_OPENING = """First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

First Citizen:
You are all resolved rather to die than to famish?

All:
Resolved. resolved.

First Citizen:
First, you know Caius Marcius is chief enemy to the people.
"""


@pytest.fixture
def shakespeare_slice(tmp_path: Path) -> Path:
    """A text file of the first 30,000 characters of Tiny Shakespeare (its opening lines
    repeated when the real data is absent), for tokenizer and token-file tests."""
    d = real_data_dir()
    real = d / "tinyshakespeare" / "input.txt" if d is not None else None
    text = (real.read_text(encoding="utf-8") if real is not None and real.is_file()
            else _OPENING * 100)[:30_000]
    path = tmp_path / "shakespeare.txt"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def token_config():
    """A tiny GPT config (a dict) training on a token folder: token_config(folder, mode, steps)."""

    def make(folder: Path, mode: str = "eager", steps: int = 20) -> dict:
        return {
            "name": "tokens", "mode": mode, "seed": 0,
            "data": {"name": "token_file", "options": {"path": str(folder), "seq_len": 16}},
            "model": {"type": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 32},
            "optimizer": {"name": "adamw", "lr": 0.01},
            "train": {"max_steps": steps, "batch_size": 16, "eval_every": steps,
                      "eval_batch_size": 64},
            "logging": {"plots": False, "log_every": 1},
        }

    return make
