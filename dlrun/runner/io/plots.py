"""PNG curves of a run's metrics, one figure per metric family (loss, accuracy, lr, ...).

Keys are grouped by their name without the split prefix: `train_loss`, `val_loss` and `loss` all
go on `plots/loss.png`. matplotlib is optional and imported lazily; figures are drawn with the
object-oriented API on an Agg canvas, so no display is needed and pyplot's global state (or a
user's interactive backend) is never touched.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dlrun.runner.io.metrics_log import read_metrics
from dlrun.runner.io.rundir import PLOTS_DIR, atomic_write_bytes

# Bookkeeping keys that are never plotted as curves.
NOT_PLOTTED = frozenset(
    {"step", "epoch", "time", "timestamp", "elapsed", "elapsed_s", "wall_time", "batch",
     "samples", "tokens", "event", "split", "phase"}
)
_SPLITS = ("train", "val", "valid", "validation", "test", "eval")
_SPLIT_RE = re.compile(rf"^(?:{'|'.join(_SPLITS)})[_/.]", re.IGNORECASE)
Series = Mapping[str, tuple[Sequence[float], Sequence[float]]]


def metric_family(key: str) -> str:
    """The family of a metric key: `val_loss` -> `loss`, `train/acc` -> `acc`, `lr` -> `lr`."""
    return _SPLIT_RE.sub("", key) or key


def plot_metrics(run_dir: Path | str) -> list[Path]:
    """Write `plots/<family>.png` for each metric family in metrics.jsonl; returns the paths.

    x is the record's `step` (its position when it has none). A run without numeric metrics
    writes nothing; without matplotlib installed nothing is written and [] is returned.
    """
    records = read_metrics(run_dir)
    families: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for index, record in enumerate(records):
        x = record.get("step", index)
        if not _is_number(x):
            continue
        for key, value in record.items():
            if key in NOT_PLOTTED or not _is_number(value):
                continue
            xs, ys = families.setdefault(metric_family(key), {}).setdefault(key, ([], []))
            xs.append(float(x))
            ys.append(float(value))
    todo = {
        family: series
        for family, series in families.items()
        if any(math.isfinite(y) for _, ys in series.values() for y in ys)
    }
    if not todo or not _have_matplotlib():
        return []
    out_dir = Path(run_dir) / PLOTS_DIR
    paths = []
    for family in sorted(todo):
        path = out_dir / f"{_file_stem(family)}.png"
        line_chart(path, todo[family], title=family, xlabel="step", ylabel=family)
        paths.append(path)
    return paths


Panel = tuple[str, Series, str]  # title, named (xs, ys) series, y label


def line_chart(
    path: Path | str, series: Series, *, title: str = "", xlabel: str = "", ylabel: str = ""
) -> Path:
    """Draw named `(xs, ys)` series on one PNG at `path` (atomically); needs matplotlib.

    The y axis turns logarithmic when every value is positive and they span over 100x (losses).
    """
    return panel_chart(path, [(title, series, ylabel)], xlabel=xlabel)


def panel_chart(path: Path | str, panels: Sequence[Panel], *, xlabel: str = "") -> Path:
    """`line_chart` with several panels side by side (one PNG, written atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7 if len(panels) == 1 else 5.5 * len(panels), 4.2), dpi=100)
    FigureCanvasAgg(fig)
    for i, (title, series, ylabel) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        finite: list[float] = []
        for name, (xs, ys) in series.items():
            marker = "o" if len(xs) <= 30 else None
            ax.plot(list(xs), list(ys), label=name, marker=marker, markersize=3, linewidth=1.4)
            finite.extend(y for y in ys if math.isfinite(y))
        if finite and min(finite) > 0 and max(finite) / min(finite) > 100:
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if len(series) > 1 or any(name != title for name in series):
            ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _file_stem(family: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", family).strip("._") or "metric"
