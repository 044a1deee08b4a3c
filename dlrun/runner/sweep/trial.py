"""One sweep trial: an ordinary run directory under `<sweep>/trials/<NNNN>/`, trained with the
trial's values, reporting the metric at each evaluation so the pruner can stop it early.

The trial's outcome goes to Optuna: COMPLETE with the metric, PRUNED (the run directory's
summary says status "pruned"), or FAIL with the error (a NaN loss, an impossible combination);
Ctrl-C marks it interrupted and queues its values again, then stops the worker.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from dlrun.config import ExperimentConfig, SweepConfig, dump_config
from dlrun.errors import DlrunError
from dlrun.runner.events import Callback, EpochEnd, EvalEnd, Event, StopRun
from dlrun.runner.io import tensorboard
from dlrun.runner.io.metrics_log import read_summary, write_summary
from dlrun.runner.io.rundir import CHECKPOINTS_DIR, CONFIG_FILE, PLOTS_DIR
from dlrun.runner.records import RunSummary
from dlrun.runner.sweep.space import suggest, trial_config
from dlrun.runner.train import Trainer

TRIALS_DIR = "trials"


def trial_dir(folder: Path, number: int) -> Path:
    return folder / TRIALS_DIR / f"{number:04d}"


def train_in(cfg: ExperimentConfig, run_dir: Path,
             callbacks: list[Callback] | None = None) -> RunSummary:
    """`train` into a given (new) run directory instead of a time-stamped one."""
    tensorboard.require(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CHECKPOINTS_DIR).mkdir(exist_ok=True)
    (run_dir / PLOTS_DIR).mkdir(exist_ok=True)
    trainer = Trainer(cfg, callbacks, run_dir=run_dir)
    dump_config(cfg, run_dir / CONFIG_FILE)
    return trainer.run()


class Reporter:
    """Reports the metric to the Optuna trial at each evaluation (step = evaluation count) and
    stops the run with StopRun("pruned") when the pruner says so."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial = trial
        self.metric = metric
        self.evals = 0
        self.last: float | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, EvalEnd):
            value = event.metrics.get(self.metric)
        elif isinstance(event, EpochEnd) and self.metric == "train_loss":
            value = event.metrics.get("epoch_train_loss")
        else:
            return
        if value is None or not math.isfinite(value):
            return
        self.evals += 1
        self.last = float(value)
        self.trial.report(self.last, self.evals)
        if self.trial.should_prune():
            raise StopRun("pruned", f"pruned at evaluation {self.evals}: {self.metric} "
                                    f"{self.last:.4g} is worse than the other trials'")


def run_trial(study: Any, trial: Any, folder: Path, sweep: SweepConfig,
              base: dict[str, Any]) -> str:
    """Run one claimed trial to its end and tell the study; returns its final state name."""
    from optuna.trial import TrialState

    run_dir = trial_dir(folder, trial.number)
    trial.set_user_attr("run_dir", str(run_dir.resolve()))
    reporter = Reporter(trial, sweep.metric)
    start = time.perf_counter()
    try:
        cfg = trial_config(base, suggest(trial, sweep), source=f"trial {trial.number}")
        summary = train_in(cfg, run_dir, callbacks=[reporter])
    except KeyboardInterrupt:
        _interrupted(study, trial)
        raise
    except (DlrunError, ArithmeticError, MemoryError, ValueError) as e:
        return _failed(study, trial, run_dir, str(e) or type(e).__name__)
    trial.set_user_attr("seconds", time.perf_counter() - start)
    if summary.status == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
        return "PRUNED"
    if summary.status == "interrupted":
        _interrupted(study, trial)
        raise KeyboardInterrupt
    value = summary.final.get(sweep.metric, reporter.last)
    if value is None or not math.isfinite(value):
        return _failed(study, trial, run_dir, f"{sweep.metric} is {value} at the end of the run")
    study.tell(trial, float(value))
    return "COMPLETE"


def _failed(study: Any, trial: Any, run_dir: Path, error: str) -> str:
    from optuna.trial import TrialState

    trial.set_user_attr("error", error.splitlines()[0][:500])
    if read_summary(run_dir) is None:  # failed before training: the run dir still says why
        write_summary(run_dir, RunSummary(run_dir.name, "failed", error=error))
    study.tell(trial, state=TrialState.FAIL)
    return "FAIL"


def _interrupted(study: Any, trial: Any) -> None:
    """Ctrl-C: the trial does not count; its values run again when the sweep goes on."""
    from optuna.trial import TrialState

    trial.set_user_attr("interrupted", True)
    trial.set_user_attr("error", "interrupted (Ctrl-C); its parameters run again")
    params = dict(trial.params)
    study.tell(trial, state=TrialState.FAIL)
    study.enqueue_trial(params, user_attrs={"rerun_of": trial.number})
