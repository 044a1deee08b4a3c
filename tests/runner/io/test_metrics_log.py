"""Metrics: JSONL and CSV kept in step, new columns, reading back, NaN/Inf, resume."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from dlrun.errors import DlrunError
from dlrun.runner.io.metrics_log import MetricsLogger, read_metrics, read_summary, write_summary


def csv_rows(run: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(run / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_jsonl_and_csv_in_step(tmp_path: Path) -> None:
    log = MetricsLogger(tmp_path)
    log.log({"step": 1, "epoch": 0, "train_loss": 2.5})
    log.log({"step": 2, "epoch": 0, "train_loss": np.float32(2.0)})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"step": 1, "epoch": 0, "train_loss": 2.5}, {"step": 2, "epoch": 0, "train_loss": 2.0}]
    header, rows = csv_rows(tmp_path)
    assert header == ["step", "epoch", "train_loss"]
    assert [r["train_loss"] for r in rows] == ["2.5", "2.0"]


def test_new_key_widens_the_csv(tmp_path: Path) -> None:
    log = MetricsLogger(tmp_path)
    log.log({"step": 1, "train_loss": 1.0})
    log.log({"step": 2, "train_loss": 0.9, "val_loss": 1.1, "val_acc": 0.5})
    log.log({"step": 3, "train_loss": 0.8})
    header, rows = csv_rows(tmp_path)
    assert header == ["step", "train_loss", "val_loss", "val_acc"]
    assert rows[0] == {"step": "1", "train_loss": "1.0", "val_loss": "", "val_acc": ""}
    assert rows[1]["val_acc"] == "0.5" and rows[2]["val_loss"] == ""
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_read_back(tmp_path: Path) -> None:
    assert read_metrics(tmp_path) == []
    log = MetricsLogger(tmp_path)
    records = [{"step": i, "loss": 1.0 / i, "ok": True, "lr": None} for i in range(1, 4)]
    for r in records:
        log.log(r)
    assert read_metrics(tmp_path) == records
    assert read_metrics(tmp_path / "metrics.jsonl") == records
    _, rows = csv_rows(tmp_path)
    assert rows[0]["ok"] == "true" and rows[0]["lr"] == ""


def test_nan_and_inf_are_strings_in_files_and_floats_when_read(tmp_path: Path) -> None:
    log = MetricsLogger(tmp_path)
    log.log({"step": 1, "loss": math.nan, "grad_norm": math.inf, "x": -np.inf})
    raw = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert raw == {"step": 1, "loss": "nan", "grad_norm": "inf", "x": "-inf"}
    _, rows = csv_rows(tmp_path)
    assert rows[0]["loss"] == "nan" and rows[0]["grad_norm"] == "inf"
    (back,) = read_metrics(tmp_path)
    assert math.isnan(back["loss"]) and back["grad_norm"] == math.inf and back["x"] == -math.inf


def test_partial_last_line_is_skipped_and_repaired(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo')
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 1.0}]
    log = MetricsLogger(tmp_path)  # a resumed run: repairs the file and rebuilds the CSV
    log.log({"step": 2, "loss": 0.5})
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]
    assert len(csv_rows(tmp_path)[1]) == 2


def test_malformed_middle_line_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(DlrunError, match=r"metrics\.jsonl:2: not a JSON object"):
        read_metrics(tmp_path)


def test_resume_continues_and_truncates(tmp_path: Path) -> None:
    log = MetricsLogger(tmp_path)
    for step in range(1, 6):
        log.log({"step": step, "loss": float(step)})
    (tmp_path / "metrics.csv").unlink()  # rebuilt from the JSONL, the source of truth
    log = MetricsLogger(tmp_path)
    log.truncate(after_step=3)  # resumed from a checkpoint at step 3
    log.log({"step": 4, "loss": 40.0, "val_loss": 1.0})
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
    header, rows = csv_rows(tmp_path)
    assert header == ["step", "loss", "val_loss"] and rows[-1]["loss"] == "40.0"
    assert len(rows) == 4 and len(log.records) == 4


def test_summary_round_trip(tmp_path: Path) -> None:
    assert read_summary(tmp_path) is None
    path = write_summary(tmp_path, {"best": {"val_loss": np.float64(0.1)}, "final": math.nan})
    assert path == tmp_path / "summary.json"
    assert json.loads(path.read_text())["final"] == "nan"
    back = read_summary(tmp_path)
    assert back is not None and back["best"] == {"val_loss": 0.1} and math.isnan(back["final"])
