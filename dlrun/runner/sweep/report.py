"""What a sweep leaves in its folder, from the study's trials: trials.csv, best.yaml (the best
trial's full config, trainable as it is), summary.json and Optuna's matplotlib plots.

Also the rows of the live table and of `dlrun runs show SWEEP`: one per trial, ranked.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path
from typing import Any

from dlrun.atomic import atomic_write_text
from dlrun.config import SweepConfig, dump_config
from dlrun.runner.io.metrics_log import write_summary
from dlrun.runner.records import TrialRecord
from dlrun.runner.sweep.space import decoded_params, trial_config
from dlrun.runner.sweep.study import finished, is_interrupted

SWEEP_JSON = "sweep.json"  # marks a sweep folder
TRIALS_CSV = "trials.csv"
BEST_YAML = "best.yaml"
PLOTS_DIR = "plots"
_STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
           "WAITING": "waiting"}


def trial_rows(trials: list[Any], sweep: SweepConfig) -> list[TrialRecord]:
    """One record per trial, in trial order."""
    rows = []
    for t in trials:
        state = "interrupted" if is_interrupted(t) else _STATES.get(t.state.name, t.state.name)
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        value = t.value if t.state.name == "COMPLETE" else (
            _last_intermediate(t) if t.state.name == "PRUNED" else None)
        rows.append(TrialRecord(t.number, state, decoded_params(sweep, t.params), value, seconds,
                                t.user_attrs.get("run_dir"), t.user_attrs.get("error")))
    return rows


def _last_intermediate(t: Any) -> float | None:
    if not t.intermediate_values:
        return None
    return t.intermediate_values[max(t.intermediate_values)]


def ranked(rows: list[TrialRecord], goal: str) -> list[TrialRecord]:
    """Complete trials best first, then pruned (by their last value), then the rest."""
    order = {"complete": 0, "pruned": 1, "running": 2, "failed": 3, "interrupted": 4}
    sign = 1.0 if goal == "minimize" else -1.0

    def key(r: TrialRecord) -> tuple[int, float, int]:
        v = r.value
        good = v is not None and math.isfinite(v)
        return order.get(r.state, 5), sign * v if good else math.inf, r.number

    return sorted(rows, key=key)


def best_row(rows: list[TrialRecord], goal: str) -> TrialRecord | None:
    complete = [r for r in ranked(rows, goal) if r.state == "complete"]
    return complete[0] if complete else None


def write_trials_csv(folder: Path, rows: list[TrialRecord], sweep: SweepConfig) -> Path:
    names = list(sweep.parameters)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["number", "state", *names, sweep.metric, "duration_s", "run_dir", "error"])
    for r in rows:
        writer.writerow([r.number, r.state, *(_cell(r.params.get(n)) for n in names),
                         _cell(r.value), _cell(r.seconds), r.run_dir or "", r.error or ""])
    return atomic_write_text(folder / TRIALS_CSV, out.getvalue())


def _cell(v: Any) -> str:
    if v is None:
        return ""
    return str(list(v)) if isinstance(v, list | tuple) else str(v)


def write_reports(folder: Path, study: Any, sweep: SweepConfig, base: dict[str, Any],
                  facts: dict[str, Any], plots: bool = True) -> dict[str, Any]:
    """trials.csv, best.yaml, summary.json and (with `plots`) the PNGs; returns the summary."""
    trials = study.get_trials(deepcopy=False)
    rows = trial_rows(trials, sweep)
    write_trials_csv(folder, rows, sweep)
    best = best_row(rows, sweep.goal)
    if best is not None:
        cfg = trial_config(base, best.params, source=f"trial {best.number}")
        dump_config(cfg, folder / BEST_YAML)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    done = finished(trials)
    summary = {
        **facts, "kind": "sweep", "metric": sweep.metric, "goal": sweep.goal,
        "sampler": sweep.sampler, "pruner": sweep.pruner.name,
        "finished": done, "states": counts,
        "status": facts.get("status") or ("completed" if done >= facts["trials"] else "running"),
        "best": None if best is None else {
            "number": best.number, "value": best.value, "params": best.params,
            "run_dir": best.run_dir, "config": str(folder / BEST_YAML)},
    }
    if plots:
        summary["plots"] = write_plots(folder, study)
    write_summary(folder, summary)
    return summary


def write_plots(folder: Path, study: Any) -> list[str]:
    """Optimization history and (with 2+ complete trials) parameter importances, as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    made = []
    jobs = [("optimization_history.png", ovm.plot_optimization_history, 1),
            ("param_importances.png", ovm.plot_param_importances, 2)]
    for name, plot, needed in jobs:
        if len(complete) < needed:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's "experimental" warnings
            try:
                ax = plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # e.g. importances of a parameter that never varied
        path = folder / PLOTS_DIR / name
        path.parent.mkdir(exist_ok=True)
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        made.append(str(path))
    return made


# --------------------------------------------------------------------------- reading a sweep back


def is_sweep_dir(path: Path) -> bool:
    return (Path(path) / SWEEP_JSON).is_file()


def read_trials_csv(folder: Path, summary: dict[str, Any]) -> list[TrialRecord]:
    """trials.csv as rows (parameters as written), ranked best first (no Optuna needed)."""
    try:
        text = (folder / TRIALS_CSV).read_text(encoding="utf-8")
    except OSError:
        return []
    metric = summary.get("metric", "")
    rows = []
    for rec in csv.DictReader(io.StringIO(text)):
        fixed = ("number", "state", metric, "duration_s", "run_dir", "error")
        rows.append(TrialRecord(
            int(rec["number"]), rec["state"],
            {k: v if _float(v) is None else _float(v) for k, v in rec.items() if k not in fixed},
            _float(rec.get(metric)), _float(rec.get("duration_s")), rec.get("run_dir") or None,
            rec.get("error") or None))
    return ranked(rows, summary.get("goal", "minimize"))


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None
