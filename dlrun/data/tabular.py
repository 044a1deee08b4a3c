"""CSV datasets: feature/target tables and univariate time series for forecasting.

Parsing uses the `csv` module (quoted fields, CRLF line endings, a UTF-8 BOM are handled).
Every bad value is reported with the file, the line and the column, and statistics for
scaling are fitted on the training split only, then stored in meta for evaluation.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.atomic import atomic_path, atomic_write_json
from dlrun.data.bundle import (
    DatasetBundle,
    Split,
    Standardizer,
    check_fraction,
    check_positive_int,
    chunked_stats,
    random_split,
    split_counts,
)
from dlrun.data.cache import (
    cache_folder,
    fallback_note,
    file_entries,
    new_files_in,
    open_array,
    read_manifest,
    write_rows,
)
from dlrun.data.download import Progress, fetch
from dlrun.data.transforms import Normalize
from dlrun.errors import DataError

Column = str | int


@dataclass
class Table:
    """A parsed CSV: column names, rows of strings, and each row's line number in the file."""

    path: Path
    columns: list[str]
    rows: list[list[str]]
    lines: list[int]

    def column_index(self, spec: Column) -> int:
        """Index of a column given by name or position (negative counts from the end)."""
        if isinstance(spec, bool) or not isinstance(spec, str | int):
            raise DataError(f"{self.path}: a column is a name or an index, got {spec!r}")
        if isinstance(spec, int):
            if -len(self.columns) <= spec < len(self.columns):
                return spec % len(self.columns)
            raise DataError(
                f"{self.path}: column index {spec} out of range; the file has "
                f"{len(self.columns)} columns: {', '.join(self.columns)}"
            )
        if spec in self.columns:
            return self.columns.index(spec)
        raise DataError(
            f"{self.path}: no column {spec!r}; available columns: {', '.join(self.columns)}"
        )

    def strings(self, index: int) -> list[str]:
        """One column's raw values."""
        return [row[index] for row in self.rows]

    def numbers(self, index: int) -> np.ndarray:
        """One column as float64; DataError with file, line and column for a bad value."""
        values = self.strings(index)
        try:
            out = np.array(values, dtype=np.float64)
        except ValueError:
            out = None
        if out is not None and np.isfinite(out).all():
            return out
        for value, line in zip(values, self.lines, strict=True):
            try:
                number = float(value)
            except ValueError:
                what = f"{value!r} is not a number" if value.strip() else "empty value"
            else:
                if math.isfinite(number):
                    continue
                what = f"{value!r} is not a finite number"
            raise DataError(f"{self.path}, line {line}, column {self.columns[index]!r}: {what}")
        raise AssertionError("unreachable")  # pragma: no cover


CHUNK_ROWS = 1 << 16  # rows parsed at a time when a CSV file is decoded into its cache


def iter_csv(
    path: str | Path, *, delimiter: str = ",", header: bool = True, encoding: str = "utf-8",
    chunk_rows: int | None = None,
) -> Iterator[Table]:
    """A CSV file as Tables of at most `chunk_rows` (default CHUNK_ROWS) rows with the same
    columns, read as a stream (a file larger than memory is parsed chunk by chunk); errors as
    `read_csv`."""
    path = Path(path)
    chunk_rows = chunk_rows or CHUNK_ROWS
    rows: list[list[str]] = []
    lines: list[int] = []
    columns: list[str] | None = None
    done = 0
    try:
        # utf-8-sig drops a byte-order mark; newline='' lets csv handle CRLF and quoted breaks
        enc = "utf-8-sig" if encoding.lower().replace("_", "-") == "utf-8" else encoding
        with open(path, newline="", encoding=enc) as f:
            reader = csv.reader(f, delimiter=delimiter)
            for row in reader:
                if not row or all(not v.strip() for v in row):
                    continue
                if columns is None:
                    columns = [v.strip() for v in row] if header else [
                        str(i) for i in range(len(row))]
                    if header:
                        continue
                if len(row) != len(columns):
                    raise DataError(
                        f"{path}, line {reader.line_num}: {len(row)} fields, expected "
                        f"{len(columns)} ({', '.join(columns)})"
                    )
                rows.append(row)
                lines.append(reader.line_num)
                if len(rows) >= chunk_rows:
                    yield Table(path, columns, rows, lines)
                    done, rows, lines = done + len(rows), [], []
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid {encoding} text at byte {e.start}") from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV: {e}") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if columns is None:
        raise DataError(f"{path}: the CSV file is empty")
    if not rows and not done:
        raise DataError(f"{path}: the CSV file has a header but no data rows")
    if rows:
        yield Table(path, columns, rows, lines)


def read_csv(
    path: str | Path, *, delimiter: str = ",", header: bool = True, encoding: str = "utf-8"
) -> Table:
    """Parse a CSV file; columns are named by the header row, or '0', '1', ... without one.

    Blank lines are skipped; a row with the wrong number of fields is a DataError.
    """
    return next(iter_csv(path, delimiter=delimiter, header=header, encoding=encoding,
                         chunk_rows=sys.maxsize))


def _class_sort_key(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def csv_dataset(
    path: str | Path,
    *,
    target: Column,
    features: list[Column] | None = None,
    task: str = "classification",
    val_fraction: float = 0.1,
    test_fraction: float = 0.0,
    seed: int = 0,
    standardize: bool = True,
    scale_target: bool = False,
    delimiter: str = ",",
    header: bool = True,
    encoding: str = "utf-8",
) -> DatasetBundle:
    """A feature table: x float32 (N, F); y int64 class ids (classification) or float32 (N, 1).

    Features default to every column but the target. Classes are the sorted distinct target
    values (numerically when they are numbers), saved in meta['classes']. Rows are split at
    random (seeded); standardisation is fitted on the training rows only. The file is parsed
    in chunks into a float32 .npy cache beside it (data.cache), memory-mapped, so a table
    larger than memory trains: the splits are row indices, and the loader standardises each
    batch (Split.transform).
    """
    if task not in ("classification", "regression"):
        raise DataError(
            f"dataset 'csv': task must be 'classification' or 'regression', got {task!r}"
        )
    val_fraction = check_fraction("val_fraction", val_fraction, "csv")
    test_fraction = check_fraction("test_fraction", test_fraction, "csv")
    options = {"target": target, "features": features, "task": task, "delimiter": delimiter,
               "header": header, "encoding": encoding}
    x, y, info = _cached_table(Path(path), options)
    meta: dict[str, Any] = {
        "name": "csv", "task": task, "input_shape": [x.shape[1]], "input_dtype": "float32",
        "features": info["features"], "target": info["target"], "files": [str(path)],
        "cache": info["cache"], "warnings": fallback_note(Path(path), Path(info["cache"])),
    }
    if task == "classification":
        classes = info["classes"]
        meta.update(classes=classes, num_classes=len(classes), output_dim=len(classes))
    else:
        y = y.reshape(-1, 1)
        meta.update(output_dim=1)
    train, val, test = random_split(Split(x, y), (val_fraction, test_fraction), seed, "csv")
    assert train is not None and train.index is not None
    parts = [s for s in (train, val, test) if s is not None]
    mean, std = np.zeros(x.shape[1]), np.ones(x.shape[1])
    meta["scaler"] = None
    if standardize:
        mean, std = chunked_stats(x, train.index, (0,))
        std = np.where(std > 0, std, 1.0)
        meta["scaler"] = Standardizer(mean, std).to_meta()
    for s in parts:
        s.transform = Normalize(mean, std)
    if task == "regression":
        meta["target_scaler"] = _scale(parts, "y", scale_target)
    return DatasetBundle(train, val, test, meta)


def _cached_table(path: Path, options: dict[str, Any]) -> tuple[np.memmap, np.ndarray,
                                                                 dict[str, Any]]:
    """(x memory-mapped float32 (N, F), y, info) of a CSV file: read from its cache, or parsed
    in chunks into it first when the file (size, mtime) or the options changed."""
    folder = cache_folder(path)
    key = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:12]
    stem = folder / f"csv-{path.name}-{key}"
    x_path, y_path, manifest_path = (stem.with_name(stem.name + s)
                                     for s in (".npy", "-y.npy", ".json"))
    entry = file_entries(path.parent, [path.name]) if path.is_file() else None
    info = read_manifest(manifest_path) or {}
    if entry is not None and info.get("version") == 1 and info.get("file") == entry:
        x = open_array(x_path, (info["rows"], len(info["features"])), np.float32)
        y = open_array(y_path, (info["rows"],), np.dtype(info["y_dtype"]))
        if x is not None and y is not None:
            return x, np.array(y), {**info, "cache": str(x_path)}
    with new_files_in(folder):
        with atomic_path(x_path) as tmp:
            y, info = _parse_into(tmp, path, options)
        with atomic_path(y_path) as tmp, open(tmp, "wb") as f:
            np.save(f, y)
        info.update(version=1, file=file_entries(path.parent, [path.name]), rows=len(y),
                    y_dtype=str(y.dtype))
        atomic_write_json(manifest_path, info, indent=None)
    x = open_array(x_path, (len(y), len(info["features"])), np.float32)
    assert x is not None
    return x, y, {**info, "cache": str(x_path)}


def _parse_into(out: Path, path: Path, options: dict[str, Any]) -> tuple[np.ndarray,
                                                                          dict[str, Any]]:
    """Parse the CSV file chunk by chunk, features into the .npy file `out` (float32); the
    targets (class ids of the sorted classes, or float64 values) and what was parsed."""
    o = options
    tables = iter_csv(path, delimiter=o["delimiter"], header=o["header"], encoding=o["encoding"])
    first = next(tables)
    t, f_idx = _columns(first, o["target"], o["features"])
    lookup: dict[str, int] = {}  # class -> id in order of appearance
    targets: list[np.ndarray] = []

    def features() -> Iterator[np.ndarray]:
        for table in itertools.chain([first], tables):
            if o["task"] == "classification":
                targets.append(_label_ids(table, t, lookup))
            else:
                targets.append(table.numbers(t))
            yield np.stack([table.numbers(i) for i in f_idx], axis=1)

    write_rows(out, (len(f_idx),), np.float32, features())
    y = np.concatenate(targets)
    info: dict[str, Any] = {"features": [first.columns[i] for i in f_idx],
                            "target": first.columns[t], "classes": None}
    if o["task"] == "classification":
        classes = sorted(lookup, key=_class_sort_key)
        remap = np.empty(len(classes), np.int64)
        remap[[lookup[c] for c in classes]] = np.arange(len(classes))
        y, info["classes"] = remap[y], classes
    return y, info


def _columns(table: Table, target: Column, features: list[Column] | Column | None
             ) -> tuple[int, list[int]]:
    """(target column, feature columns): every other column when `features` is None."""
    t = table.column_index(target)
    if features is None:
        f_idx = [i for i in range(len(table.columns)) if i != t]
    else:
        if isinstance(features, str | int):
            features = [features]
        f_idx = [table.column_index(c) for c in features]
    if t in f_idx:
        raise DataError(f"{table.path}: target column {table.columns[t]!r} is also a feature")
    if len(set(f_idx)) != len(f_idx):
        raise DataError(f"{table.path}: a feature column is listed twice: {features!r}")
    if not f_idx:
        raise DataError(f"{table.path}: no feature columns besides the target")
    return t, f_idx


def _label_ids(table: Table, t: int, lookup: dict[str, int]) -> np.ndarray:
    """Ids of the target column's labels in order of first appearance (`lookup` grows)."""
    labels = [v.strip() for v in table.strings(t)]
    for value, line in zip(labels, table.lines, strict=True):
        if not value:
            raise DataError(f"{table.path}, line {line}, column {table.columns[t]!r}: empty label")
    return np.array([lookup.setdefault(v, len(lookup)) for v in labels], dtype=np.int64)


def _scale(parts: list[Split], attr: str, standardize: bool) -> dict[str, Any] | None:
    """Standardise `attr` (x or y) of every split with the training split's statistics (the
    first part), or only make it float32; the scaler's meta, or None."""
    if not standardize:
        for s in parts:
            setattr(s, attr, getattr(s, attr).astype(np.float32))
        return None
    scaler = Standardizer.fit(getattr(parts[0], attr))
    for s in parts:
        setattr(s, attr, scaler.transform(getattr(s, attr)))
    return scaler.to_meta()


# Named real series (files in the 'timeseries' download source) and their value column.
NAMED_SERIES: dict[str, tuple[str, str]] = {
    "airpassengers": ("AirPassengers.csv", "value"),
    "daily_min_temperatures": ("daily-min-temperatures.csv", "Temp"),
}


def series(
    path: str | Path | None = None,
    *,
    column: Column | None = None,
    dataset: str | None = None,
    lookback: int = 30,
    horizon: int = 1,
    stride: int = 1,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    scale: str = "standard",
    root: str | Path | None = None,
    delimiter: str = ",",
    header: bool = True,
    download: bool = True,
    progress: Progress | None = None,
) -> DatasetBundle:
    """A univariate series from a CSV column, windowed for forecasting.

    Split chronologically into train / val / test; the scaler ('standard', 'minmax' or
    'none') is fitted on the training part only. Each sample is x = `lookback` past values
    (N, lookback, 1) and y = the next `horizon` values (N, horizon); a window belongs to the
    split its targets fall in (its inputs may reach back into the previous part, which is
    past data, not leakage). `column` defaults to the last column. Instead of `path`,
    `dataset` names a known series: airpassengers, daily_min_temperatures.
    """
    name = "series"
    lookback = check_positive_int("lookback", lookback, name)
    horizon = check_positive_int("horizon", horizon, name)
    stride = check_positive_int("stride", stride, name)
    val_fraction = check_fraction("val_fraction", val_fraction, name)
    test_fraction = check_fraction("test_fraction", test_fraction, name)
    if scale not in ("standard", "minmax", "none"):
        raise DataError(f"dataset 'series': scale must be standard, minmax or none, got {scale!r}")
    if path is None:
        path, column = _named_series(dataset, column, root, progress, download)
    table = read_csv(path, delimiter=delimiter, header=header)
    c = table.column_index(-1 if column is None else column)
    values = table.numbers(c)

    n = len(values)
    n_train, n_val, n_test = split_counts(n, (val_fraction, test_fraction), name)
    scaler = _series_scaler(scale, values[:n_train])
    scaled = scaler.transform(values) if scaler is not None else values.astype(np.float32)
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val),
              "test": (n_train + n_val, n)}
    splits = {part: _windows(scaled, lo, hi, lookback, horizon, stride, f"{table.path}: the "
                             f"{part} part ({hi - lo} of {n} values)")
              for part, (lo, hi) in bounds.items()}
    train = splits["train"]
    assert train is not None
    meta: dict[str, Any] = {
        "name": "series", "task": "regression", "input_shape": [lookback, 1],
        "input_dtype": "float32", "output_dim": horizon, "lookback": lookback,
        "horizon": horizon, "column": table.columns[c],
        "scaler": scaler.to_meta() if scaler is not None else None,
        "points": {"train": n_train, "val": n_val, "test": n_test}, "files": [str(table.path)],
    }
    return DatasetBundle(train, splits["val"], splits["test"], meta)


def _series_scaler(scale: str, train_values: np.ndarray) -> Standardizer | None:
    if scale == "standard":
        return Standardizer.fit(train_values)
    if scale == "minmax":
        return Standardizer.fit_minmax(train_values)
    return None


def _named_series(dataset: str | None, column: Column | None, root: str | Path | None,
                  progress: Progress | None, download: bool) -> tuple[Path, Column]:
    """The file (fetched) and value column of a known series."""
    if dataset is None:
        raise DataError(
            f"dataset 'series': give a CSV path or a named dataset ({', '.join(NAMED_SERIES)})"
        )
    key = dataset.replace("-", "_").lower()
    if key not in NAMED_SERIES:
        raise DataError(
            f"dataset 'series': unknown series {dataset!r}; known: {', '.join(NAMED_SERIES)}"
        )
    filename, default_column = NAMED_SERIES[key]
    path = fetch("timeseries", filename, root, progress=progress, download=download)
    return path, default_column if column is None else column


def _windows(scaled: np.ndarray, lo: int, hi: int, lookback: int, horizon: int, stride: int,
             what: str) -> Split | None:
    """The windows whose targets fall in values [lo, hi) (inputs may reach back before lo),
    every `stride`-th; None for an empty part."""
    if hi == lo:
        return None
    win = np.lib.stride_tricks.sliding_window_view(scaled, lookback + horizon)
    starts = np.arange(len(win))  # window i: inputs i..i+L-1, targets i+L..i+L+H-1
    first = max(lo - lookback, 0)
    starts = starts[(starts >= first) & (starts + lookback + horizon <= hi)]
    starts = starts[starts + lookback >= lo][::stride]
    if len(starts) == 0:
        raise DataError(f"{what} is too short for lookback={lookback} and horizon={horizon}")
    block = win[starts]
    return Split(np.ascontiguousarray(block[:, :lookback, None]),
                 np.ascontiguousarray(block[:, lookback:]))
