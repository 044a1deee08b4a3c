"""Run directories (`runs/<YYYYmmdd-HHMMSS>-<name>/`).

Every file the runner writes goes through `atomic_write_*` (defined in `dlrun.atomic`, re-exported
here): a temporary file in the same folder, flushed and fsynced, then `os.replace`d over the
target, so a crash or Ctrl-C leaves either the old file or the new one, never half of one. JSON is
written with `to_jsonable`, which stores the non-finite floats JSON cannot hold as the strings
"nan", "inf" and "-inf".
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from dlrun.atomic import (  # noqa: F401  (re-exported: the runner imports them from here)
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    from_jsonable,
    to_jsonable,
)
from dlrun.data.tokenize import Tokenizer, load_tokenizer, tokenizer_from_json, tokenizer_json
from dlrun.errors import CheckpointError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
SUMMARY_FILE = "summary.json"
CHECKPOINTS_DIR = "checkpoints"
PLOTS_DIR = "plots"
TENSORBOARD_DIR = "tensorboard"  # event files, only with logging.tensorboard: true
TOKENIZER_FILE = "tokenizer.json"  # language models: the tokenizer their ids belong to
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
    folder = stamped_dir(root, sanitize_name(name), now)
    (folder / CHECKPOINTS_DIR).mkdir()
    (folder / PLOTS_DIR).mkdir()
    return folder


def stamped_dir(root: Path | str, name: str, now: datetime | None = None) -> Path:
    """Create and return a new, empty `root/<YYYYmmdd-HHMMSS>-<name>/` (`name` already safe in
    a file name), `-2`, `-3`, ... appended on a clash; made with `mkdir(exist_ok=False)`, so
    two callers in the same second never share it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = f"{(now or datetime.now()).strftime(_STAMP)}-{name}"
    for i in range(1, 10_000):
        candidate = root / (base if i == 1 else f"{base}-{i}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{root / base}: too many folders with this name and time stamp")


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



def write_tokenizer(run_dir: Path | str, meta: dict[str, Any]) -> Path | None:
    """Keep the dataset's tokenizer in the run (a token folder's tokenizer.json, a text
    dataset's characters), once: eval and sampling then decode with the tokenizer the model
    learnt, whatever happens to the data later. None when the dataset has no tokenizer."""
    path = Path(run_dir) / TOKENIZER_FILE
    if path.exists():
        return path
    content = tokenizer_json(meta)
    return None if content is None else atomic_write_text(path, content)


def run_tokenizer(run_dir: Path | str, meta: dict[str, Any]) -> Tokenizer | None:
    """The run's tokenizer: its tokenizer.json, else (runs made before runs kept it) the one
    its dataset describes; None for data without one."""
    path = Path(run_dir) / TOKENIZER_FILE
    if path.is_file():
        return load_tokenizer(path)
    content = tokenizer_json(meta)
    return None if content is None else tokenizer_from_json(content)
