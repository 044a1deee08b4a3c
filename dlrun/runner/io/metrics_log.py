"""Metrics logging: `metrics.jsonl` (the source of truth) and `metrics.csv` kept in step with it.

One JSON object per line, appended and flushed at each `log`, so a crash keeps everything logged
before it. JSON cannot hold NaN or Inf: such values are written as the strings "nan", "inf" and
"-inf" (in the JSONL, the CSV and summary.json alike), and `read_metrics` turns them back into
floats.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dlrun.errors import DlrunError
from dlrun.runner.io.rundir import (
    METRICS_CSV,
    METRICS_FILE,
    SUMMARY_FILE,
    atomic_write_json,
    atomic_write_text,
    from_jsonable,
    to_jsonable,
)
from dlrun.runner.records import RunSummary


class MetricsLogger:
    """Appends records to `<run_dir>/metrics.jsonl` and mirrors them in `metrics.csv`.

    CSV columns are the union of the keys seen so far, in first-seen order; when a record brings
    a new key the CSV is rewritten (atomically) with the wider header. Opening a run folder that
    already has metrics (a resumed run) continues after its records.
    """

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)
        self.jsonl_path = self.run_dir / METRICS_FILE
        self.csv_path = self.run_dir / METRICS_CSV
        self._rows: list[dict[str, Any]] = []
        self._columns: list[str] = []
        if self.jsonl_path.exists():
            self._rows = [to_jsonable(r) for r in _read_jsonl(self.jsonl_path, drop_partial=True)]
            # Rewrite both files: drops a line cut short by a crash, resyncs the CSV.
            self._rewrite_jsonl()
            for row in self._rows:
                self._add_columns(row)
            self._rewrite_csv()

    @property
    def records(self) -> list[dict[str, Any]]:
        """The records logged so far (as written: non-finite floats as strings)."""
        return list(self._rows)

    def log(self, record: Mapping[str, Any]) -> None:
        """Append one record (a flat mapping of JSON-able values) to both files."""
        row = to_jsonable(dict(record))
        with open(self.jsonl_path, "a", encoding="utf-8") as f:
            f.write(_line(row))
            f.flush()
        self._rows.append(row)
        if self._add_columns(row) or not self.csv_path.exists():
            self._rewrite_csv()
        else:
            with open(self.csv_path, "a", encoding="utf-8", newline="") as f:
                self._writer(f).writerow(_csv_row(row))
                f.flush()

    def truncate(self, after_step: int) -> None:
        """Drop records with `step > after_step` (resuming from a checkpoint at that step)."""
        kept = [r for r in self._rows if not _is_after(r.get("step"), after_step)]
        if len(kept) != len(self._rows):
            self._rows = kept
            self._columns = []
            for row in self._rows:
                self._add_columns(row)
            self._rewrite_jsonl()
            self._rewrite_csv()

    def _add_columns(self, row: Mapping[str, Any]) -> bool:
        new = [k for k in row if k not in self._columns]
        self._columns.extend(new)
        return bool(new)

    def _writer(self, f: Any) -> csv.DictWriter:
        return csv.DictWriter(f, fieldnames=self._columns, restval="", lineterminator="\n")

    def _rewrite_csv(self) -> None:
        buf = io.StringIO()
        writer = self._writer(buf)
        writer.writeheader()
        writer.writerows(_csv_row(r) for r in self._rows)
        atomic_write_text(self.csv_path, buf.getvalue())

    def _rewrite_jsonl(self) -> None:
        atomic_write_text(self.jsonl_path, "".join(_line(r) for r in self._rows))


def read_metrics(run_dir: Path | str) -> list[dict[str, Any]]:
    """The records of a run's metrics.jsonl ("nan"/"inf" strings back to floats); [] if none.

    `run_dir` may also be the metrics.jsonl file itself. A last line cut short by a crash is
    skipped; any other malformed line raises DlrunError naming the file and line.
    """
    path = Path(run_dir)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.exists():
        return []
    return [from_jsonable(r) for r in _read_jsonl(path, drop_partial=True)]


def write_summary(run_dir: Path | str, summary: RunSummary | Mapping[str, Any]) -> Path:
    """Write `<run_dir>/summary.json` atomically (non-finite floats as "nan"/"inf" strings): a
    run's RunSummary, or a sweep's summary."""
    data = summary.to_json() if isinstance(summary, RunSummary) else dict(summary)
    return atomic_write_json(Path(run_dir) / SUMMARY_FILE, data)


def read_summary(run_dir: Path | str) -> dict[str, Any] | None:
    """A run's summary.json ("nan"/"inf" back to floats), or None if it has none or it is bad."""
    path = Path(run_dir) / SUMMARY_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return from_jsonable(data) if isinstance(data, dict) else None


def read_run_summary(run_dir: Path | str) -> RunSummary | None:
    """A run's summary.json as a RunSummary (any version's), or None if it has none or it is bad."""
    data = read_summary(run_dir)
    return None if data is None else RunSummary.from_json(data)


def _read_jsonl(path: Path, drop_partial: bool) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DlrunError(f"{path}: cannot read metrics ({e})") from None
    lines = text.split("\n")
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if drop_partial and number == len(lines):  # no newline after it: an unfinished write
                continue
            raise DlrunError(f"{path}:{number}: not a JSON object") from None
        if not isinstance(record, dict):
            raise DlrunError(f"{path}:{number}: not a JSON object")
        records.append(record)
    return records


def _line(row: Mapping[str, Any]) -> str:
    return json.dumps(row, allow_nan=False, ensure_ascii=False) + "\n"


def _csv_row(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if v is None:
            out[k] = ""
        elif isinstance(v, bool):
            out[k] = "true" if v else "false"
        elif isinstance(v, dict | list):
            out[k] = json.dumps(v, allow_nan=False)
        else:
            out[k] = v
    return out


def _is_after(step: Any, after_step: int) -> bool:
    return isinstance(step, int) and not isinstance(step, bool) and step > after_step
