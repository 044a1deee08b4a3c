"""Drawing runner events and results with rich (used by the CLI only)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from dlrun.runner.events import (
    Checkpointed,
    DownloadProgress,
    EpochEnd,
    EvalEnd,
    Event,
    Message,
    RunFinished,
    RunStarted,
    StepEnd,
    SweepProgress,
    SweepStarted,
)
from dlrun.runner.records import RunSummary, TrialRecord


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


class RichView:
    """A progress bar with step, throughput and loss; one line per epoch/evaluation."""

    def __init__(self, console: Console, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self.progress: Progress | None = None
        self.task = None
        self._ema: float | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, DownloadProgress):
            self._download(event)
        elif isinstance(event, RunStarted):
            self.close()
            if not self.quiet:
                where = f" → {event.run_dir}" if event.run_dir else ""
                self.console.print(
                    f"[bold]{event.name}[/]: {event.mode} mode on {event.device}, "
                    f"{event.num_parameters:,} parameters, {event.total_steps} steps{where}")
                self.progress = Progress(
                    TextColumn("[progress.description]{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeRemainingColumn(), console=self.console, transient=True)
                self.progress.start()
                self.task = self.progress.add_task("train", total=event.total_steps,
                                                   completed=event.start_step, info="")
        elif isinstance(event, StepEnd):
            rate = event.samples / event.seconds if event.seconds > 0 else 0.0
            self._ema = rate if self._ema is None else 0.9 * self._ema + 0.1 * rate
            if self.progress is not None:
                self.progress.update(self.task, completed=event.step,
                                     description=f"epoch {event.epoch + 1}",
                                     info=f"loss {event.loss:.4f} · {self._ema:,.0f} samples/s")
        elif isinstance(event, EpochEnd):
            if not self.quiet:
                parts = " ".join(f"{k}={_fmt(v)}" for k, v in event.metrics.items()
                                 if k not in ("epoch", "step") and v is not None)
                self._print(f"epoch {event.epoch} (step {event.step}): {parts}")
        elif isinstance(event, EvalEnd):
            pass  # shown with the epoch line
        elif isinstance(event, Checkpointed):
            pass
        elif isinstance(event, Message):
            if not self.quiet:
                self._print(f"[dim]{event.text}[/]")
        elif isinstance(event, RunFinished):
            self.close()

    def _download(self, event: DownloadProgress) -> None:
        if self.quiet:
            return
        if self.progress is None:
            self.progress = Progress(TextColumn("downloading"), BarColumn(),
                                     DownloadColumn(), console=self.console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task("download", total=event.total)
        self.progress.update(self.task, completed=event.done, total=event.total)

    def _print(self, text: str) -> None:
        (self.progress.console if self.progress else self.console).print(text)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class JsonLinesView:
    """Every event as one JSON object per line (for scripts)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __call__(self, event: Event) -> None:
        data = asdict(event) if is_dataclass(event) else {"value": str(event)}
        data = {"event": type(event).__name__, **data}
        self.stream.write(json.dumps(data, default=_json_default) + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


def _json_default(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    return float(v) if hasattr(v, "__float__") else str(v)


def make_view(console: Console, quiet: bool = False, json_lines: bool = False) -> Any:
    if json_lines:
        import sys

        return JsonLinesView(sys.stdout)
    return RichView(console, quiet=quiet)


def print_summary(console: Console, summary: RunSummary) -> None:
    table = Table(title=f"{summary.name} — {summary.status}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for k, v in summary.final.items():
        if v is not None:
            table.add_row(k, _fmt(v))
    best = summary.best
    if best.value is not None:
        table.add_row(f"best {best.metric}", f"{_fmt(best.value)} (step {best.step})")
    if summary.step_time_ms.median is not None:
        table.add_row("step time (median)", f"{summary.step_time_ms.median:.3f} ms")
    if summary.samples_per_second:
        table.add_row("throughput", f"{summary.samples_per_second:,.0f} samples/s")
    table.add_row("steps", str(summary.steps))
    table.add_row("mode / device", f"{summary.mode} / {summary.device}")
    dist = summary.distributed
    if dist:
        reduce = dist.all_reduce_ms
        hosts = f" on {len(dist.hosts)} hosts" if dist.hosts else ""
        hidden = f" ({dist.overlapped:.0%} hidden)" if dist.overlapped else ""
        table.add_row("workers", f"{dist.workers} ({dist.backend}){hosts}; all-reduce "
                      + (f"{reduce:.3f} ms / step{hidden}, " if reduce is not None else "")
                      + f"{dist.all_reduce_bytes / 1e6:.2f} MB")
    if summary.trace_counts:
        table.add_row("traces", ", ".join(f"{k} {v}" for k, v in summary.trace_counts.items()))
    table.add_row("wall time", f"{summary.wall_seconds or 0:.1f} s")
    if summary.run_dir:
        table.add_row("run", summary.run_dir)
    console.print(table)


def print_eval(console: Console, result: dict[str, Any]) -> None:
    table = Table(title=f"evaluation on the {result['split']} split", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value")
    table.add_row("checkpoint", f"{result['checkpoint']} (step {result['step']})")
    for k, v in result["metrics"].items():
        table.add_row(k, _fmt(v))
    console.print(table)
    confusion = result.get("confusion")
    if confusion is not None and len(confusion) <= 20:
        classes = result.get("classes") or [str(i) for i in range(len(confusion))]
        matrix = Table(title="confusion matrix (rows: true, columns: predicted)")
        matrix.add_column("")
        for c in classes:
            matrix.add_column(c, justify="right")
        for c, row in zip(classes, confusion, strict=True):
            matrix.add_row(c, *[str(v) for v in row])
        console.print(matrix)
    if result.get("sample"):
        console.print("[bold]sample:[/]")
        console.print(result["sample"], markup=False, highlight=False)
    gen = result.get("generation")
    if gen is not None:
        console.print(f"generated {gen['tokens']} characters in {gen['seconds']:.2f} s: "
                      f"{gen['tokens_per_second']:,.0f} tokens/s ({gen['method']}, "
                      f"{gen['mode']})", highlight=False)


def print_export(console: Console, result: dict[str, Any]) -> None:
    """`dlrun export`: what was written where, and how it was verified."""
    console.print(f"exported {result['checkpoint']} to [bold]{result['path']}[/] "
                  f"({result['format']}, opset {result['opset']}, {result['onnx_nodes']} nodes, "
                  f"dynamic axes: {', '.join(result.get('dynamic_axes', ['batch']))})",
                  highlight=False, soft_wrap=True)
    console.print(f"verified with ONNX Runtime on {result['verified_on']} batches of "
                  f"{' and '.join(map(str, result['batch_sizes']))}: max abs error "
                  f"{result['max_abs_error']:.3g}, max rel error {result['max_rel_error']:.3g}",
                  highlight=False, soft_wrap=True)


def print_compare(console: Console, report: dict[str, Any]) -> None:
    from rich.markdown import Markdown

    from dlrun.runner.commands.compare import markdown

    console.print(Markdown(markdown(report)))


def print_graph(console: Console, report: dict[str, Any], full: bool = False) -> None:
    r = report["report"]
    table = Table(title=f"passes (traced in {report['trace_seconds'] * 1e3:.1f} ms)")
    for col in ("pass", "nodes", "compute nodes", "details"):
        table.add_column(col)
    for s in r["passes"]:
        detail = ", ".join(f"{k}={_fmt(v)}" for k, v in s["detail"].items())
        table.add_row(s["name"], f"{s['nodes_before']} → {s['nodes_after']}",
                      f"{s['compute_before']} → {s['compute_after']}", detail)
    console.print(table)
    lines = report["text"].splitlines()
    if not full and len(lines) > 60:
        lines = lines[:30] + [f"... {len(lines) - 50} more nodes (--full) ..."] + lines[-20:]
    console.print("\n".join(lines), highlight=False, markup=False)


def print_gradcheck(console: Console, report: dict[str, Any]) -> None:
    """The per-parameter worst relative errors of `dlrun gradcheck`, eager and static."""
    table = Table(title=f"{report['name']}: gradients vs central differences "
                        f"(float64, batch {report['batch']}, eps {report['eps']:.0e})")
    for col, justify in (("parameter", "left"), ("shape", "left"), ("checked", "right"),
                         ("eager rel. error", "right"), ("static rel. error", "right"),
                         ("", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    noisy = False
    for r in report["parameters"]:
        if r["passed"]:
            status = "[green]ok[/]" + ("*" if r.get("within_noise") else "")
            noisy = noisy or bool(r.get("within_noise"))
        else:
            status = "[bold red]FAIL[/]"
        table.add_row(r["name"], "x".join(map(str, r["shape"])) or "scalar", str(r["checked"]),
                      f"{r['eager_error']:.1e}", f"{r['static_error']:.1e}", status)
    console.print(table)
    if noisy:
        console.print(f"[dim]* above {report['tolerance']:.0e} only where |analytic - numeric| "
                      f"<= {report['noise_atol']:.1e}, the rounding noise of the difference[/]")
    if report["passed"]:
        console.print(f"[green]passed[/]: {report['message']} ({report['seconds']:.2f} s)")


def _metric(name: str | None, value: Any) -> str:
    return "-" if name is None or value is None else f"{name} {_fmt(value)}"


def print_runs(console: Console, rows: list[dict[str, Any]], root: Any) -> None:
    """The `dlrun runs` table, newest first (a narrow terminal drops the date column: the run
    folder's name starts with the same time stamp)."""
    if not rows:
        console.print(f"no runs in {root}")
        return
    from rich import box

    columns = ["run", "date", "mode", "status", "steps", "best", "final"]
    if console.width < 120:
        columns.remove("date")
    table = Table(title=f"runs in {root}", box=box.SIMPLE_HEAD)
    for col in columns:
        table.add_column(col, justify="right" if col == "steps" else "left",
                         no_wrap=col in ("run", "date", "mode", "status"), overflow="fold")
    colors = {"completed": "green", "early_stopped": "green", "failed": "red",
              "interrupted": "yellow"}
    for r in rows:
        color = colors.get(str(r["status"]), "yellow")
        cells = {"run": r["run"], "date": r["date"][:16],
                 "mode": f"{r['mode'] or '-'}/{r['device'] or '-'}",
                 "status": f"[{color}]{r['status']}[/]",
                 "steps": "-" if r["steps"] is None else str(r["steps"]),
                 "best": _metric(r["best_metric"], r["best_value"]),
                 "final": _metric(r["main_metric"], r["main_value"])}
        table.add_row(*(cells[c] for c in columns))
    console.print(table)


def print_run(console: Console, info: dict[str, Any]) -> None:
    """`dlrun runs show`: the run's facts, config, last metrics, checkpoints and plots."""
    if info.get("kind") == "sweep":
        print_sweep_summary(console, {**info["summary"], "ranked": info["ranked"]})
        return
    table = Table(title=f"{info['run']} — {info['status']}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    table.add_row("path", info["path"])
    table.add_row("date", info["date"])
    table.add_row("mode / device", f"{info['mode'] or '-'} / {info['device'] or '-'}")
    table.add_row("steps", "-" if info["steps"] is None else str(info["steps"]))
    table.add_row("best", _metric(info["best_metric"], info["best_value"]))
    summary = RunSummary.from_json(info["summary"] or {})
    for k, v in summary.final.items():
        if v is not None:
            table.add_row(f"final {k}", _fmt(v))
    if summary.error:
        table.add_row("error", summary.error)
    files = [f"{f['name']} ({f['bytes'] / 1e3:.1f} kB)" for f in info["checkpoints"]]
    table.add_row("checkpoints", "\n".join(files) or "-")
    table.add_row("plots", ", ".join(f"plots/{f['name']}" for f in info["plots"]) or "-")
    console.print(table)
    if info["metrics"]:
        keys = list(dict.fromkeys(k for rec in info["metrics"] for k in rec))
        mt = Table(title=f"last {len(info['metrics'])} of {info['metrics_records']} "
                         "metrics records")
        for k in keys:
            mt.add_column(k, justify="right")
        for rec in info["metrics"]:
            mt.add_row(*("" if rec.get(k) is None else _fmt(rec[k]) for k in keys))
        console.print(mt)
    if info["config"]:
        import yaml

        console.print("[bold]config[/]")
        console.print(yaml.safe_dump(info["config"], sort_keys=False).rstrip(), markup=False,
                      highlight=False)


# --------------------------------------------------------------------------- sweeps

_STATE_COLORS = {"complete": "green", "pruned": "yellow", "failed": "red",
                 "interrupted": "red", "running": "cyan", "waiting": "dim"}


def _param(v: Any) -> str:
    return json.dumps(v) if isinstance(v, list | dict) else _fmt(v)


def sweep_table(rows: list[TrialRecord], metric: str, goal: str, title: str = "",
                limit: int | None = None, best_so_far: bool = True) -> Table:
    """Trials: number, state, parameters, the metric and the best so far (in trial order)."""
    names = list(dict.fromkeys(k for r in rows for k in r.params))
    table = Table(title=title or None)
    extra = ("best so far",) if best_so_far else ()
    for col in ("trial", "state", *names, metric, *extra, "seconds"):
        table.add_column(col, justify="right" if col not in ("state",) else "left")
    best: float | None = None
    so_far = []
    for r in sorted(rows, key=lambda r: r.number):
        v = r.value
        if r.state == "complete" and v is not None and (
                best is None or (v < best if goal == "minimize" else v > best)):
            best = v
        so_far.append((r.number, best))
    best_at = dict(so_far)
    shown = rows if limit is None else rows[-limit:]
    for r in shown:
        color = _STATE_COLORS.get(r.state, "white")
        table.add_row(str(r.number), f"[{color}]{r.state}[/]",
                      *(_param(r.params.get(n)) if n in r.params else "-" for n in names),
                      "-" if r.value is None else _fmt(r.value),
                      *(("-" if best_at[r.number] is None else _fmt(best_at[r.number]),)
                        if best_so_far else ()),
                      "-" if r.seconds is None else f"{r.seconds:.1f}")
    return table


class SweepView:
    """The live trials table of `dlrun sweep` (rich Live), redrawn at each SweepProgress."""

    def __init__(self, console: Console, quiet: bool = False) -> None:
        self.console, self.quiet = console, quiet
        self.live: Any = None

    def __call__(self, event: Event) -> None:
        if self.quiet:
            return
        if isinstance(event, SweepStarted):
            self.console.print(f"sweep {event.folder}: {event.note}", highlight=False,
                               soft_wrap=True)
            self.console.print(f"{event.trials} trials, {event.workers} worker(s), "
                               f"{event.goal} {event.metric} over "
                               f"{', '.join(event.parameters)}; storage: {event.storage}",
                               highlight=False, soft_wrap=True)
        elif isinstance(event, SweepProgress):
            done = sum(r.state in ("complete", "pruned", "failed") for r in event.rows)
            table = sweep_table(event.rows, event.metric, event.goal, limit=20,
                                title=f"{done}/{event.trials} trials finished")
            if self.live is None:
                from rich.live import Live

                self.live = Live(table, console=self.console, auto_refresh=False)
                self.live.start()
            self.live.update(table, refresh=True)
        elif isinstance(event, Message):
            self.console.print(f"[yellow]{event.text}[/]", highlight=False)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
            self.console.print()


def print_sweep_summary(console: Console, summary: dict[str, Any]) -> None:
    """After a sweep: the ranked trials, the best one and where best.yaml is."""
    from dlrun.runner.sweep.report import ranked

    rows = summary.get("ranked") or []
    if "metric" not in summary:
        console.print(f"sweep {summary.get('folder', '')}: no summary yet", highlight=False)
        return
    if rows:
        console.print(sweep_table(ranked(rows, summary["goal"]), summary["metric"],
                                  summary["goal"], title="trials, best first",
                                  best_so_far=False))
    best = summary.get("best")
    states = ", ".join(f"{n} {s}" for s, n in (summary.get("states") or {}).items())
    console.print(f"sweep {summary['folder']}: {summary['finished']}/{summary['trials']} "
                  f"trials finished ({states or 'none'}), status {summary['status']}",
                  highlight=False, soft_wrap=True)
    if best is None:
        console.print("no trial completed", style="yellow")
        return
    params = ", ".join(f"{k}={_param(v)}" for k, v in best["params"].items())
    console.print(f"best: trial {best['number']}, {summary['metric']} {_fmt(best['value'])} "
                  f"({params})", highlight=False, soft_wrap=True)
    console.print(f"best config: [bold]{best['config']}[/]  (dlrun train {best['config']})",
                  highlight=False, soft_wrap=True)
