"""The record of a built experiment: everything a run holds (data, model, optimizer, schedule,
loaders, step functions), and its evaluation loaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlrun import optim
from dlrun.config import ExperimentConfig
from dlrun.data.bundle import DatasetBundle
from dlrun.data.loader import DataLoader
from dlrun.engine.tensor import Tensor
from dlrun.errors import ConfigError
from dlrun.nn import Module
from dlrun.optim.amp import MixedPrecision
from dlrun.runner.experiment.data import make_loader


@dataclass
class Experiment:
    cfg: ExperimentConfig
    device: str
    dtype: np.dtype
    bundle: DatasetBundle
    task: str
    model: Module
    optimizer: optim.Optimizer
    scheduler: Any  # LRScheduler | ReduceLROnPlateau | None
    loss_name: str
    train_loader: DataLoader
    train_step: Any = None
    eval_step: Any = None
    eval_loaders: dict[str, DataLoader] = field(default_factory=dict)
    parallel: Any = None  # distributed.DataParallel when training on several ranks
    amp: MixedPrecision | None = None  # the precision policy (fp32: plain calls)

    @property
    def params(self) -> list[Tensor]:
        return list(self.model.parameters())

    @property
    def shard(self) -> tuple[int, int] | None:
        """(rank, ranks) when training on several ranks: each loader yields this rank's share
        of every global batch."""
        p = self.parallel
        return None if p is None else (p.world.rank, p.world.size)

    def loader(self, split: str) -> DataLoader:
        """The evaluation loader of a split (in order, every sample), made once per run (its
        arrays converted to the run's dtype once, not at every evaluation) and rewound."""
        loader = self.eval_loaders.get(split)
        if loader is None:
            data = getattr(self.bundle, split)
            if data is None:
                raise ConfigError(f"dataset {self.cfg.data.name!r} has no {split} split")
            batch = self.cfg.train.eval_batch_size or self.cfg.train.batch_size
            loader = self.eval_loaders[split] = make_loader(
                data, self.cfg, self.device, self.dtype, shuffle=False, drop_last=False,
                batch_size=batch, shard=self.shard)
        loader.set_epoch(0)
        return loader
