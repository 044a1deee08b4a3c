"""Dataset registry: the names a config's `data.name` can use, and `build_dataset`.

Options are the builder's keyword arguments; an unknown name or option is a DataError that
lists what is accepted, so a typo in a config fails before any data is read.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from dlrun.data import synthetic
from dlrun.data.bundle import DatasetBundle
from dlrun.data.image_folder import image_folder
from dlrun.data.tabular import csv_dataset, series
from dlrun.data.text import text, tinyshakespeare
from dlrun.data.token_file import token_file
from dlrun.data.vision import fashion_mnist, mnist
from dlrun.errors import DataError
from dlrun.registry import Registry

Builder = Callable[..., DatasetBundle]

# The datasets a config's `data.name` names: keyword options -> bundle.
DATASETS: Registry[Builder] = Registry("dataset")
for _name, _builder_fn, _doc in (
    ("mnist", mnist, "MNIST handwritten digits, 28x28, 10 classes (IDX files, downloaded once)"),
    ("fashion_mnist", fashion_mnist, "Fashion-MNIST: MNIST's format, 10 clothing classes"),
    ("image_folder", image_folder,
     "your images, one sub-folder per class (`path`, `size`, `channels`, `augment`)"),
    ("text", text, "a character-level corpus from a text file (`path`, `seq_len`, `stride`)"),
    ("tinyshakespeare", tinyshakespeare, "Tiny Shakespeare, characters (karpathy/char-rnn)"),
    ("token_file", token_file, "a tokenized corpus on disk, nanoGPT's train.bin/val.bin (`path`, "
     "`seq_len`; or `corpus` + `tokenizer` to prepare it on first use)"),
    ("csv", csv_dataset, "a feature table from a CSV file (`path`, `features`, `target`, `task`)"),
    ("series", series, "a univariate series from a CSV column, windowed for forecasting"),
    ("linear", synthetic.linear, "synthetic y = x @ W + b + noise (regression)"),
    ("blobs", synthetic.blobs, "synthetic Gaussian clusters (classification)"),
    ("spirals", synthetic.spirals, "synthetic interleaved 2-D spirals (classification)"),
    ("sine", synthetic.sine, "synthetic sine waves to forecast (sequence regression)"),
    ("adding", synthetic.adding, "the adding problem (sequence regression)"),
    ("images", synthetic.images, "synthetic image classes: a fixed pattern per class plus noise"),
    ("tokens", synthetic.tokens, "token sequences from a seeded Markov chain (language model)"),
):
    DATASETS.add(_name, _builder_fn, _doc)
del _name, _builder_fn, _doc


def register_dataset(name: str, builder: Builder, doc: str = "") -> None:
    """Add a builder under `name` (a callable taking keyword options, returning a bundle)."""
    first = (builder.__doc__ or "").strip().split("\n")[0]
    DATASETS.add(_key(name), builder, doc or first)


def available_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(DATASETS)


def dataset_options(name: str) -> list[str]:
    """The option names a dataset accepts."""
    builder = _builder(name)
    return [
        p.name
        for p in inspect.signature(builder).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _builder(name: str) -> Builder:
    if not isinstance(name, str) or _key(name) not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}")
    return DATASETS[_key(name)]


def build_dataset(name: str, **options: Any) -> DatasetBundle:
    """Build a registered dataset with its options (e.g. `build_dataset('mnist', root=...)`)."""
    builder = _builder(name)
    signature = inspect.signature(builder)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    if not accepts_any:
        allowed = dataset_options(name)
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise DataError(
                f"dataset {name!r} has no option {', '.join(map(repr, unknown))}; "
                f"options: {', '.join(allowed)}"
            )
    try:
        signature.bind(**options)
    except TypeError as e:
        raise DataError(f"dataset {name!r}: {e}") from None
    seed = options.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"dataset {name!r}: seed must be an integer >= 0, got {seed!r}")
    return builder(**options)
