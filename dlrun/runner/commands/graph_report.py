"""`dlrun graph`: trace an experiment's training step and show what each pass did to it."""

from __future__ import annotations

from typing import Any

import dlrun
from dlrun.config import ExperimentConfig
from dlrun.runner.experiment import batch_tensors, build_experiment


def graph_report(cfg: ExperimentConfig, passes: bool = True, world: Any = None) -> dict[str, Any]:
    """The traced training step: the optimized graph (text, DOT) and per-pass statistics; with
    `world` (several ranks), the step of one rank, all-reduce included. With gradient
    accumulation the step is two graphs, the micro-step and the update: the report is the
    micro-step's, and `parts` holds both (the text and DOT show both)."""
    exp = build_experiment(cfg.model_copy(update={"mode": "static"}), world=world)
    step = exp.train_step
    accumulating = hasattr(step, "parts")
    if not passes:
        if accumulating:
            step.micro = dlrun.compile(step.micro.fn, passes=False)
            step.update = dlrun.compile(step.update.fn, passes=False)
        else:
            step = exp.train_step = dlrun.compile(step.fn, passes=False)
    xb, yb = next(iter(exp.train_loader))
    step(*batch_tensors(exp, xb, yb))
    if not accumulating:
        return _part(step)
    parts = {name: _part(f) for name, f in step.parts.items()}
    report = dict(parts["micro_step"])
    report["parts"] = parts
    report["text"] = "\n\n".join(f"# {name}\n{p['text']}" for name, p in parts.items())
    report["dot"] = "\n".join(p["dot"] for p in parts.values())
    return report


def _part(compiled: Any) -> dict[str, Any]:
    """One compiled function's last traced graph, its passes and its plan."""
    entry = compiled.last
    record = compiled.traces[-1]
    return {
        "text": str(entry.graph),
        "dot": entry.graph.to_dot(),
        "report": record.report.as_dict(),
        "trace_seconds": record.seconds,
        "plan_source": entry.plan.source,
    }
