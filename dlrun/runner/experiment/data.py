"""The data side of an experiment: the dataset a config names and the loaders over its splits."""

from __future__ import annotations

from typing import Any

import numpy as np

from dlrun.config import ExperimentConfig, config_to_dict, validate_config
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


def resolved_config(cfg: ExperimentConfig, meta: dict[str, Any]) -> ExperimentConfig:
    """The config with the dataset options the builder resolved from the data (an image folder's
    size, channels and training-split mean/std: meta['resolved_options']), as the run saves it,
    so that eval, export and resume rebuild the data exactly as it was trained on."""
    resolved = meta.get("resolved_options")
    if not resolved:
        return cfg
    data = config_to_dict(cfg)
    data["data"]["options"] = {**data["data"]["options"], **resolved}
    return validate_config(data, "resolved config")


def make_loader(split: Split, cfg: ExperimentConfig, device: str, dtype: np.dtype, *, shuffle: bool,
                drop_last: bool, batch_size: int, sampling: str = "permutation",
                shard: tuple[int, int] | None = None, augment: bool = False) -> DataLoader:
    """A loader over `split`; float arrays converted to the run's dtype once (token ids and
    labels are integers and stay views: text windows are strided views of the corpus). A split
    with a transform (memory-mapped raw rows) is converted batch by batch instead, and only the
    training loader (`augment`) augments."""
    x = split.x
    if x.dtype.kind == "f" and x.dtype != dtype and split.transform is None:
        x = x.astype(dtype)
    y = split.y
    if y.dtype.kind == "f" and y.dtype != dtype:
        y = y.astype(dtype)
    n = len(split)
    common = {"seed": cfg.seed, "device": device, "shard": shard, "index": split.index,
              "transform": split.transform, "augment": augment, "dtype": dtype,
              "prefetch": cfg.data.prefetch}
    if sampling == "random":  # draws with replacement: a batch may be larger than the split
        return DataLoader(x, y, batch_size=batch_size, sampling="random", **common)
    return DataLoader(x, y, batch_size=min(batch_size, n), shuffle=shuffle,
                      drop_last=drop_last and n >= batch_size, **common)
