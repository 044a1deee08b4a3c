"""Build an experiment from a config: seed, data, model, optimizer, schedule, step functions."""

from __future__ import annotations

from typing import Any

import numpy as np

import dlrun
from dlrun.backend import get_xp, normalize_device, tune_host_allocator
from dlrun.config import ExperimentConfig
from dlrun.models import build_model
from dlrun.runner import parallel
from dlrun.runner.events import DownloadProgress, Message, emit
from dlrun.runner.experiment.builders import DEFAULT_LOSS, build_optimizer, build_scheduler
from dlrun.runner.experiment.data import load_data, make_loader
from dlrun.runner.experiment.record import Experiment
from dlrun.runner.experiment.steps import make_steps


def build_experiment(cfg: ExperimentConfig, callbacks: list[Any] | None = None,
                     world: Any = None) -> Experiment:
    """Seed, load the data, build the model and optimizer, and make the step functions; with
    `world` (a distributed.World), this rank's device, data shard and gradient all-reduce."""
    device = parallel.rank_device(cfg.device, normalize_device(cfg.device), world)
    get_xp(device)
    tune_host_allocator()
    dtype = np.dtype(cfg.dtype)
    dlrun.manual_seed(cfg.seed)

    def progress(done: int, total: int | None) -> None:
        emit(callbacks or [], DownloadProgress(done, total))

    bundle = load_data(cfg, progress if callbacks else None)
    for warning in bundle.meta.get("warnings", []):  # e.g. images of mixed modes, converted
        emit(callbacks or [], Message(warning, "warning"))
    meta = dict(bundle.meta)
    task = meta.get("task", "classification")
    dlrun.set_default_device(device)
    try:
        model = build_model(cfg.model, meta)
    finally:
        dlrun.set_default_device("cpu")
    model.to(device=device, dtype=dtype)
    opt = build_optimizer(cfg, list(model.parameters()))
    # a dataset too large to walk in permutations (a token file) says it is sampled randomly
    sampling = "random" if meta.get("sampling") == "random" else cfg.train.sampling
    if world is not None:  # random sampling has no short last batch
        parallel.check_batches(cfg, world.size,
                               None if sampling == "random" else len(bundle.train))
    loader = make_loader(bundle.train, cfg, device, dtype, shuffle=cfg.train.shuffle,
                         drop_last=cfg.train.drop_last, batch_size=cfg.train.step_batch_size,
                         sampling=sampling, augment=True,
                         shard=None if world is None else (world.rank, world.size))
    steps_per_epoch = len(loader)
    total_steps = cfg.train.max_steps or cfg.train.epochs * steps_per_epoch
    sched_total = cfg.train.epochs if cfg.schedule.interval == "epoch" else total_steps
    scheduler = build_scheduler(cfg, opt, sched_total)
    loss_name = cfg.loss.name or DEFAULT_LOSS[task]
    exp = Experiment(cfg, device, dtype, bundle, task, model, opt, scheduler, loss_name, loader)
    if world is not None:
        parallel.attach(exp, world)
    make_steps(exp)
    return exp
