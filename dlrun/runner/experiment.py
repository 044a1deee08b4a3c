"""Build everything a run needs from a config: data, loaders, model, loss, optimizer, schedule,
and the train/eval step functions (compiled in static mode)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

import dlrun
from dlrun import functional as F
from dlrun import optim
from dlrun.backend import get_xp, normalize_device, tune_host_allocator
from dlrun.config import ExperimentConfig
from dlrun.data.bundle import DatasetBundle, Split
from dlrun.data.datasets import build_dataset, dataset_options
from dlrun.data.loader import DataLoader
from dlrun.engine.tensor import Tensor
from dlrun.errors import ConfigError
from dlrun.models import build_model
from dlrun.nn import Module
from dlrun.optim.amp import MixedPrecision
from dlrun.runner import parallel
from dlrun.runner.events import DownloadProgress, emit

DEFAULT_LOSS = {"classification": "cross_entropy", "language_model": "cross_entropy",
                "regression": "mse"}


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
            loader = self.eval_loaders[split] = _loader(
                data, self.cfg, self.device, self.dtype, shuffle=False, drop_last=False,
                batch_size=batch, shard=self.shard)
        loader.set_epoch(0)
        return loader


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


def _loader(split: Split, cfg: ExperimentConfig, device: str, dtype: np.dtype, *, shuffle: bool,
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


def build_optimizer(cfg: ExperimentConfig, params: list[Tensor]) -> optim.Optimizer:
    """The optimizer of cfg.optimizer; with `decay: matrices` (and weight decay), two groups:
    parameters with >= 2 dimensions decay, the others do not (see optim.decay_groups)."""
    o = cfg.optimizer
    groups: list[Any] = list({id(p): p for p in params}.values())  # tied weights once
    if o.decay == "matrices" and o.weight_decay > 0:
        groups = optim.decay_groups(groups, o.weight_decay)
    if o.name == "sgd":
        return optim.SGD(groups, lr=o.lr, momentum=o.momentum, dampening=o.dampening,
                         weight_decay=o.weight_decay, nesterov=o.nesterov)
    if o.name in ("adam", "adamw"):
        cls = optim.Adam if o.name == "adam" else optim.AdamW
        return cls(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)
    if o.name == "rmsprop":
        return optim.RMSprop(groups, lr=o.lr, alpha=o.alpha, eps=o.eps,
                             weight_decay=o.weight_decay, momentum=o.momentum)
    raise ConfigError(f"optimizer.name: unknown optimizer {o.name!r}")


def build_scheduler(cfg: ExperimentConfig, opt: optim.Optimizer, total: int) -> Any:
    """The schedule; `total` is the number of schedule steps (epochs or steps by interval).

    Warm-up is nanoGPT's, lr * (k + 1) / (warmup_steps + 1) at step k; `cosine` is nanoGPT's
    get_lr (optim.WarmupCosineLR) down to min_lr at decay_steps (default: `total`).
    """
    s = cfg.schedule
    main: Any
    if s.name == "cosine":
        end = s.decay_steps or (s.warmup_steps + s.t_max if s.t_max else total)
        return optim.WarmupCosineLR(opt, s.warmup_steps, max(end, s.warmup_steps + 1),
                                    min_lr=s.min_lr)
    if s.name == "constant":
        main = None
    elif s.name == "step":
        main = optim.StepLR(opt, step_size=s.step_size, gamma=s.gamma)
    elif s.name == "multistep":
        main = optim.MultiStepLR(opt, milestones=list(s.milestones), gamma=s.gamma)
    elif s.name == "exponential":
        main = optim.ExponentialLR(opt, gamma=s.gamma)
    elif s.name == "plateau":
        if s.warmup_steps:
            raise ConfigError("schedule.warmup_steps: cannot be combined with 'plateau'")
        return optim.ReduceLROnPlateau(opt, mode="min", factor=s.factor, patience=s.patience,
                                       min_lr=s.min_lr)
    else:
        raise ConfigError(f"schedule.name: unknown schedule {s.name!r}")
    if s.warmup_steps:
        return optim.LinearWarmup(opt, s.warmup_steps, after=main,
                                  start_factor=1.0 / (s.warmup_steps + 1))
    return main


def loss_function(name: str, task: str, label_smoothing: float) -> Any:
    """(outputs, targets) -> scalar loss tensor, for the loss name and task."""
    if name == "cross_entropy":
        def ce(out: Tensor, y: Tensor) -> Tensor:
            if out.ndim == 3:  # language model: (B, T, V) logits, (B, T) targets
                out, y = out.reshape(-1, out.shape[-1]), y.reshape(-1)
            return F.cross_entropy(out, y, label_smoothing=label_smoothing)
        return ce
    if name == "nll":
        return lambda out, y: F.nll_loss(F.log_softmax(out, 1), y)
    if name in ("mse", "l1"):
        fn = F.mse_loss if name == "mse" else F.l1_loss
        return lambda out, y: fn(out, y.reshape(*out.shape))
    if name == "bce_with_logits":
        return lambda out, y: F.binary_cross_entropy_with_logits(out, y.reshape(*out.shape))
    raise ConfigError(f"loss.name: unknown loss {name!r}")


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
    meta = dict(bundle.meta)
    task = meta.get("task", "classification")
    dlrun.set_default_device(device)
    try:
        model = build_model(cfg.model.as_dict(), meta)
    finally:
        dlrun.set_default_device("cpu")
    model.to(device=device, dtype=dtype)
    opt = build_optimizer(cfg, list(model.parameters()))
    if world is not None:
        parallel.check_batches(cfg, world.size, len(bundle.train.x))
    loader = _loader(bundle.train, cfg, device, dtype, shuffle=cfg.train.shuffle,
                     drop_last=cfg.train.drop_last, batch_size=cfg.train.batch_size,
                     sampling=cfg.train.sampling,
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


def make_steps(exp: Experiment, mode: str | None = None) -> None:
    """Attach train_step(x, y) -> loss and eval_step(x, y) -> (mean loss, model outputs)."""
    cfg, model, opt = exp.cfg, exp.model, exp.optimizer
    loss_fn = loss_function(exp.loss_name, exp.task, cfg.loss.label_smoothing)
    params = exp.params
    clip_norm, clip_value = cfg.train.grad_clip_norm, cfg.train.grad_clip_value
    amp = exp.amp = exp.amp or MixedPrecision(cfg.precision, model, opt, exp.device)
    dp = exp.parallel

    def train_step(x: Tensor, y: Tensor) -> Tensor:
        loss = loss_fn(amp.run(model, x), y)
        amp.backward(loss)  # loss.backward(); fp16: of the scaled loss
        if dp is not None:  # one all-reduce: gradients (and the loss) summed over ranks
            loss = dp.reduce_gradients(params, loss)
        if clip_value is not None:
            optim.clip_grad_value_(amp.unscale_(), clip_value)
        amp.step(clip_norm)  # one flat pass: fp16 unscale, clip by norm, step (undone on inf/nan)
        opt.zero_grad()
        return loss

    def eval_step(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        with dlrun.no_grad():
            out = amp.run(model, x)
            return loss_fn(out, y), out

    if (mode or cfg.mode) == "static":
        exp.train_step = dlrun.compile(train_step, cuda_graphs=cfg.cuda_graphs)
        exp.eval_step = dlrun.compile(eval_step, max_traces=16)
    else:
        exp.train_step, exp.eval_step = train_step, eval_step


def batch_tensors(exp: Experiment, xb: Any, yb: Any) -> tuple[Tensor, Tensor]:
    xp = get_xp(exp.device)
    return Tensor._wrap(xb, exp.device, xp, False), Tensor._wrap(yb, exp.device, xp, False)


METRICS = {
    "classification": ("loss", "accuracy"),
    "regression": ("loss", "mse", "mae", "r2"),
    "language_model": ("loss", "accuracy", "perplexity", "bits_per_char"),
}


def metric_names(task: str, split: str) -> list[str]:
    """The metrics evaluate_split reports for a task, e.g. val_loss, val_accuracy."""
    return [f"{split}_{m}" for m in METRICS[task]]


class MetricAccumulator:
    """Sums over batches, then the task's metrics: loss and accuracy (and a confusion matrix)
    for classification; MSE, MAE and R² for regression; loss, accuracy, perplexity and bits per
    character for language models."""

    def __init__(self, task: str, num_classes: int | None = None) -> None:
        self.task = task
        self.num_classes = num_classes
        self.loss_sum = 0.0
        self.samples = 0
        self.items = 0
        self.correct = 0
        self.sse = self.sae = self.sum_y = self.sum_y2 = 0.0
        self.confusion = (np.zeros((num_classes, num_classes), dtype=np.int64)
                          if task == "classification" and num_classes else None)

    def add(self, loss: float, out: np.ndarray, y: np.ndarray) -> None:
        n = y.shape[0]
        if self.task == "regression":
            y = y.reshape(out.shape).astype(np.float64)
            err = out.astype(np.float64) - y
            self.sse += float((err * err).sum())
            self.sae += float(np.abs(err).sum())
            self.sum_y += float(y.sum())
            self.sum_y2 += float((y * y).sum())
            self.loss_sum += loss * n
            self.items += y.size
        else:
            pred = out.argmax(-1)
            self.correct += int((pred == y).sum())
            self.loss_sum += loss * y.size
            self.items += y.size
            if self.confusion is not None:
                np.add.at(self.confusion, (y.reshape(-1), pred.reshape(-1)), 1)
        self.samples += n

    SUMS = ("loss_sum", "samples", "items", "correct", "sse", "sae", "sum_y", "sum_y2")

    def pack(self) -> np.ndarray:
        """Every sum as one float64 vector (counts stay exact below 2**53), to add across
        ranks; `unpack` takes the summed vector back."""
        sums = [float(getattr(self, k)) for k in self.SUMS]
        extra = self.confusion.ravel() if self.confusion is not None else []
        return np.concatenate([np.array(sums), np.asarray(extra, dtype=np.float64)])

    def unpack(self, values: np.ndarray) -> None:
        for k, v in zip(self.SUMS, values, strict=False):
            setattr(self, k, int(v) if isinstance(getattr(self, k), int) else float(v))
        if self.confusion is not None:
            self.confusion[...] = values[len(self.SUMS):].reshape(self.confusion.shape)

    def result(self, split: str) -> dict[str, float]:
        if self.task == "regression":
            out = {f"{split}_loss": self.loss_sum / max(self.samples, 1),
                   f"{split}_mse": self.sse / max(self.items, 1),
                   f"{split}_mae": self.sae / max(self.items, 1)}
            total = self.sum_y2 - self.sum_y * self.sum_y / max(self.items, 1)
            out[f"{split}_r2"] = 1.0 - self.sse / total if total > 0 else float("nan")
            return out
        loss = self.loss_sum / max(self.items, 1)
        out = {f"{split}_loss": loss, f"{split}_accuracy": self.correct / max(self.items, 1)}
        if self.task == "language_model":
            out[f"{split}_perplexity"] = float(np.exp(min(loss, 50.0)))
            out[f"{split}_bits_per_char"] = loss / float(np.log(2.0))
        return out


def evaluate_split(exp: Experiment, split: str, keep: dict[str, Any] | None = None
                   ) -> dict[str, float]:
    """The task's metrics on a split (see MetricAccumulator); with `keep` (a dict), the
    confusion matrix of a classification task is stored in keep['confusion']."""
    was_training = exp.model.training
    exp.model.eval()
    acc = MetricAccumulator(exp.task, exp.bundle.meta.get("num_classes"))
    try:
        for xb, yb in exp.loader(split):
            if len(yb) == 0:  # this rank's share of a last batch smaller than the job
                continue
            x, y = batch_tensors(exp, xb, yb)
            loss, out = exp.eval_step(x, y)
            acc.add(float(loss.item()), out.numpy(), y.numpy())
    finally:
        exp.model.train(was_training)
    if exp.parallel is not None:
        parallel.sum_metrics(exp.parallel.world, acc)
    if keep is not None and acc.confusion is not None:
        keep["confusion"] = acc.confusion
    return acc.result(split)
