"""Drawing runner events and results with rich (used by the CLI only)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

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


# --------------------------------------------------------------------------- fitting tables
# A table never breaks a number or a name: its columns do not wrap (a column marked `wrap` wraps
# at spaces only), and when the console is too narrow, columns are dropped, highest `drop` rank
# first, and a footnote says which and how to see them.

Cell = str | Text
_COMPACT: dict[str, Any] = {"box": box.SIMPLE_HEAD, "pad_edge": False, "show_edge": False}


@dataclass(frozen=True)
class Col:
    """A column: header, alignment, whether its cells may wrap at spaces, and its drop rank
    (0: always shown; higher ranks go first when the console is too narrow)."""

    header: str
    justify: str = "left"
    drop: int = 0
    wrap: bool = False
    style: str | None = None


def _text(cell: Cell) -> Text:
    return cell if isinstance(cell, Text) else Text.from_markup(cell)


def path_cell(path: Any) -> Text:
    """A file path: the one kind of cell folded (not wrapped at spaces) when it is too long."""
    return Text(str(path), overflow="fold")


def _need(cell: Text, wrap: bool) -> int:
    """The width a cell needs so that no word of it is broken (paths may fold)."""
    lines = cell.plain.splitlines() or [""]
    if cell.overflow == "fold":
        return min(max(map(len, lines)), 20)
    if wrap:
        return max((len(w) for line in lines for w in line.split()), default=0)
    return max(map(len, lines))


def fit_table(console: Console, cols: Sequence[Col], rows: Sequence[Sequence[Cell]],
              wide: bool = False, **table_kw: Any) -> tuple[Table, list[str]]:
    """A table of `rows` that fits the console (all columns when `wide`), and the headers of
    the columns left out. When the columns that always show are still too wide, their cells
    wrap at spaces (`val_accuracy` over `0.9583`), never inside a word."""
    cells = [[_text(c) for c in row] for row in rows]
    keep = list(range(len(cols)))
    wrap_all = False
    while True:
        table = Table(**table_kw)
        for i in keep:
            col = cols[i]
            # rich narrows the widest wrapping column first: only those that can wrap do
            wrap = (col.wrap or wrap_all) and any(" " in row[i].plain for row in cells)
            need = max([len(col.header)] + [_need(row[i], wrap) for row in cells])
            table.add_column(col.header, justify=col.justify, style=col.style,  # type: ignore
                             no_wrap=not wrap, min_width=need, overflow="fold")
        for row in cells:
            table.add_row(*(row[i] for i in keep))
        if wide or _widths(console, table)[0] <= console.width:
            break
        droppable = [i for i in keep if cols[i].drop > 0]
        if droppable:
            keep.remove(max(droppable, key=lambda i: (cols[i].drop, i)))
        elif not wrap_all:
            wrap_all = True
        else:
            break
    return table, [c.header for i, c in enumerate(cols) if i not in keep]


def _widths(console: Console, table: Table) -> tuple[int, int]:
    """The (least, natural) width of `table`: the least keeps every word of it whole."""
    m = Measurement.get(console, console.options.update_width(10_000), table)
    return m.minimum, m.maximum


def print_table(console: Console, table: Table, title: str = "", dropped: Sequence[str] = (),
                hint: str = "--wide shows them", wide: bool = False) -> None:
    """`title` on a line of its own (a table's own title wraps to the table's width), the
    table (at its natural width when `wide`), and a footnote naming the columns left out."""
    if title:
        console.print(f"[bold]{title}[/]", highlight=False)
    if wide:
        width = _widths(console, table)[1]
        wide_console = Console(file=console.file, width=max(width, console.width),
                               color_system=console.color_system, no_color=console.no_color,
                               force_terminal=console.is_terminal)
        wide_console.print(table, crop=False)
    else:
        console.print(table)
    if dropped:
        console.print(f"[dim]not shown at {console.width} columns: {', '.join(dropped)} "
                      f"({hint})[/]", highlight=False)


def key_value_table(console: Console, rows: Sequence[tuple[str, Cell]]) -> Table:
    """Two columns, key and value; values wrap at spaces, paths fold."""
    table, _ = fit_table(console, [Col("key", style="bold"), Col("value", wrap=True)],
                         rows, show_header=False)
    return table


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
            if event.level == "warning":  # shown even with --quiet
                self._print(f"[yellow]warning:[/] {escape(event.text)}")
            elif not self.quiet:
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
    """`dlrun train`'s closing table: final and best metrics, speed, where the run went."""
    rows: list[tuple[str, Cell]] = [(k, _fmt(v)) for k, v in summary.final.items()
                                    if v is not None]
    best = summary.best
    if best.value is not None:
        rows.append((f"best {best.metric}", f"{_fmt(best.value)} (step {best.step})"))
    if summary.step_time_ms.median is not None:
        rows.append(("step time (median)", f"{summary.step_time_ms.median:.3f} ms"))
    if summary.samples_per_second:
        rows.append(("throughput", f"{summary.samples_per_second:,.0f} samples/s"))
    rows += [("steps", str(summary.steps)), ("mode / device", f"{summary.mode} / {summary.device}")]
    dist = summary.distributed
    if dist:
        reduce = dist.all_reduce_ms
        hosts = f" on {len(dist.hosts)} hosts" if dist.hosts else ""
        hidden = f" ({dist.overlapped:.0%} hidden)" if dist.overlapped else ""
        rows.append(("workers", f"{dist.workers} ({dist.backend}){hosts}; all-reduce "
                     + (f"{reduce:.3f} ms / step{hidden}, " if reduce is not None else "")
                     + f"{dist.all_reduce_bytes / 1e6:.2f} MB"))
    if summary.trace_counts:
        rows.append(("traces", ", ".join(f"{k} {v}" for k, v in summary.trace_counts.items())))
    rows.append(("wall time", f"{summary.wall_seconds or 0:.1f} s"))
    if summary.run_dir:
        rows.append(("run", path_cell(summary.run_dir)))
    print_table(console, key_value_table(console, rows), f"{summary.name} — {summary.status}")


def print_eval(console: Console, result: dict[str, Any]) -> None:
    """`dlrun eval`: the metrics, the confusion matrix when it fits, a generated sample."""
    rows: list[tuple[str, Cell]] = [("checkpoint", path_cell(result["checkpoint"])),
                                    ("step", str(result["step"]))]
    rows += [(k, _fmt(v)) for k, v in result["metrics"].items()]
    print_table(console, key_value_table(console, rows),
                f"evaluation on the {result['split']} split")
    confusion = result.get("confusion")
    if confusion is not None and len(confusion) <= 20:
        _print_confusion(console, confusion, result.get("classes"))
    if result.get("sample"):
        console.print("[bold]sample:[/]")
        console.print(result["sample"], markup=False, highlight=False)
    gen = result.get("generation")
    if gen is not None:
        console.print(f"generated {gen['tokens']} tokens in {gen['seconds']:.2f} s: "
                      f"{gen['tokens_per_second']:,.0f} tokens/s ({gen['method']}, "
                      f"{gen['mode']})", highlight=False)


def _print_confusion(console: Console, confusion: list[list[int]],
                     classes: list[str] | None) -> None:
    names = classes or [str(i) for i in range(len(confusion))]
    cols = [Col(""), *(Col(c, justify="right") for c in names)]
    rows = [[c, *map(str, row)] for c, row in zip(names, confusion, strict=True)]
    table, _ = fit_table(console, cols, rows, **_COMPACT)
    title = "confusion matrix (rows: true, columns: predicted)"
    if _widths(console, table)[0] > console.width:
        console.print(f"[dim]{title}: {len(names)} classes do not fit in {console.width} "
                      "columns (`dlrun eval --json` has it)[/]", highlight=False)
        return
    print_table(console, table, title)


def print_export(console: Console, result: dict[str, Any]) -> None:
    """`dlrun export`: what was written where, and how it was verified."""
    console.print(f"exported {result['checkpoint']} to [bold]{result['path']}[/] "
                  f"({result['format']}, opset {result['opset']}, {result['onnx_nodes']} nodes, "
                  f"dynamic axes: {', '.join(result.get('dynamic_axes', ['batch']))})",
                  highlight=False, soft_wrap=not console.is_terminal)
    console.print(f"verified with ONNX Runtime on {result['verified_on']} batches of "
                  f"{' and '.join(map(str, result['batch_sizes']))}: max abs error "
                  f"{result['max_abs_error']:.3g}, max rel error {result['max_rel_error']:.3g}",
                  highlight=False, soft_wrap=not console.is_terminal)


def print_prepared(console: Console, result: dict[str, Any]) -> None:
    """`dlrun prepare text`: the folder written, its tokens and characters per token."""
    train, val = result["splits"]["train"], result["splits"]["val"]
    ratio = val["chars_per_token"] or train["chars_per_token"]
    console.print(f"wrote [bold]{result['out']}[/]: {train['tokens']:,} training and "
                  f"{val['tokens']:,} validation tokens ({result['dtype']}), {result['tokenizer']} "
                  f"vocabulary of {result['vocab_size']:,}, {ratio:.3f} characters per token",
                  highlight=False, soft_wrap=True)


def print_compare(console: Console, report: dict[str, Any]) -> None:
    from rich.markdown import Markdown

    from dlrun.runner.commands.compare import markdown

    console.print(Markdown(markdown(report)))


def print_graph(console: Console, report: dict[str, Any], full: bool = False) -> None:
    """The passes table and the graph; with gradient accumulation, of each part of the step."""
    parts = report.get("parts")
    if parts:
        for name, part in parts.items():
            console.print(f"[bold]{name}[/]")
            print_graph(console, part, full=full)
        return
    r = report["report"]
    cols = [Col("pass"), Col("nodes"), Col("compute nodes"), Col("details", wrap=True)]
    rows = [[s["name"], f"{s['nodes_before']} → {s['nodes_after']}",
             f"{s['compute_before']} → {s['compute_after']}",
             ", ".join(f"{k}={_fmt(v)}" for k, v in s["detail"].items())] for s in r["passes"]]
    table, _ = fit_table(console, cols, rows, **_COMPACT)
    print_table(console, table, f"passes (traced in {report['trace_seconds'] * 1e3:.1f} ms)")
    package_root = f"{Path(__file__).resolve().parent.parent}/"  # dlrun's own source lines
    lines = report["text"].replace(package_root, "").splitlines()
    if not full and len(lines) > 60:
        lines = lines[:30] + [f"... {len(lines) - 50} more nodes (--full) ..."] + lines[-20:]
    console.print("\n".join(lines), highlight=False, markup=False)


def print_gradcheck(console: Console, report: dict[str, Any]) -> None:
    """The per-parameter worst relative errors of `dlrun gradcheck`, eager and static."""
    cols = [Col("parameter"), Col("shape", drop=3), Col("checked", "right", drop=2),
            Col("eager rel. error", "right"), Col("static rel. error", "right"), Col("")]
    noisy = False
    rows = []
    for r in report["parameters"]:
        if r["passed"]:
            status = "[green]ok[/]" + ("*" if r.get("within_noise") else "")
            noisy = noisy or bool(r.get("within_noise"))
        else:
            status = "[bold red]FAIL[/]"
        rows.append([r["name"], "x".join(map(str, r["shape"])) or "scalar", str(r["checked"]),
                     f"{r['eager_error']:.1e}", f"{r['static_error']:.1e}", status])
    table, dropped = fit_table(console, cols, rows, **_COMPACT)
    print_table(console, table, f"{report['name']}: gradients vs central differences "
                f"(float64, batch {report['batch']}, eps {report['eps']:.0e})", dropped,
                "a wider terminal shows them")
    if noisy:
        console.print(f"[dim]* above {report['tolerance']:.0e} only where |analytic - numeric| "
                      f"<= {report['noise_atol']:.1e}, the rounding noise of the difference[/]")
    if report["passed"]:
        console.print(f"[green]passed[/]: {report['message']} ({report['seconds']:.2f} s)")


def _metric(name: str | None, value: Any) -> str:
    return "-" if name is None or value is None else f"{name} {_fmt(value)}"


def _metric_column(label: str, pairs: list[tuple[str | None, Any]]) -> tuple[str, list[str]]:
    """A metric column: `label NAME` over bare values when every row has the same metric, else
    `label` over `NAME value` cells."""
    names = {n for n, v in pairs if n is not None and v is not None}
    if len(names) == 1:
        (name,) = names
        return f"{label} {name}", ["-" if n != name or v is None else _fmt(v) for n, v in pairs]
    return label, [_metric(n, v) for n, v in pairs]


_STATUS_COLORS = {"completed": "green", "early_stopped": "green", "failed": "red",
                  "interrupted": "yellow"}


def print_runs(console: Console, rows: list[dict[str, Any]], root: Any,
               metric: str | None = None, wide: bool = False) -> None:
    """The `dlrun runs` table: run, status and one metric always (the headline final metric,
    or `metric`); steps, mode, best and date as the width allows (all with `wide`)."""
    if not rows:
        console.print(f"no runs in {root}", highlight=False)
        return
    if metric is None:
        final = _metric_column("final", [(r["main_metric"], r["main_value"]) for r in rows])
    else:
        final = (f"final {metric}", [_fmt(v) if (v := (r.get("final") or {}).get(metric))
                                     is not None else "-" for r in rows])
    best = _metric_column("best", [(r["best_metric"], r["best_value"]) for r in rows])
    def just(header: str) -> str:  # bare values (the metric named in the header): right
        return "right" if " " in header else "left"

    cols = [Col("run"), Col("date", drop=5), Col("mode", drop=3), Col("status"),
            Col("steps", justify="right", drop=2), Col(best[0], just(best[0]), drop=4),
            Col(final[0], just(final[0]))]
    cells = [[r["run"], r["date"][:16], f"{r['mode'] or '-'}/{r['device'] or '-'}",
              f"[{_STATUS_COLORS.get(str(r['status']), 'yellow')}]{r['status']}[/]",
              "-" if r["steps"] is None else str(r["steps"]), b, f]
             for r, b, f in zip(rows, best[1], final[1], strict=True)]
    table, dropped = fit_table(console, cols, cells, wide=wide, **_COMPACT)
    print_table(console, table, f"runs in {root}", dropped, wide=wide)


def _record_rank(key: str) -> int:
    """Which columns of the last metrics records go first when the console is narrow."""
    ranks = {"step": 0, "train_loss": 0, "val_loss": 0, "lr": 3, "step_ms": 4, "epoch": 5}
    return ranks.get(key, 1 if key.startswith(("val_", "test_")) else 2)


def print_run(console: Console, info: dict[str, Any], wide: bool = False) -> None:
    """`dlrun runs show`: the run's facts, config, last metrics, checkpoints and plots."""
    if info.get("kind") == "sweep":
        print_sweep_summary(console, {**info["summary"], "ranked": info["ranked"]}, wide=wide)
        return
    rows: list[tuple[str, Cell]] = [
        ("path", path_cell(info["path"])), ("date", info["date"]),
        ("mode / device", f"{info['mode'] or '-'} / {info['device'] or '-'}"),
        ("steps", "-" if info["steps"] is None else str(info["steps"])),
        ("best", _metric(info["best_metric"], info["best_value"]))]
    summary = RunSummary.from_json(info["summary"] or {})
    rows += [(f"final {k}", _fmt(v)) for k, v in summary.final.items() if v is not None]
    if summary.error:
        rows.append(("error", summary.error))
    files = [f"{f['name']} ({f['bytes'] / 1e3:.1f} kB)" for f in info["checkpoints"]]
    rows.append(("checkpoints", "\n".join(files) or "-"))
    rows.append(("plots", ", ".join(f"plots/{f['name']}" for f in info["plots"]) or "-"))
    print_table(console, key_value_table(console, rows), f"{info['run']} — {info['status']}")
    if info["metrics"]:
        keys = list(dict.fromkeys(k for rec in info["metrics"] for k in rec))
        cols = [Col(k, justify="right", drop=_record_rank(k)) for k in keys]
        cells = [["" if rec.get(k) is None else _fmt(rec[k]) for k in keys]
                 for rec in info["metrics"]]
        table, dropped = fit_table(console, cols, cells, wide=wide, **_COMPACT)
        print_table(console, table, f"last {len(info['metrics'])} of {info['metrics_records']} "
                    "metrics records", dropped, wide=wide)
    if info["config"]:
        import yaml

        console.print("[bold]config[/]")
        console.print(yaml.safe_dump(info["config"], sort_keys=False).rstrip(), markup=False,
                      highlight=False)


def _value(v: Any) -> Cell:
    """A config value as its YAML reads (long ones fold)."""
    text = json.dumps(v) if isinstance(v, list | dict) else (
        "null" if v is None else str(v).lower() if isinstance(v, bool) else _fmt(v))
    return path_cell(text) if len(text) > 24 else text


def _diff_tables(console: Console, diff: dict[str, Any], heads: list[str], wide: bool
                 ) -> list[tuple[str, Table, list[str]]]:
    """(title, table, columns left out) of the config keys that differ and of the metrics."""
    out = []
    if diff["config"]:
        cols = [Col("key"), *(Col(h, drop=i, wrap=True) for i, h in enumerate(heads))]
        rows = [[c["key"], *("-" if absent else _value(v)
                             for v, absent in zip(c["values"], c["absent"], strict=True))]
                for c in diff["config"]]
        out.append(("config keys that differ", *fit_table(console, cols, rows, wide=wide,
                                                          **_COMPACT)))
    cols = [Col("metric"), *(Col(h, justify="right", drop=i) for i, h in enumerate(heads))]
    rows = []
    for m in diff["metrics"]:
        cells = ["-" if v is None else _fmt(v) for v in m["values"]]
        if m["kind"] == "best":
            cells = [c if s is None else f"{c} @{s}"
                     for c, s in zip(cells, m["steps"], strict=True)]
        rows.append([f"{m['kind']} {m['metric']}", *cells])
    out.append(("metrics (best: value @step)", *fit_table(console, cols, rows, wide=wide,
                                                          **_COMPACT)))
    return out


def print_runs_diff(console: Console, diff: dict[str, Any], wide: bool = False) -> None:
    """`dlrun runs diff`: the runs, the config keys that differ, the metrics side by side (the
    best run marked *), and where the curves went. Columns are headed by the runs' labels, or
    by #1, #2, ... (listed first) when the labels do not fit."""
    runs, best = diff["runs"], diff.get("best")
    marks = [" *" if best and best["index"] == i else "" for i in range(len(runs))]
    tables = _diff_tables(console, diff, [r["label"] + m for r, m in zip(runs, marks,
                                                                          strict=True)], wide)
    short = any(dropped for _, _, dropped in tables)
    if short:
        tables = _diff_tables(console, diff, [f"#{i + 1}{m}" for i, m in enumerate(marks)],
                              wide)
    for i, (r, mark) in enumerate(zip(runs, marks, strict=True)):
        steps = "-" if r["steps"] is None else r["steps"]
        console.print(f"[bold]{f'#{i + 1} ' if short else ''}{r['label']}{mark}[/]: "
                      f"{r['path']} ({r['status']}, {steps} steps)", highlight=False)
    if not diff["config"]:
        console.print("[bold]config[/]: the same in every run")
    for title, table, dropped in tables:
        print_table(console, table, title, dropped, "--wide or --json shows them", wide)
    if best:
        console.print(f"* best: {best['label']}, {best['goal']} {best['metric']}", highlight=False)
    if diff.get("plot"):
        console.print(f"curves: {diff['plot']}", highlight=False,
                      soft_wrap=not console.is_terminal)


# --------------------------------------------------------------------------- sweeps

_STATE_COLORS = {"complete": "green", "pruned": "yellow", "failed": "red",
                 "interrupted": "red", "running": "cyan", "waiting": "dim"}


def _param(v: Any) -> str:
    return json.dumps(v) if isinstance(v, list | dict) else _fmt(v)


def sweep_table(rows: list[TrialRecord], metric: str, goal: str, title: str = "",
                limit: int | None = None, best_so_far: bool = True,
                console: Console | None = None, wide: bool = False) -> tuple[Table, list[str]]:
    """Trials: number, state, parameters, the metric and the best so far (in trial order),
    and the columns left out to fit `console` (unless `wide`): best so far, seconds, then the
    last parameters first."""
    names = list(dict.fromkeys(k for r in rows for k in r.params))
    best: float | None = None
    best_at: dict[int, float | None] = {}
    for r in sorted(rows, key=lambda r: r.number):
        v = r.value
        if r.state == "complete" and v is not None and (
                best is None or (v < best if goal == "minimize" else v > best)):
            best = v
        best_at[r.number] = best
    cols = [Col("trial", "right"), Col("state"), *(Col(n, "right", drop=3) for n in names),
            Col(metric, "right"), *((Col("best so far", "right", drop=5),) if best_so_far else ()),
            Col("seconds", "right", drop=4)]
    cells = []
    for r in rows if limit is None else rows[-limit:]:
        so_far = best_at[r.number]
        cells.append([str(r.number), f"[{_STATE_COLORS.get(r.state, 'white')}]{r.state}[/]",
                      *(_param(r.params.get(n)) if n in r.params else "-" for n in names),
                      "-" if r.value is None else _fmt(r.value),
                      *(("-" if so_far is None else _fmt(so_far),) if best_so_far else ()),
                      "-" if r.seconds is None else f"{r.seconds:.1f}"])
    return fit_table(console or Console(), cols, cells, wide=wide, **_COMPACT,
                     title=title or None)


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
                               soft_wrap=not self.console.is_terminal)
            self.console.print(f"{event.trials} trials, {event.workers} worker(s), "
                               f"{event.goal} {event.metric} over "
                               f"{', '.join(event.parameters)}; storage: {event.storage}",
                               highlight=False, soft_wrap=not self.console.is_terminal)
        elif isinstance(event, SweepProgress):
            done = sum(r.state in ("complete", "pruned", "failed") for r in event.rows)
            table, dropped = sweep_table(event.rows, event.metric, event.goal, limit=20,
                                         title=f"{done}/{event.trials} trials finished",
                                         console=self.console)
            view: Any = table
            if dropped:
                from rich.console import Group

                view = Group(table, Text(f"not shown: {', '.join(dropped)}", style="dim"))
            if self.live is None:
                from rich.live import Live

                self.live = Live(view, console=self.console, auto_refresh=False)
                self.live.start()
            self.live.update(view, refresh=True)
        elif isinstance(event, Message):
            self.console.print(f"[yellow]{event.text}[/]", highlight=False)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
            self.console.print()


def print_sweep_summary(console: Console, summary: dict[str, Any], wide: bool = False) -> None:
    """After a sweep: the ranked trials, the best one and where best.yaml is."""
    from dlrun.runner.sweep.report import ranked

    rows = summary.get("ranked") or []
    if "metric" not in summary:
        console.print(f"sweep {summary.get('folder', '')}: no summary yet", highlight=False)
        return
    if rows:
        table, dropped = sweep_table(ranked(rows, summary["goal"]), summary["metric"],
                                     summary["goal"], title="trials, best first",
                                     best_so_far=False, console=console, wide=wide)
        print_table(console, table, dropped=dropped, wide=wide)
    best = summary.get("best")
    states = ", ".join(f"{n} {s}" for s, n in (summary.get("states") or {}).items())
    console.print(f"sweep {summary['folder']}: {summary['finished']}/{summary['trials']} "
                  f"trials finished ({states or 'none'}), status {summary['status']}",
                  highlight=False, soft_wrap=not console.is_terminal)
    if best is None:
        console.print("no trial completed", style="yellow")
        return
    params = ", ".join(f"{k}={_param(v)}" for k, v in best["params"].items())
    console.print(f"best: trial {best['number']}, {summary['metric']} {_fmt(best['value'])} "
                  f"({params})", highlight=False, soft_wrap=not console.is_terminal)
    console.print(f"best config: [bold]{best['config']}[/]  (dlrun train {best['config']})",
                  highlight=False, soft_wrap=not console.is_terminal)
