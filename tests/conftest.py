"""Shared fixtures and markers: `gpu` skips without CUDA, `realdata` without the datasets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
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
