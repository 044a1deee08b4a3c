"""The training loop: train(cfg, callbacks) -> summary. Reports through events, never prints.

One run directory per run (config.yaml, metrics.jsonl/csv, summary.json, checkpoints/, plots/).
Checkpoints hold everything needed for `resume` to end with the same weights as an uninterrupted
run: model, optimizer and schedule state, step and epoch, the loader position and the RNG state.
"""

from __future__ import annotations

import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

import dlrun
from dlrun.config import (
    ExperimentConfig,
    config_to_dict,
    dump_config,
    load_config,
    validate_config,
)
from dlrun.distributed.launch import announce_run_dir
from dlrun.distributed.world import World
from dlrun.engine.tensor import Tensor
from dlrun.errors import ConfigError, NumericalError
from dlrun.runner import parallel
from dlrun.runner.evaluation import evaluate_split, metric_names
from dlrun.runner.events import (
    Callback,
    Checkpointed,
    EpochEnd,
    EvalEnd,
    Message,
    RunFinished,
    RunStarted,
    StepEnd,
    StopRun,
    emit,
)
from dlrun.runner.experiment import Experiment, batch_tensors, build_experiment
from dlrun.runner.experiment.data import resolved_config
from dlrun.runner.interrupt import StopRequest
from dlrun.runner.io import checkpoint as ckpt
from dlrun.runner.io import tensorboard
from dlrun.runner.io.metrics_log import MetricsLogger, write_summary
from dlrun.runner.io.pending_losses import PendingLosses, StepRecord, read_every
from dlrun.runner.io.rundir import create_run_dir, find_run_config, write_tokenizer
from dlrun.runner.io.state import capture, restore
from dlrun.runner.records import BestMetric, Progress, RunSummary, StepTimes

WARMUP_STEPS = 5  # step times before this are left out of the medians (tracing, caches)


class Trainer:
    """Runs one experiment; `run()` returns the RunSummary (also written to summary.json)."""

    def __init__(self, cfg: ExperimentConfig, callbacks: list[Callback] | None = None,
                 run_dir: Path | None = None, write: bool = True, world: World | None = None
                 ) -> None:
        self.cfg = cfg
        self.callbacks = list(callbacks or [])
        self.run_dir = run_dir
        self.write = write
        self.world = world
        self.exp: Experiment = build_experiment(cfg, self.callbacks, world)
        self.stop = StopRequest(self.exp.parallel)
        self.pending = PendingLosses(read_every(self.exp.device, cfg.logging.log_every))
        self.progress = Progress()
        self.step_times: list[float] = []
        self.losses: list[float] = []
        self.logger = MetricsLogger(run_dir) if (write and run_dir) else None
        self.tensorboard: tensorboard.TensorBoardLogger | None = None
        es = cfg.train.early_stopping
        measured = metric_names(self.exp.task, "val")
        if es is not None and es.metric not in measured:
            raise ConfigError(f"train.early_stopping.metric: {es.metric!r} is not measured for "
                              f"a {self.exp.task} task; measured: {', '.join(measured)}")

    # ----- bookkeeping -----------------------------------------------------------------------
    @property
    def total_steps(self) -> int:
        """train.max_steps when set (as many epochs as it takes), else epochs x batches."""
        t = self.cfg.train
        return t.max_steps or t.epochs * len(self.exp.train_loader)

    def _epoch_unfinished(self) -> bool:
        """The current epoch's batches are all done but its end (evaluation, schedule, epoch
        count) is not: the run was stopped right after the epoch's last step."""
        loader = self.exp.train_loader
        return loader.epoch == self.progress.epoch and 0 < len(loader) <= loader.position

    def _more_epochs(self) -> bool:
        return bool(self.cfg.train.max_steps) or self.progress.epoch < self.cfg.train.epochs

    def _lr(self) -> float:
        return float(self.exp.optimizer.param_groups[0]["lr"])

    def _log(self, record: dict[str, Any]) -> None:
        if self.logger is not None:
            self.logger.log(record)
        if self.tensorboard is not None:
            self.tensorboard.log(record)

    def save(self, tag: str) -> Path | None:
        if not (self.write and self.run_dir):
            return None
        arrays, meta = capture(self.exp, self.progress)
        meta["config_name"] = self.cfg.name
        path = ckpt.save_checkpoint(self.run_dir / "checkpoints", tag, arrays, meta)
        emit(self.callbacks, Checkpointed(self.progress.step, tag, path))
        return path

    def resume_from(self, run_dir: Path | None) -> None:
        """Load the run's last checkpoint (on rank 0 of a job, which then shares it)."""
        if run_dir is not None:
            arrays, meta = ckpt.load_checkpoint(run_dir)
            self.progress = restore(self.exp, arrays, meta, str(run_dir))
        self.share_state()
        emit(self.callbacks, Message(
            f"resumed from step {self.progress.step} (epoch {self.progress.epoch})"))

    def share_state(self) -> None:
        """On several ranks: every rank starts from rank 0's weights, optimizer and position."""
        if self.world is not None:
            self.progress = parallel.broadcast_state(self.exp, self.world, self.progress)

    # ----- evaluation and early stopping --------------------------------------------------------
    def _evaluate(self) -> dict[str, float]:
        if self.exp.bundle.val is None:
            return {}
        metrics = evaluate_split(self.exp, "val")
        p = self.progress
        p.last_eval = metrics
        emit(self.callbacks, EvalEnd(p.step, p.epoch, "val", metrics))
        self._log({"step": p.step, "epoch": p.epoch, **metrics})
        es = self.cfg.train.early_stopping
        key = es.metric if es else "val_loss"
        mode = es.mode if es else "min"
        value = metrics.get(key)
        if value is None:
            if es is not None:
                raise ConfigError(
                    f"train.early_stopping.metric: {key!r} is not measured; measured: "
                    f"{', '.join(metrics)}")
            return metrics
        min_delta = es.min_delta if es else 0.0
        best = p.best
        improved = best is None or (value < best - min_delta if mode == "min"
                                    else value > best + min_delta)
        if improved:
            p.best, p.best_step, p.bad_evals = value, p.step, 0
            self.save("best")
        else:
            p.bad_evals += 1
        return metrics

    def _should_stop_early(self) -> bool:
        es = self.cfg.train.early_stopping
        return es is not None and self.progress.bad_evals >= es.patience

    def _schedule_epoch(self, metrics: dict[str, float]) -> None:
        sched = self.exp.scheduler
        if sched is None or self.cfg.schedule.interval != "epoch":
            return
        if isinstance(sched, dlrun.optim.ReduceLROnPlateau):
            metric = metrics.get("val_loss", self.losses[-1] if self.losses else None)
            if metric is not None:
                sched.step(metric)
        else:
            sched.step()

    # ----- the loop -------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        """Train to the end (or an early stop / Ctrl-C); NaN and Inf are checked on the loss, so
        NumPy's floating-point warnings are silenced."""
        if self.write:
            self.tensorboard = tensorboard.open_tensorboard(self.cfg, self.run_dir,
                                                            self.progress.step)
            if self.run_dir:
                write_tokenizer(self.run_dir, self.exp.bundle.meta)
        try:
            with np.errstate(all="ignore"), self.stop.installed():
                return self._run()
        finally:
            if self.tensorboard is not None:
                self.tensorboard.close()

    def _run(self) -> RunSummary:
        cfg, exp, p = self.cfg, self.exp, self.progress
        loader = exp.train_loader
        start = time.perf_counter()
        emit(self.callbacks, RunStarted(self.run_dir, cfg.name, cfg.mode, exp.device,
                                        exp.model.num_parameters(), len(loader),
                                        self.total_steps, p.step))
        self._in_step = False
        exp.model.train()
        try:
            status = self._epochs(loader)
        except KeyboardInterrupt:
            status = "interrupted"
            if self._in_step:  # the batch in flight was not trained on: resume starts with it
                loader.position -= 1
        except StopRun as e:  # a callback ended the run (a sweep's pruner)
            status = e.status
            if e.reason:
                emit(self.callbacks, Message(e.reason))
        except NumericalError as e:
            self._fail(e, start)
        try:
            self._settle()  # steps an interrupt left unread
        except NumericalError as e:
            self._fail(e, start)
        if status == "early_stopped":
            es = cfg.train.early_stopping
            emit(self.callbacks, Message(
                f"early stopping: {es.metric} has not improved for {es.patience} evaluations"))
        self.save("last")
        summary = self._summary(status, time.perf_counter() - start)
        self._write_summary(summary)
        emit(self.callbacks, RunFinished(status, summary))
        return summary

    def _epochs(self, loader: Any) -> str:
        """Train epoch after epoch to the end; the run's status."""
        p = self.progress
        while (p.step < self.total_steps and self._more_epochs()) or self._epoch_unfinished():
            if loader.epoch != p.epoch:
                loader.set_epoch(p.epoch)
            # resumed right after an epoch's last batch: no batches, only the epoch's end
            status = "completed" if self._epoch_unfinished() else self._train_epoch(loader)
            self._settle()
            if status != "completed":
                return status
            if loader.epoch == p.epoch:
                if loader.position < len(loader):
                    return status  # max_steps reached inside the epoch
                loader.set_epoch(p.epoch + 1)  # stopped right after the last batch
            status = self._end_epoch(loader)
            if status != "completed":
                return status
        return "completed"

    def _train_epoch(self, loader: Any) -> str:
        """The epoch's remaining batches (or up to max_steps): 'completed' or 'early_stopped'."""
        exp = self.exp
        for xb, yb in loader:
            x, y = batch_tensors(exp, xb, yb)
            if exp.parallel is not None:  # this rank's share of the global batch
                exp.parallel.set_share(len(yb), loader.global_rows)
            status = self._step(x, y, len(yb))
            if self.progress.step >= self.total_steps or status != "completed":
                return status
        return "completed"

    def _step(self, x: Tensor, y: Tensor, rows: int) -> str:
        """One training step and what follows it: the schedule, reading the losses where they
        are needed, evaluation, checkpoint, a requested stop."""
        cfg, exp, p = self.cfg, self.exp, self.progress
        lr = self._lr()  # the rate this step uses (logged, as Lightning logs it)
        self._in_step = True
        t0 = time.perf_counter()
        loss = exp.train_step(x, y)
        self._in_step = False
        p.step += 1
        self.pending.add(StepRecord(p.step, p.epoch, loss, lr, rows,
                                    time.perf_counter() - t0))
        if exp.scheduler is not None and cfg.schedule.interval == "step" and \
                not isinstance(exp.scheduler, dlrun.optim.ReduceLROnPlateau):
            exp.scheduler.step()
        evaluating = bool(cfg.train.eval_every and p.step % cfg.train.eval_every == 0)
        saving = bool(cfg.train.checkpoint_every and p.step % cfg.train.checkpoint_every == 0)
        stop = False
        if (self.pending.due or evaluating or saving or p.step >= self.total_steps
                or p.step % cfg.logging.log_every == 0):
            self._settle()  # read the losses (one host sync), check them
            stop = self.stop.asked()  # Ctrl-C (on any rank): stop after this step
        status = "completed"
        if evaluating:
            self._evaluate()
            if self._should_stop_early():
                status = "early_stopped"
        if saving:
            self.save("last")
        if stop:
            raise KeyboardInterrupt
        return status

    def _end_epoch(self, loader: Any) -> str:
        """Count the epoch, evaluate (unless evaluating every N steps), report, step an
        epoch schedule, checkpoint; 'early_stopped' when early stopping says so."""
        p = self.progress
        p.epoch += 1
        metrics = self._evaluate() if not self.cfg.train.eval_every else dict(p.last_eval)
        epoch_loss = float(np.mean(self.losses[-len(loader):])) if self.losses else None
        record = {"epoch": p.epoch, "step": p.step, "epoch_train_loss": epoch_loss,
                  **metrics}
        emit(self.callbacks, EpochEnd(p.epoch, p.step, record))
        self._schedule_epoch(metrics)
        if not self.cfg.train.checkpoint_every:
            self.save("last")
        return "early_stopped" if self._should_stop_early() else "completed"

    def _settle(self) -> None:
        """Read the pending steps' losses (one host sync); record, log and report each step."""
        log_every = self.cfg.logging.log_every
        for r, value in self.pending.read():
            self.step_times.append(r.seconds)
            self.losses.append(value)
            if r.step % log_every == 0 or r.step == 1:
                self._log({"step": r.step, "epoch": r.epoch, "train_loss": value, "lr": r.lr,
                           "step_ms": r.seconds * 1e3})
            emit(self.callbacks, StepEnd(r.step, r.epoch, value, r.lr, r.seconds, r.rows))

    def _fail(self, error: NumericalError, start: float) -> None:
        """A non-finite loss: write the failed summary (the last good checkpoint stays)."""
        summary = self._summary("failed", time.perf_counter() - start, error=str(error))
        self._write_summary(summary)
        raise error

    # ----- the summary -----------------------------------------------------------------------
    def _summary(self, status: str, seconds: float, error: str | None = None) -> RunSummary:
        exp, p, cfg = self.exp, self.progress, self.cfg
        times = self.step_times[WARMUP_STEPS:] or self.step_times
        arrays = {k: v.numpy() for k, v in exp.model.state_dict().items()}
        final: dict[str, float | None] = {"train_loss": self.losses[-1] if self.losses else None}
        if status != "failed":
            final.update(p.last_eval or {})
            if exp.bundle.test is not None:
                final.update(evaluate_split(exp, "test"))
        traces = {name: getattr(exp, name).trace_count for name in ("train_step", "eval_step")
                  if hasattr(getattr(exp, name), "trace_count")}
        es = cfg.train.early_stopping
        return RunSummary(
            name=cfg.name, status=status, mode=cfg.mode, device=exp.device, dtype=cfg.dtype,
            seed=cfg.seed, steps=p.step, epochs=p.epoch, final=final,
            best=BestMetric(es.metric if es else "val_loss", p.best, p.best_step),
            step_time_ms=StepTimes(
                median=statistics.median(times) * 1e3 if times else None,
                mean=statistics.fmean(times) * 1e3 if times else None,
                warmup_steps_excluded=min(WARMUP_STEPS, len(self.step_times))),
            samples_per_second=(cfg.train.step_batch_size / statistics.median(times)
                                if times else None),
            trace_counts=traces,
            loss_reads_per_step=self.pending.reads / max(len(self.step_times), 1),
            distributed=parallel.communication(exp.parallel, WARMUP_STEPS),
            num_parameters=exp.model.num_parameters(),
            parameters_sha256=ckpt.parameters_hash(arrays),
            wall_seconds=seconds,
            run_dir=str(self.run_dir) if self.run_dir else None,
            versions={"dlrun": dlrun.__version__, "numpy": np.__version__,
                      "python": platform.python_version()},
            error=error or None)

    def _write_summary(self, summary: RunSummary) -> None:
        if self.write and self.run_dir:
            write_summary(self.run_dir, summary)
            if self.tensorboard is not None:
                self.tensorboard.finish(self.cfg, summary)
            if self.cfg.logging.plots:
                from dlrun.runner.io.plots import plot_metrics

                plot_metrics(self.run_dir)


def train(cfg: ExperimentConfig, callbacks: list[Callback] | None = None,
          runs_dir: Path | str | None = None, world: World | None = None) -> RunSummary:
    """Train the experiment described by cfg in a new run directory; returns the summary.
    On several ranks (`world`) every rank trains on rank 0's config and initial state, and
    only rank 0 writes the run directory."""
    main = world is None or world.is_main
    if world is not None:
        cfg = validate_config(world.bcast_json(config_to_dict(cfg) if main else None), "rank 0")
    root = Path(runs_dir if runs_dir is not None else cfg.logging.dir)
    tensorboard.require(cfg)  # a missing optional extra fails before the run directory exists
    trainer = Trainer(cfg, callbacks if main else None, run_dir=None, write=main, world=world)
    trainer.share_state()
    if main:
        run_dir = create_run_dir(root, cfg.name)
        trainer.run_dir = run_dir
        trainer.logger = MetricsLogger(run_dir)
        dump_config(resolved_config(cfg, trainer.exp.bundle.meta), run_dir / "config.yaml")
        announce_run_dir(run_dir)
    return trainer.run()


def resume(run_dir: Path | str, callbacks: list[Callback] | None = None,
           world: World | None = None) -> RunSummary:
    """Continue a run from its last checkpoint, in its own run directory (with any number of
    ranks: the config, the batch and the checkpoint are global)."""
    main = world is None or world.is_main
    config = None
    if main:
        run_dir, config_path = find_run_config(run_dir)
        config = config_to_dict(load_config(config_path))
    if world is not None:
        config = world.bcast_json(config)
    cfg = validate_config(config, str(run_dir))
    tensorboard.require(cfg)
    trainer = Trainer(cfg, callbacks if main else None, run_dir=Path(run_dir) if main else None,
                      write=main, world=world)
    trainer.resume_from(Path(run_dir) if main else None)
    if main:
        announce_run_dir(Path(run_dir))
    return trainer.run()
