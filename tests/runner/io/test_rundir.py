"""Run folders: naming, collisions, atomic writes, resolving a run from a path."""

from __future__ import annotations

import json
import math
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from dlrun.errors import CheckpointError
from dlrun.runner.io.rundir import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    create_run_dir,
    find_run,
    from_jsonable,
    list_runs,
    sanitize_name,
    to_jsonable,
)

NOW = datetime(2024, 5, 6, 7, 8, 9)


def test_run_dir_name_and_layout(tmp_path: Path) -> None:
    run = create_run_dir(tmp_path / "runs", "mnist mlp/v2", now=NOW)
    assert run == tmp_path / "runs" / "20240506-070809-mnist-mlp-v2"
    assert (run / "checkpoints").is_dir() and (run / "plots").is_dir()


@pytest.mark.parametrize(
    ("name", "clean"),
    [("ok_name-1.0", "ok_name-1.0"), ("../../etc", "etc"), ("", "run"), ("  ", "run"),
     ("a" * 200, "a" * 64), ("é/ü", "run")],
)
def test_sanitize_name(name: str, clean: str) -> None:
    assert sanitize_name(name) == clean


def test_collision_gets_a_suffix_and_leaves_existing_runs_alone(tmp_path: Path) -> None:
    first = create_run_dir(tmp_path, "exp", now=NOW)
    (first / "config.yaml").write_text("precious")
    second = create_run_dir(tmp_path, "exp", now=NOW)
    third = create_run_dir(tmp_path, "exp", now=NOW)
    assert second.name == "20240506-070809-exp-2" and third.name == "20240506-070809-exp-3"
    assert (first / "config.yaml").read_text() == "precious"
    assert sorted(p.name for p in first.iterdir()) == ["checkpoints", "config.yaml", "plots"]


def test_atomic_writes_leave_no_temp_files(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "sub" / "b.txt", "héllo")
    atomic_write_json(tmp_path / "c.json", {"x": np.float32(1.5), "n": np.int64(3)})
    atomic_write_text(tmp_path / "b2.txt", "old")
    atomic_write_text(tmp_path / "b2.txt", "new")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "sub" / "b.txt").read_text(encoding="utf-8") == "héllo"
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": 1.5, "n": 3}
    assert (tmp_path / "b2.txt").read_text() == "new"
    names = [p.name for p in tmp_path.rglob("*")]
    assert not [n for n in names if n.startswith(".") or n.endswith(".tmp")]
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "summary.json"
    target.write_text("old")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)  # what dlrun.atomic calls
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["summary.json"]


def test_json_values_and_non_finite_floats() -> None:
    data = {"a": math.nan, "b": [math.inf, -math.inf, np.float64(2.0)], "c": (1, True, None),
            "d": np.arange(3), "p": Path("x/y")}
    out = to_jsonable(data)
    assert out == {"a": "nan", "b": ["inf", "-inf", 2.0], "c": [1, True, None], "d": [0, 1, 2],
                   "p": "x/y"}
    json.dumps(out, allow_nan=False)
    back = from_jsonable(out)
    assert math.isnan(back["a"]) and back["b"][:2] == [math.inf, -math.inf]
    with pytest.raises(TypeError, match="cannot store a object"):
        to_jsonable(object())


def test_find_run_from_every_kind_of_path(tmp_path: Path) -> None:
    run = create_run_dir(tmp_path / "runs", "mnist", now=NOW)
    (run / "config.yaml").write_text("x: 1\n")
    ckpt = run / "checkpoints" / "last.safetensors"
    ckpt.write_bytes(b"")
    (run / "checkpoints" / "last.json").write_text("{}")
    assert find_run(run) == run
    assert find_run(run / "checkpoints") == run
    assert find_run(ckpt) == run
    assert find_run(run / "checkpoints" / "last.json") == run
    assert find_run("mnist", root=tmp_path / "runs") == run
    assert find_run(run.name, root=tmp_path / "runs") == run
    assert list_runs(tmp_path / "runs") == [run]


def test_find_run_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nowhere: no such run folder"):
        find_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty: not a run folder"):
        find_run(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CheckpointError, match="not a run folder or a checkpoint"):
        find_run(tmp_path / "notes.txt")
    for stamp in ("20240101-000000", "20240102-000000"):
        (create_run_dir(tmp_path / "runs", "exp", now=datetime.strptime(stamp, "%Y%m%d-%H%M%S"))
         / "config.yaml").write_text("x: 1\n")
    with pytest.raises(CheckpointError, match="2 runs in .* match"):
        find_run("exp", root=tmp_path / "runs")
