"""benchmarks/data_loader.py: a workload's row (loader, step and wait timings) and the table."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks import data_loader

ROOT = Path(__file__).resolve().parents[2]


def test_a_row_per_workload_and_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # configs name their files relative to the project root
    args = argparse.Namespace(image_folder=None, device="cpu", steps=3, warmup=1)
    row = data_loader.measure("csv", "linreg_csv.yaml", [], args)
    assert row["dataset"] == "csv" and row["batch"] == 32
    assert row["loader_ms"] > 0 and row["step_ms"] > 0 and row["wait_ms"] >= 0
    skipped = data_loader.measure("folder", "mnist_cnn.yaml", [data_loader.FOLDER], args)
    assert skipped == {"workload": "folder", "skipped": "no --image-folder"}
    table = data_loader.to_markdown([row, skipped])
    assert table.count("\n") == 3 and "| csv | 32 |" in table
