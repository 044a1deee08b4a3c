"""Run directories (`runs/<YYYYmmdd-HHMMSS>-<name>/`) and atomic file writes.

Every file the runner writes goes through `atomic_write_*`: a temporary file in the same folder,
flushed and fsynced, then `os.replace`d over the target, so a crash or Ctrl-C leaves either the old
file or the new one, never half of one. JSON is written with `to_jsonable`, which stores the
non-finite floats JSON cannot hold as the strings "nan", "inf" and "-inf".
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.errors import CheckpointError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
SUMMARY_FILE = "summary.json"
CHECKPOINTS_DIR = "checkpoints"
PLOTS_DIR = "plots"
CHECKPOINT_SUFFIXES = (".safetensors", ".json")

_STAMP = "%Y%m%d-%H%M%S"
_STAMP_RE = re.compile(r"^\d{8}-\d{6}-")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 64


def sanitize_name(name: str) -> str:
    """A run name safe in a file name: letters, digits, `.`, `_`, `-` (others become `-`)."""
    clean = _UNSAFE.sub("-", str(name)).strip("-.")
    clean = re.sub(r"-{2,}", "-", clean)[:_MAX_NAME].strip("-.")
    return clean or "run"


def create_run_dir(root: Path | str, name: str, now: datetime | None = None) -> Path:
    """Create `root/<YYYYmmdd-HHMMSS>-<name>/` with `checkpoints/` and `plots/`.

    An existing folder is never reused: a clash gets `-2`, `-3`, ... appended. The folder is
    created with `mkdir(exist_ok=False)`, so two runs started in the same second cannot share it.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = f"{(now or datetime.now()).strftime(_STAMP)}-{sanitize_name(name)}"
    for i in range(1, 10_000):
        candidate = root / (base if i == 1 else f"{base}-{i}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        (candidate / CHECKPOINTS_DIR).mkdir()
        (candidate / PLOTS_DIR).mkdir()
        return candidate
    raise FileExistsError(f"{root / base}: too many runs with this name and time stamp")


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write `data` to `path` atomically (temp file in the same folder, fsync, os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: Path | str, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: Path | str, obj: Any, indent: int | None = 2) -> Path:
    """Write `obj` as JSON atomically; NaN/Inf become "nan"/"inf"/"-inf" (see `to_jsonable`)."""
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False, ensure_ascii=False)
    return atomic_write_text(path, text + "\n")


def to_jsonable(obj: Any) -> Any:
    """`obj` as plain JSON data: NumPy scalars/arrays to Python, tuples to lists, paths to str.

    Non-finite floats become the strings "nan", "inf" and "-inf" (JSON has no NaN); `from_jsonable`
    turns them back into floats.
    """
    if obj is None or isinstance(obj, bool | str | int):
        return obj
    if isinstance(obj, float | np.floating):
        value = float(obj)
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, datetime):
        return obj.isoformat()
    raise TypeError(f"cannot store a {type(obj).__name__} as JSON: {obj!r}")


_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def from_jsonable(obj: Any) -> Any:
    """Undo `to_jsonable`'s float encoding: "nan"/"inf"/"-inf" strings back to floats."""
    if isinstance(obj, str):
        return _NONFINITE.get(obj, obj)
    if isinstance(obj, dict):
        return {k: from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_jsonable(v) for v in obj]
    return obj


def is_run_dir(path: Path | str) -> bool:
    """True for a folder that looks like a run (config, metrics or checkpoints inside)."""
    path = Path(path)
    return path.is_dir() and any(
        (path / p).exists() for p in (CONFIG_FILE, METRICS_FILE, CHECKPOINTS_DIR, SUMMARY_FILE)
    )


def find_run(path: Path | str, root: Path | str | None = None) -> Path:
    """The run folder that `path` names: a run folder, its `checkpoints/` or a checkpoint file.

    With `root` (e.g. "runs"), `path` may also be a run's folder name under it, or a unique part
    of one (`mnist-mlp` finds `runs/20240101-120000-mnist-mlp`). Raises CheckpointError otherwise.
    """
    p = Path(path)
    if not p.exists() and root is not None:
        p = _find_under(Path(root), str(path))
    if not p.exists():
        raise CheckpointError(f"{path}: no such run folder or checkpoint")
    if p.is_file():
        if p.suffix not in CHECKPOINT_SUFFIXES:
            raise CheckpointError(f"{p}: not a run folder or a checkpoint (.safetensors or .json)")
        parent = p.parent
        return parent.parent if parent.name == CHECKPOINTS_DIR else parent
    if p.name == CHECKPOINTS_DIR and is_run_dir(p.parent):
        return p.parent
    if not is_run_dir(p):
        raise CheckpointError(
            f"{p}: not a run folder (no {CONFIG_FILE}, {METRICS_FILE} or {CHECKPOINTS_DIR}/ inside)"
        )
    return p


def find_run_config(path: Path | str) -> tuple[Path, Path]:
    """(run folder, its config.yaml) for a run folder, its checkpoints/ or a checkpoint file."""
    run = find_run(path)
    config = run / CONFIG_FILE
    if not config.is_file():
        raise CheckpointError(f"{run}: not a run folder (no {CONFIG_FILE})")
    return run, config


def list_runs(root: Path | str) -> list[Path]:
    """Run folders directly under `root`, oldest first (by their time-stamped names)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if is_run_dir(p))


def _find_under(root: Path, name: str) -> Path:
    exact = root / name
    if exact.exists():
        return exact
    matches = [p for p in list_runs(root) if name in p.name or _STAMP_RE.sub("", p.name) == name]
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches[-5:])
        raise CheckpointError(f"{name}: {len(matches)} runs in {root} match ({names}); be precise")
    return matches[0] if matches else exact


def _file_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return 0o644


def _fsync_dir(folder: Path) -> None:
    # Makes the rename durable on POSIX; not possible (nor needed) everywhere.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
