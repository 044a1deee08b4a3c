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
from dlrun.data.tabular import csv_dataset, series
from dlrun.data.text import text, tinyshakespeare
from dlrun.data.vision import fashion_mnist, mnist
from dlrun.errors import DataError

Builder = Callable[..., DatasetBundle]

DATASETS: dict[str, Builder] = {
    "mnist": mnist,
    "fashion_mnist": fashion_mnist,
    "text": text,
    "tinyshakespeare": tinyshakespeare,
    "csv": csv_dataset,
    "series": series,
    "linear": synthetic.linear,
    "blobs": synthetic.blobs,
    "spirals": synthetic.spirals,
    "sine": synthetic.sine,
    "adding": synthetic.adding,
    "images": synthetic.images,
    "tokens": synthetic.tokens,
}


def register_dataset(name: str, builder: Builder) -> None:
    """Add a builder under `name` (a callable taking keyword options, returning a bundle)."""
    DATASETS[_key(name)] = builder


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
