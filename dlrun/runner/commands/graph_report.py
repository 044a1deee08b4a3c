"""`dlrun graph`: trace an experiment's training step and show what each pass did to it."""

from __future__ import annotations

from typing import Any

from dlrun.config import ExperimentConfig
from dlrun.runner.experiment import batch_tensors, build_experiment


def graph_report(cfg: ExperimentConfig, passes: bool = True, world: Any = None) -> dict[str, Any]:
    """The traced training step: the optimized graph (text, DOT) and per-pass statistics; with
    `world` (several ranks), the step of one rank, all-reduce included."""
    exp = build_experiment(cfg.model_copy(update={"mode": "static"}), world=world)
    if not passes:
        import dlrun

        exp.train_step = dlrun.compile(exp.train_step.fn, passes=False)
    xb, yb = next(iter(exp.train_loader))
    exp.train_step(*batch_tensors(exp, xb, yb))
    entry = exp.train_step.last
    record = exp.train_step.traces[-1]
    return {
        "text": str(entry.graph),
        "dot": entry.graph.to_dot(),
        "report": record.report.as_dict(),
        "trace_seconds": record.seconds,
        "plan_source": entry.plan.source,
    }
