"""The data side of an experiment: the dataset a config names and the loaders over its splits."""

from __future__ import annotations

from typing import Any

import numpy as np

from dlrun.config import ExperimentConfig
from dlrun.data.bundle import DatasetBundle, Split
from dlrun.data.datasets import build_dataset, dataset_options
from dlrun.data.loader import DataLoader


def load_data(cfg: ExperimentConfig, progress: Any = None) -> DatasetBundle:
    """The dataset named by cfg.data, with the run's seed and fractions where it takes them;
    `progress(done, total)` hears about downloads."""
    accepted = set(dataset_options(cfg.data.name))
    options = dict(cfg.data.options)
    if progress is not None and "progress" in accepted:
        options["progress"] = progress
    for key, value in (("root", cfg.data.root), ("val_fraction", cfg.data.val_fraction),
                       ("seed", cfg.seed)):
        if key in accepted and key not in options and value is not None:
            options[key] = value
    return build_dataset(cfg.data.name, **options)


def make_loader(split: Split, cfg: ExperimentConfig, device: str, dtype: np.dtype, *, shuffle: bool,
            drop_last: bool, batch_size: int, sampling: str = "permutation",
            shard: tuple[int, int] | None = None) -> DataLoader:
    """A loader over `split`; float arrays converted to the run's dtype once (token ids and
    labels are integers and stay views: text windows are strided views of the corpus)."""
    x = split.x
    if x.dtype.kind == "f" and x.dtype != dtype:
        x = x.astype(dtype)
    y = split.y
    if y.dtype.kind == "f" and y.dtype != dtype:
        y = y.astype(dtype)
    if sampling == "random":  # draws with replacement: a batch may be larger than the split
        return DataLoader(x, y, batch_size=batch_size, seed=cfg.seed, device=device,
                          sampling="random", shard=shard)
    return DataLoader(x, y, batch_size=min(batch_size, len(x)), shuffle=shuffle, seed=cfg.seed,
                      drop_last=drop_last and len(x) >= batch_size, device=device, shard=shard)
