"""`dlrun runs`: the run directories under a folder, as table rows, and one run in detail.

A run's facts come from its summary.json when it has one (written when a run ends, however it
ends); a run without one is still going or was killed, and shows the status "running/crashed",
with the mode and device of its config.yaml and the step of its last metrics record.
"""

from __future__ import annotations

import fnmatch
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from dlrun.config.messages import did_you_mean
from dlrun.errors import CheckpointError, ConfigError
from dlrun.runner.io.metrics_log import read_metrics, read_run_summary, read_summary
from dlrun.runner.io.rundir import (
    CHECKPOINTS_DIR,
    CONFIG_FILE,
    PLOTS_DIR,
    find_run,
    list_runs,
)
from dlrun.runner.sweep.report import is_sweep_dir, read_trials_csv

NO_SUMMARY = "running/crashed"
_STAMP = re.compile(r"^(\d{8}-\d{6})-(.*)$")
# The headline metric of a run's final metrics, by task: accuracy, perplexity, MSE, else loss.
_MAIN_METRICS = tuple(f"{split}_{name}" for name in ("accuracy", "perplexity", "mse", "loss")
                      for split in ("test", "val")) + ("train_loss",)


def run_date(run_dir: Path) -> datetime:
    """When the run started: its folder's time stamp, else the folder's modification time."""
    m = _STAMP.match(run_dir.name)
    if m:
        try:
            return datetime.strptime(m.group(1), "%Y%m%d-%H%M%S")
        except ValueError:
            pass
    return datetime.fromtimestamp(run_dir.stat().st_mtime)


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run's config.yaml as data; {} when it has none or it cannot be read."""
    try:
        data = yaml.safe_load((run_dir / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _main_metric(final: dict[str, Any]) -> tuple[str | None, Any]:
    """The headline metric among a run's final metrics (test before val), and its value."""
    for key in _MAIN_METRICS:
        if final.get(key) is not None:
            return key, final[key]
    return None, None


def run_row(run_dir: Path) -> dict[str, Any]:
    """One run as a table row: name, date, mode, device, status, steps, best and main metric."""
    summary = read_run_summary(run_dir)
    config = read_config(run_dir)
    m = _STAMP.match(run_dir.name)
    row: dict[str, Any] = {
        "run": run_dir.name, "path": str(run_dir),
        "name": ((summary.name if summary else "") or config.get("name")
                 or (m.group(2) if m else "")),
        "date": run_date(run_dir).isoformat(sep=" "),
    }
    if summary is not None:
        metric, value = _main_metric(summary.final)
        row.update(mode=summary.mode, device=summary.device, status=summary.status,
                   steps=summary.steps, final=dict(summary.final), best_metric=summary.best.metric,
                   best_value=summary.best.value, main_metric=metric, main_value=value)
    else:
        records = read_metrics(run_dir)
        steps = [r["step"] for r in records if isinstance(r.get("step"), int)]
        row.update(mode=config.get("mode"), device=config.get("device"), status=NO_SUMMARY,
                   steps=max(steps) if steps else None, final={}, best_metric=None,
                   best_value=None,
                   main_metric=None, main_value=None)
    return row


def _check_root(root: Path | str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"{root}: no such runs folder")
    return root


STATUSES = ("completed", "early_stopped", "failed", "interrupted", "pruned", NO_SUMMARY)


def list_runs_table(root: Path | str, name: str | None = None, status: str | None = None,
                    last: int | None = None, sort: str | None = None) -> list[dict[str, Any]]:
    """A row per run under `root` (see `run_row`), newest first; CheckpointError if no folder.

    `name`: a glob matched against the run's name or folder name; `status`: one of STATUSES;
    `last`: only the N newest (of those matched); `sort`: best first by that final metric
    (higher first for accuracy and r2, lower first for the rest; runs without it last).
    """
    if status is not None and status not in STATUSES:
        raise ConfigError(f"--status: expected one of {', '.join(STATUSES)}, got {status!r}"
                          + did_you_mean(status, STATUSES))
    if last is not None and last < 1:
        raise ConfigError(f"--last: expected a number >= 1, got {last}")
    runs = sorted(list_runs(_check_root(root)), key=_start_key, reverse=True)
    rows = [sweep_row(p) if is_sweep_dir(p) else run_row(p) for p in runs]
    if name is not None:
        rows = [r for r in rows if fnmatch.fnmatchcase(str(r["name"]), name)
                or fnmatch.fnmatchcase(r["run"], name)]
    if status is not None:
        rows = [r for r in rows if r["status"] == status]
    rows = rows[:last] if last is not None else rows
    return rows if sort is None else sort_rows(rows, sort)


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of `metric` is better (accuracy, r2), as for early stopping."""
    return metric.endswith(("accuracy", "r2"))


def sort_rows(rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """`rows` best first by their final `metric`; rows without it keep their order, last."""
    known = {k for r in rows for k in r.get("final") or {}}
    if rows and metric not in known:
        raise ConfigError(f"--sort: no run here has the final metric {metric!r}"
                          + (did_you_mean(metric, sorted(known))
                             or f"; they have: {', '.join(sorted(known)) or 'none'}"))
    sign = -1.0 if higher_is_better(metric) else 1.0

    def key(row: dict[str, Any]) -> float:
        v = (row.get("final") or {}).get(metric)
        return sign * v if isinstance(v, int | float) and math.isfinite(v) else math.inf

    return sorted(rows, key=key)


def sweep_row(folder: Path) -> dict[str, Any]:
    """A sweep folder as a `dlrun runs` row: its status, finished trials and best metric."""
    summary = read_summary(folder) or {}
    best = summary.get("best") or {}
    return {"run": folder.name, "path": str(folder), "name": summary.get("name", folder.name),
            "date": run_date(folder).isoformat(sep=" "), "mode": "sweep", "device": None,
            "status": summary.get("status", NO_SUMMARY), "steps": None,
            "final": {}, "best_metric": summary.get("metric"), "best_value": best.get("value"),
            "main_metric": "trials",
            "main_value": f"{summary.get('finished', 0)}/{summary.get('trials', '?')}"}


def show_sweep(folder: Path) -> dict[str, Any]:
    """One sweep in detail: its row, summary and the trials ranked best first."""
    summary = read_summary(folder) or {}
    return {**sweep_row(folder), "kind": "sweep", "summary": summary,
            "ranked": read_trials_csv(folder, summary)}


def _start_key(run_dir: Path) -> tuple[datetime, float, str]:
    # The stamp has whole seconds; config.yaml is written once, when the run starts.
    try:
        started = (run_dir / CONFIG_FILE).stat().st_mtime
    except OSError:
        started = 0.0
    return run_date(run_dir), started, run_dir.name


def show_run(path_or_name: Path | str, root: Path | str = "runs",
             last_metrics: int = 5) -> dict[str, Any]:
    """One run in detail: its row, resolved config, summary, last metrics, checkpoints, plots.

    `path_or_name` is a run folder, a checkpoint in one, or (a unique part of) a folder name
    under `root`; an unknown run raises CheckpointError.
    """
    run_dir = find_run(path_or_name, root if Path(root).is_dir() else None)
    if is_sweep_dir(run_dir):
        return show_sweep(run_dir)
    records = read_metrics(run_dir)
    return {
        **run_row(run_dir),
        "config": read_config(run_dir),
        "summary": summary.to_json() if (summary := read_run_summary(run_dir)) else None,
        "metrics": records[-last_metrics:] if last_metrics > 0 else [],
        "metrics_records": len(records),
        "checkpoints": _files(run_dir / CHECKPOINTS_DIR),
        "plots": _files(run_dir / PLOTS_DIR),
    }


def _files(folder: Path) -> list[dict[str, Any]]:
    if not folder.is_dir():
        return []
    return [{"name": p.name, "path": str(p), "bytes": p.stat().st_size}
            for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
