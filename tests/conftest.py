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


# ----- small image folders (image_folder dataset) ---------------------------------------------
def draw_image(label: int, index: int, size: int = 12, mode: str = "L") -> np.ndarray:
    """A visually distinct image of class `label` (0: a vertical bar, 1: a horizontal bar,
    2: a diagonal, ...) with seeded noise, uint8 (H, W) or (H, W, 3)."""
    noise = np.random.default_rng([label, index]).integers(0, 60, size=(size, size))
    img = noise.astype(np.uint8)
    mid = size // 2 + (index % 3) - 1
    if label % 3 == 0:
        img[:, mid - 1:mid + 1] = 230
    elif label % 3 == 1:
        img[mid - 1:mid + 1, :] = 230
    else:
        np.fill_diagonal(img, 230)
    return np.stack([img] * 3, axis=-1) if mode == "RGB" else img


@pytest.fixture
def image_folder_factory(tmp_path: Path):
    """make(name, per_class, classes=("a", "b"), formats=("png", "jpg", "bmp"), mode="L",
    split=None) writes a real image folder (Pillow) under tmp_path and returns its path;
    `split` a sub-folder (train, val, test) of the same root."""
    from PIL import Image

    def make(name: str = "images", per_class: int = 10, classes=("a", "b"),
             formats=("png", "jpg", "bmp"), mode: str = "L", split: str | None = None,
             size: int = 12) -> Path:
        root = tmp_path / name
        base = root / split if split else root
        for label, cls in enumerate(classes):
            (base / cls).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                fmt = formats[i % len(formats)]
                Image.fromarray(draw_image(label, i, size, mode), mode).save(
                    base / cls / f"{i:03d}.{fmt}")
        return root

    return make


BAD_FOLDERS = {  # setup -> what the error says
    "empty": "no class folders",
    "empty_class": "c: a class folder without images",
    "truncated": "b/bad.png: cannot read the image",
    "not_an_image": "a/fake.jpg: cannot read the image",
}


@pytest.fixture
def bad_image_folder(image_folder_factory, tmp_path: Path):
    """make(setup) -> a folder with the problem BAD_FOLDERS names: no class folders, an empty
    class folder, a truncated PNG, a text file named .jpg."""

    def make(setup: str) -> Path:
        if setup == "empty":
            (tmp_path / "empty").mkdir()
            return tmp_path / "empty"
        root = image_folder_factory(per_class=2)
        if setup == "empty_class":
            (root / "c").mkdir()
        elif setup == "truncated":
            data = (root / "b" / "000.png").read_bytes()
            (root / "b" / "bad.png").write_bytes(data[: len(data) // 2])
        elif setup == "not_an_image":
            (root / "a" / "fake.jpg").write_text("not a picture")
        return root

    return make
