"""What a command reports while it goes: events sent to callbacks (the CLI draws them; tests record
them). The runner never prints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlrun.runner.records import RunSummary, TrialRecord


@dataclass(frozen=True)
class RunStarted:
    run_dir: Path | None
    name: str
    mode: str
    device: str
    num_parameters: int
    steps_per_epoch: int
    total_steps: int
    start_step: int = 0


@dataclass(frozen=True)
class StepEnd:
    step: int
    epoch: int
    loss: float
    lr: float
    seconds: float
    samples: int


@dataclass(frozen=True)
class EvalEnd:
    step: int
    epoch: int
    split: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class EpochEnd:
    epoch: int
    step: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class Checkpointed:
    step: int
    tag: str
    path: Path


@dataclass(frozen=True)
class DownloadProgress:
    """Bytes of a dataset file fetched so far (total None when the server does not say)."""

    done: int
    total: int | None


@dataclass(frozen=True)
class Message:
    """Something worth telling the user that is not an error (early stop, retrace, resume)."""

    text: str
    level: str = "info"


@dataclass(frozen=True)
class RunFinished:
    status: str  # "completed" | "early_stopped" | "interrupted" | a StopRun's status
    summary: RunSummary | None = None


@dataclass(frozen=True)
class SweepStarted:
    folder: Path
    note: str  # continuing / fresh, and why
    study: str
    storage: str
    trials: int
    workers: int
    metric: str
    goal: str
    parameters: list[str]


@dataclass(frozen=True)
class SweepProgress:
    """The trials as the storage has them now (rows of sweep.report.trial_rows)."""

    rows: list[TrialRecord]
    metric: str
    goal: str
    trials: int


@dataclass(frozen=True)
class SweepFinished:
    """The sweep's summary (summary.json of the sweep folder) and its trials, best first."""

    summary: dict[str, Any]
    rows: list[TrialRecord] = field(default_factory=list)


class StopRun(Exception):
    """Raised by a callback to end the run early and cleanly (a sweep prunes a trial): the run
    saves its last checkpoint and writes its summary with this `status`."""

    def __init__(self, status: str, reason: str = "") -> None:
        super().__init__(reason or status)
        self.status = status
        self.reason = reason


Event = (RunStarted | StepEnd | EvalEnd | EpochEnd | Checkpointed | DownloadProgress | Message
         | RunFinished | SweepStarted | SweepProgress | SweepFinished)
Callback = Callable[[Event], None]


def emit(callbacks: list[Callback], event: Event) -> None:
    for cb in callbacks:
        cb(event)
