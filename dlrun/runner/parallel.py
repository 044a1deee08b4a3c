"""The runner's side of data-parallel training: which device and share of the data a rank
gets, the gradient all-reduce in the step, rank 0's state on every rank, metrics summed over
ranks, and what the summary says about communication."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlrun.backend import normalize_device
from dlrun.config import ExperimentConfig
from dlrun.distributed.communicator import make_communicator
from dlrun.distributed.data_parallel import DataParallel
from dlrun.distributed.world import World
from dlrun.engine import collective, rng
from dlrun.errors import ConfigError
from dlrun.runner.records import Communication, Progress


def rank_device(requested: str, device: str, world: World | None) -> str:
    """One GPU per rank on each machine: 'cuda' (or 'auto' on a GPU machine) becomes
    'cuda:<local rank>'; an explicit 'cuda:N' is kept."""
    if world is not None and device.startswith("cuda") and requested in ("cuda", "auto"):
        return normalize_device(f"cuda:{world.local_rank}")
    return device


def check_batches(cfg: ExperimentConfig, n: int, n_train: int | None = None,
                  source: str = "") -> None:
    """train.batch_size is the global (micro-)batch: it must split evenly over the n ranks,
    and an epoch's last, shorter step batch (of a train split of n_train samples) must leave
    every rank at least one sample."""
    b = cfg.train.batch_size
    where = f"{source}: " if source else ""
    if b % n:
        raise ConfigError(f"{where}train.batch_size: {b} does not split over {n} workers "
                          f"(the batch size is global: use a multiple of {n})")
    tail = 0 if cfg.train.drop_last or cfg.train.sampling == "random" or n_train is None \
        else n_train % cfg.train.step_batch_size
    if 0 < tail < n:
        raise ConfigError(f"{where}train.drop_last: false leaves a last batch of {tail} "
                          f"sample(s) for {n} workers; set train.drop_last: true")


def attach(exp: Any, world: World) -> DataParallel:
    """Make the job's communicator the engine's and give the experiment its DataParallel."""
    world.communicator = make_communicator(world, exp.cfg.distributed.backend, exp.device)
    collective.set_world(world.communicator)
    exp.parallel = DataParallel(world, exp.device, exp.dtype, exp.cfg.distributed.bucket_mb)
    return exp.parallel


def broadcast_state(exp: Any, world: World, progress: Progress) -> Progress:
    """Rank 0's weights, optimizer, schedule, loader position and counters on every rank;
    then each rank r > 0 draws dropout from its own stream, seeded by (seed, rank)."""
    from dlrun.runner.io.state import capture, restore

    arrays, meta = capture(exp, progress) if world.is_main else ({}, None)
    meta = world.bcast_json(meta)
    arrays = world.bcast_arrays(arrays)
    if not world.is_main:
        progress = restore(exp, arrays, meta, "rank 0")
        seed = np.random.SeedSequence([exp.cfg.seed, world.rank]).generate_state(1)[0]
        rng.manual_seed(int(seed))
    return progress


def sum_metrics(world: World, acc: Any) -> None:
    """Add the other ranks' metric sums to `acc` (a MetricAccumulator), so every rank holds
    the metrics of the whole split."""
    acc.unpack(world.sum_host(acc.pack()))


def communication(parallel: DataParallel | None, skip: int) -> Communication | None:
    """Per-step all-reduce time and bytes for the summary (the first `skip` steps left out)."""
    if parallel is None:
        return None
    world = parallel.world
    stats = world.communicator.stats
    k = parallel.buckets
    held, flying = stats.per_step(k, skip)
    return Communication(
        backend=world.backend, workers=world.size,
        all_reduce_ms=float(np.median(held)) * 1e3 if held else None,
        all_reduce_bytes=sum(stats.bytes[-k:]) if stats.bytes else 0, all_reduces_per_step=k,
        hosts=hosts_of(world), overlapped=overlapped(held, flying))


def overlapped(held: list[float], flying: list[float]) -> float | None:
    """The share of the all-reduces' time under way that the step did not wait for (hidden
    behind the backward pass): 1 - median held / median under way."""
    if not held or not flying or float(np.median(flying)) <= 0:
        return None
    return max(0.0, 1.0 - float(np.median(held)) / float(np.median(flying)))


def hosts_of(world: World) -> dict[str, list[int]] | None:
    """Each host's ranks, when the job runs on more than one host."""
    by_host: dict[str, list[int]] = {}
    for rank, host in enumerate(world.hosts):
        by_host.setdefault(host, []).append(rank)
    return by_host if len(by_host) > 1 else None


def job_paths(cfg: ExperimentConfig, source: str) -> list[str]:
    """The files a job's command reads, which every host must see: its config file and the
    dataset's file or folder."""
    from dlrun.data.datasets import dataset_options
    from dlrun.data.download import cache_dir

    paths = [str(Path(source).resolve())]
    path = cfg.data.options.get("path")
    if path:
        paths.append(str(Path(path).resolve()))
    elif "root" in dataset_options(cfg.data.name):
        paths.append(str(Path(cfg.data.root).resolve()) if cfg.data.root else str(cache_dir()))
    return paths
