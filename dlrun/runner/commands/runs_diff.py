"""`dlrun runs diff`: runs side by side. The config keys that differ, the final and best metrics
with the best run marked, and one PNG overlaying their training and validation curves.

It reads run directories of any dlrun version (summary.json through RunSummary.from_json, the
curves from metrics.jsonl; a run without a summary is compared on its last records), and a sweep
folder stands for its top trials. It writes the PNG only, never inside a compared run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dlrun.errors import CheckpointError
from dlrun.runner.commands.runs import NO_SUMMARY, higher_is_better, read_config
from dlrun.runner.io.metrics_log import read_metrics, read_run_summary, read_summary
from dlrun.runner.io.plots import NOT_PLOTTED, panel_chart
from dlrun.runner.io.rundir import find_run
from dlrun.runner.records import RunSummary
from dlrun.runner.sweep.report import is_sweep_dir, read_trials_csv

DEFAULT_TOP = 3
_STAMP = re.compile(r"^\d{8}-\d{6}-")
# A run's task, told by its metric names (a language model also reports accuracy).
_TASKS = (("language model", ("perplexity", "bpc")), ("regression", ("mse", "mae", "r2")),
          ("classification", ("accuracy",)))


@dataclass
class DiffRun:
    """One compared run: its label, folder, flattened config, summary and metrics records."""

    label: str
    path: Path
    config: dict[str, Any]
    summary: RunSummary | None
    records: list[dict[str, Any]]

    @property
    def final(self) -> dict[str, Any]:
        """The final metrics: summary.json's, else the last value of each key of metrics.jsonl."""
        if self.summary is not None and self.summary.final:
            return dict(self.summary.final)
        last: dict[str, Any] = {}
        for rec in self.records:
            last.update({k: v for k, v in rec.items() if k not in NOT_PLOTTED and _num(v)})
        return {k: v for k, v in last.items() if k not in ("lr", "step_ms")}

    @property
    def task(self) -> str | None:
        keys = set(self.final) | {k for r in self.records for k in r}
        for task, suffixes in _TASKS:
            if any(k.endswith(f"_{s}") for k in keys for s in suffixes):
                return task
        return None


def diff_runs(runs: Sequence[Path | str], root: Path | str = "runs", out: Path | str | None = None,
              top: int = DEFAULT_TOP, plot: bool = True) -> dict[str, Any]:
    """Compare RUNS (folders, names under `root`, or one sweep folder: its `top` trials).

    Returns plain data: the runs, the differing config keys, the metrics side by side, the best
    run and the PNG's path (None when `plot` is off or nothing was logged); CheckpointError
    for fewer than two runs, an unknown one, runs of different tasks or `out` inside a run.
    """
    dirs, labels, sweep = resolve(runs, root, top)
    compared = [DiffRun(label, d, flatten(read_config(d)), read_run_summary(d), read_metrics(d))
                for label, d in zip(labels, dirs, strict=True)]
    check_tasks(compared)
    best = sweep_best(sweep) if sweep is not None else best_run(compared)
    target = Path(out) if out is not None else default_out(dirs, sweep)
    _check_outside(target, dirs)
    return {
        "runs": [{"label": r.label, "path": str(r.path), "task": r.task,
                  "status": r.summary.status if r.summary else NO_SUMMARY,
                  "steps": r.summary.steps if r.summary else _last_step(r.records)}
                 for r in compared],
        "sweep": None if sweep is None else str(sweep),
        "config": differing(compared),
        "metrics": metrics_side_by_side(compared),
        "best": None if best is None else {**best, "label": compared[best["index"]].label},
        "plot": str(plot_curves(compared, target)) if plot else None,
    }


def resolve(runs: Sequence[Path | str], root: Path | str, top: int
            ) -> tuple[list[Path], list[str], Path | None]:
    """(run folders, their labels, the sweep folder when RUNS is one sweep)."""
    if top < 2:
        raise CheckpointError(f"--top: expected a number >= 2, got {top}")
    base = root if Path(root).is_dir() else None
    found = [find_run(r, base) for r in runs]
    sweeps = [p for p in found if is_sweep_dir(p)]
    if sweeps and len(found) > 1:
        raise CheckpointError(f"{sweeps[0]}: a sweep folder; give it alone to compare its top "
                              "trials, or give the trials' run folders")
    if sweeps:
        dirs, labels = sweep_trials(sweeps[0], top)
    else:
        dirs, labels = found, labels_of(found)
    if len(dirs) < 2:
        what = f"{sweeps[0]} has {len(dirs)} finished trial(s)" if sweeps else "one run given"
        raise CheckpointError(f"runs diff compares two runs or more: {what}")
    return dirs, labels, sweeps[0] if sweeps else None


def sweep_trials(folder: Path, top: int) -> tuple[list[Path], list[str]]:
    """The run folders of a sweep's `top` best complete trials, best first."""
    rows = read_trials_csv(folder, read_summary(folder) or {})
    dirs, labels = [], []
    for row in (r for r in rows if r.state == "complete"):
        candidates = [Path(row.run_dir)] if row.run_dir else []
        candidates.append(folder / "trials" / f"{row.number:04d}")  # the folder moved
        path = next((p for p in candidates if p.is_dir()), None)
        if path is not None and len(dirs) < top:
            dirs.append(path)
            labels.append(f"trial {row.number}")
    return dirs, labels


def labels_of(dirs: Sequence[Path]) -> list[str]:
    """Short unique labels: the run names, numbered `name#1`, `name#2` (in the order given)
    where names repeat; the output lists each label's folder."""
    names = [_STAMP.sub("", d.name) or d.name for d in dirs]
    return [f"{n}#{i + 1}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def check_tasks(runs: Sequence[DiffRun]) -> None:
    """Refuse runs of different tasks (their metrics do not compare)."""
    known = [r for r in runs if r.task is not None]
    other = next((r for r in known if r.task != known[0].task), None)
    if other is not None:
        raise CheckpointError(f"runs diff: {known[0].label} is a {known[0].task} run but "
                              f"{other.label} is a {other.task} run; compare runs of one task")


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


_ABSENT = object()


def differing(runs: Sequence[DiffRun]) -> list[dict[str, Any]]:
    """The config keys whose values are not all equal (a key a run lacks is None there)."""
    keys = list(dict.fromkeys(k for r in runs for k in r.config))
    rows = []
    for key in keys:
        values = [r.config.get(key, _ABSENT) for r in runs]
        if any(v != values[0] for v in values[1:]):
            rows.append({"key": key, "values": [None if v is _ABSENT else v for v in values],
                         "absent": [v is _ABSENT for v in values]})
    return rows


def metrics_side_by_side(runs: Sequence[DiffRun]) -> list[dict[str, Any]]:
    """One row per final metric, then the best value of each run's watched metric."""
    names = list(dict.fromkeys(k for r in runs for k in r.final))
    rows = [{"kind": "final", "metric": n, "values": [r.final.get(n) for r in runs]}
            for n in names]
    watched = {r.summary.best.metric for r in runs
               if r.summary and r.summary.best.value is not None}
    for metric in sorted(watched):
        bests = [r.summary.best if r.summary and r.summary.best.metric == metric else None
                 for r in runs]
        rows.append({"kind": "best", "metric": metric,
                     "values": [b.value if b else None for b in bests],
                     "steps": [b.step if b else None for b in bests]})
    return rows


def best_run(runs: Sequence[DiffRun]) -> dict[str, Any] | None:
    """The best run ({index, metric, goal}): by the best value of the metric they all watch,
    else by their first shared validation metric (higher is better for accuracy and r2)."""
    watched = {r.summary.best.metric if r.summary else None for r in runs}
    if len(watched) == 1 and None not in watched:
        metric = watched.pop()
        values = [r.summary.best.value if r.summary else None for r in runs]
        kind = "best"
    else:
        shared = [k for k in runs[0].final if all(k in r.final for r in runs[1:])]
        metric = next((k for k in shared if k.startswith(("val_", "test_"))),
                      shared[0] if shared else None)
        values = [r.final.get(metric) if metric else None for r in runs]
        kind = "final"
    scored = [(v, i) for i, v in enumerate(values) if _num(v) and math.isfinite(v)]
    if metric is None or not scored:
        return None
    high = higher_is_better(metric)
    index = min(scored, key=lambda vi: (-vi[0] if high else vi[0], vi[1]))[1]
    return {"index": index, "metric": f"{kind} {metric}", "goal": "highest" if high else "lowest"}


def sweep_best(folder: Path) -> dict[str, Any]:
    """A sweep's trials come best first, by the sweep's own metric and goal."""
    summary = read_summary(folder) or {}
    goal = "highest" if summary.get("goal") == "maximize" else "lowest"
    return {"index": 0, "metric": f"sweep {summary.get('metric', 'metric')}", "goal": goal}


def default_out(dirs: Sequence[Path], sweep: Path | None) -> Path:
    """runs/diff-<stamp>.png: beside the sweep folder, or beside the first run."""
    folder = sweep.parent if sweep is not None else dirs[0].resolve().parent
    return folder / f"diff-{datetime.now().strftime('%Y%m%d-%H%M%S')}.png"


def _check_outside(target: Path, dirs: Sequence[Path]) -> None:
    where = target.resolve()
    for d in dirs:
        if where.is_relative_to(d.resolve()):
            raise CheckpointError(f"--out {target}: inside the compared run {d}; runs diff "
                                  "never writes into a run")
    if where.suffix.lower() != ".png":
        raise CheckpointError(f"--out {target}: expected a .png file name")


def plot_curves(runs: Sequence[DiffRun], path: Path) -> Path:
    """One PNG: training loss, validation loss and the headline validation metric of each run,
    against the step."""
    keys = list(dict.fromkeys(k for r in runs for rec in r.records for k in rec))
    val = [k for k in keys if k.startswith("val_") and k != "val_loss"]
    panels = []
    for key in ("train_loss", "val_loss", *val[:1]):
        series = {r.label: _curve(r.records, key) for r in runs}
        series = {name: xy for name, xy in series.items() if xy[0]}
        if series:
            panels.append((key, series, key))
    if not panels:
        raise CheckpointError(f"runs diff: no curves to draw (no train_loss or val_ metrics in "
                              f"the runs' metrics.jsonl); {path} not written")
    path.parent.mkdir(parents=True, exist_ok=True)
    return panel_chart(path, panels, xlabel="step")


def _curve(records: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for index, rec in enumerate(records):
        x, y = rec.get("step", index), rec.get(key)
        if _num(x) and _num(y):
            xs.append(float(x))
            ys.append(float(y))
    return xs, ys


def _last_step(records: Sequence[Mapping[str, Any]]) -> int | None:
    steps = [r["step"] for r in records if isinstance(r.get("step"), int)]
    return max(steps) if steps else None


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
