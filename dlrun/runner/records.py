"""The typed records passed between the runner, the CLI, `dlrun runs` and sweeps, each with the
JSON it is written as: Progress (in every checkpoint), RunSummary (summary.json) and TrialRecord
(one sweep trial: a row of trials.csv and of the live table).

`from_json` reads what any version wrote: a key an older run lacks takes its default, a key this
version does not know is left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

Metrics = dict[str, float | None]


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass
class Progress:
    """The trainer's counters: where the run is, its best evaluation, the early-stopping count."""

    step: int = 0
    epoch: int = 0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    last_eval: Metrics = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "best": self.best,
                "best_step": self.best_step, "bad_evals": self.bad_evals,
                "last_eval": dict(self.last_eval)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Progress:
        known = _known(cls, data)
        known["last_eval"] = dict(known.get("last_eval") or {})
        return cls(**known)


@dataclass(frozen=True)
class BestMetric:
    """The best value of the metric early stopping (or val_loss) watches, and its step."""

    metric: str = "val_loss"
    value: float | None = None
    step: int | None = None


@dataclass(frozen=True)
class StepTimes:
    """Median and mean step time in ms, the first warm-up steps left out."""

    median: float | None = None
    mean: float | None = None
    warmup_steps_excluded: int = 0


@dataclass(frozen=True)
class Communication:
    """Per-step all-reduce facts of a data-parallel run."""

    backend: str
    workers: int
    all_reduce_ms: float | None = None  # per step, the time a rank waited for it (not hidden)
    all_reduce_bytes: int = 0
    all_reduces_per_step: int = 1
    hosts: dict[str, list[int]] | None = None  # host name -> its ranks (None: one machine)
    overlapped: float | None = None  # share of the all-reduce time hidden behind the backward


@dataclass(frozen=True)
class RunSummary:
    """What a run ended with: summary.json. Written when a run ends, however it ends."""

    name: str
    status: str  # "completed" | "early_stopped" | "interrupted" | "failed" | "pruned"
    mode: str | None = None
    device: str | None = None
    dtype: str | None = None
    seed: int | None = None
    steps: int | None = None
    epochs: int | None = None
    final: Metrics = field(default_factory=dict)
    best: BestMetric = field(default_factory=BestMetric)
    step_time_ms: StepTimes = field(default_factory=StepTimes)
    samples_per_second: float | None = None
    trace_counts: dict[str, int] = field(default_factory=dict)
    loss_reads_per_step: float | None = None
    distributed: Communication | None = None
    num_parameters: int | None = None
    parameters_sha256: str | None = None
    wall_seconds: float | None = None
    run_dir: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # written only when set

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "error" and value is None:
                continue
            if isinstance(value, BestMetric | StepTimes | Communication):
                value = {g.name: getattr(value, g.name) for g in fields(value)}
            out[f.name] = dict(value) if isinstance(value, dict) else value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunSummary:
        known = _known(cls, data)
        known.setdefault("name", "")
        known.setdefault("status", "unknown")
        for key in ("final", "trace_counts", "versions"):
            known[key] = dict(known.get(key) or {})
        known["best"] = BestMetric(**_known(BestMetric, known.get("best") or {}))
        known["step_time_ms"] = StepTimes(**_known(StepTimes, known.get("step_time_ms") or {}))
        dist = known.get("distributed")
        known["distributed"] = Communication(**_known(Communication, dist)) if dist else None
        return cls(**known)


@dataclass(frozen=True)
class TrialRecord:
    """One sweep trial as the study has it: a row of trials.csv and of the live table."""

    number: int
    state: str  # "complete" | "pruned" | "failed" | "running" | "waiting" | "interrupted"
    params: dict[str, Any] = field(default_factory=dict)
    value: float | None = None
    seconds: float | None = None
    run_dir: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrialRecord:
        return cls(**_known(cls, data))
