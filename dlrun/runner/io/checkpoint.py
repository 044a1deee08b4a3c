"""Checkpoints as safetensors + JSON; nothing is ever unpickled.

A checkpoint `<tag>` is a pair in the run's `checkpoints/` folder:

- `<tag>.safetensors`: the arrays, by name: model weights as `model.<name>`, optimizer state as
  `optim.<...>` (see `pack_state`); dtypes are kept as given.
- `<tag>.json`: the caller's metadata (step, epoch, metrics, config hash, RNG, data-loader and
  schedule state, ...) plus `weights_sha256`, the SHA-256 of the safetensors file.

Every file is written atomically (a temporary file, then a rename), and a save never leaves the
tag without a complete pair: the new weights go to `<tag>.next.safetensors`, the JSON is switched
to them, the weights are renamed into place, and the JSON is switched back. The JSON holds the
weights' SHA-256, and the loader takes whichever of the two weight files matches it, so a crash at
any point leaves either the old checkpoint or the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.errors import CheckpointError
from dlrun.runner.io.rundir import (
    CHECKPOINTS_DIR,
    atomic_write_bytes,
    atomic_write_json,
    from_jsonable,
)

FORMAT = "dlrun-checkpoint"
FORMAT_VERSION = 1
MODEL_PREFIX = "model."
OPTIM_PREFIX = "optim."
# Keys save_checkpoint adds to the metadata; a caller's meta must not use them.
RESERVED_KEYS = frozenset(
    {"format", "format_version", "tag", "created", "dlrun_version", "weights_file",
     "weights_sha256", "weights_bytes", "arrays"}
)
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def save_checkpoint(
    path_dir: Path | str, tag: str, arrays: Mapping[str, Any], meta: Mapping[str, Any]
) -> Path:
    """Write `<tag>.safetensors` then `<tag>.json` into `path_dir`; returns the JSON's path.

    `arrays` maps names to NumPy (or CuPy) arrays; `meta` must be JSON-able (NumPy scalars and
    non-finite floats are converted, see `rundir.to_jsonable`).
    """
    from safetensors.numpy import save

    if not _TAG.match(tag):
        raise ValueError(f"checkpoint tag {tag!r}: use letters, digits, '.', '_' or '-'")
    clash = RESERVED_KEYS & set(meta)
    if clash:
        raise ValueError(f"checkpoint meta uses reserved keys: {', '.join(sorted(clash))}")
    host = {str(k): _to_numpy(v) for k, v in arrays.items()}
    blob = save(host, metadata={"format": FORMAT})
    folder = Path(path_dir)
    weights = folder / f"{tag}.safetensors"
    info = dict(meta)
    info.update(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        tag=tag,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        dlrun_version=_version(),
        weights_file=weights.name,
        weights_sha256=hashlib.sha256(blob).hexdigest(),
        weights_bytes=len(blob),
        arrays={k: {"dtype": str(a.dtype), "shape": list(a.shape)} for k, a in host.items()},
    )
    pending = folder / f"{tag}.next.safetensors"
    meta_path = folder / f"{tag}.json"
    atomic_write_bytes(pending, blob)
    atomic_write_json(meta_path, {**info, "weights_file": pending.name})
    os.replace(pending, weights)
    return atomic_write_json(meta_path, info)


def load_checkpoint(path: Path | str, tag: str = "last") -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint: a run folder or its `checkpoints/` (uses `tag`), or either file of a pair.

    Verifies the SHA-256 of the weights; any problem raises CheckpointError naming the file.
    Returns `(arrays, meta)`; meta's "nan"/"inf" strings are turned back into floats.
    """
    meta_path = resolve_checkpoint(path, tag)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_path}: unreadable checkpoint metadata ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_path}: not a dlrun checkpoint metadata file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{meta_path}: checkpoint format version {meta.get('format_version')!r}; this dlrun "
            f"reads version {FORMAT_VERSION}"
        )
    weights = meta_path.with_name(str(meta.get("weights_file", "")))
    if weights.parent != meta_path.parent or not weights.name:
        raise CheckpointError(f"{meta_path}: bad weights_file entry")
    if not weights.exists() and weights.name.endswith(".next.safetensors"):
        # a save was interrupted right after moving the new weights into place
        weights = weights.with_name(weights.name.replace(".next.safetensors", ".safetensors"))
    try:
        blob = weights.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{weights}: cannot read the weights ({e.strerror})") from None
    if len(blob) != meta.get("weights_bytes") or (
        hashlib.sha256(blob).hexdigest() != meta.get("weights_sha256")
    ):
        raise CheckpointError(
            f"{weights}: corrupt or truncated checkpoint ({len(blob)} bytes; the SHA-256 does not "
            f"match {meta_path.name}, e.g. after an interrupted write)"
        )
    arrays = _parse_safetensors(blob, weights)
    return arrays, from_jsonable(meta)


def resolve_checkpoint(path: Path | str, tag: str = "last") -> Path:
    """The metadata (.json) file of the checkpoint that `path` names; CheckpointError if none."""
    p = Path(path)
    if p.is_dir():
        folder = p / CHECKPOINTS_DIR if (p / CHECKPOINTS_DIR).is_dir() else p
        meta_path = folder / f"{tag}.json"
        if not meta_path.exists():
            found = sorted(x.stem for x in folder.glob("*.json"))
            hint = f"; checkpoints there: {', '.join(found)}" if found else "; none saved yet"
            raise CheckpointError(f"{meta_path}: no checkpoint {tag!r}{hint}")
        return meta_path
    if p.suffix == ".safetensors":
        meta_path = p.with_suffix(".json")
        if not p.exists():
            raise CheckpointError(f"{p}: no such checkpoint file")
        if not meta_path.exists():
            raise CheckpointError(
                f"{meta_path}: missing metadata for {p.name} (incomplete or foreign checkpoint)"
            )
        return meta_path
    if p.suffix == ".json":
        if not p.exists():
            raise CheckpointError(f"{p}: no such checkpoint file")
        return p
    if not p.exists():
        raise CheckpointError(f"{p}: no such run folder or checkpoint")
    raise CheckpointError(f"{p}: not a checkpoint (expected a .safetensors or .json file)")


def parameters_hash(arrays: Mapping[str, Any]) -> str:
    """SHA-256 over sorted names, dtypes, shapes and little-endian bytes (for summary.json)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = _to_numpy(arrays[name])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes(order="C"))
    return h.hexdigest()


def pack_state(
    model_state: Mapping[str, Any], optimizer_state: Mapping[str, Any] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Flatten a model and optimizer `state_dict()` into `(arrays, json_part)` for a checkpoint.

    Arrays are `model.<name>` and `optim.state.<index>.<name>`; the optimizer's param_groups
    go into json_part (store it in the checkpoint meta, e.g. under "optimizer").
    """
    arrays = {MODEL_PREFIX + k: _to_numpy(v) for k, v in model_state.items()}
    json_part: dict[str, Any] = {}
    if optimizer_state is not None:
        for index, slots in optimizer_state.get("state", {}).items():
            for name, value in slots.items():
                arrays[f"{OPTIM_PREFIX}state.{int(index)}.{name}"] = _to_numpy(value)
        json_part["param_groups"] = optimizer_state.get("param_groups", [])
    return arrays, json_part


def unpack_state(
    arrays: Mapping[str, np.ndarray], json_part: Mapping[str, Any] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    """Inverse of `pack_state`: `(model_state, optimizer_state or None)`."""
    model = {k[len(MODEL_PREFIX):]: v for k, v in arrays.items() if k.startswith(MODEL_PREFIX)}
    if json_part is None:
        return model, None
    state: dict[int, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        if key.startswith(OPTIM_PREFIX + "state."):
            _, _, index, name = key.split(".", 3)
            state.setdefault(int(index), {})[name] = value
    return model, {"state": state, "param_groups": list(json_part.get("param_groups", []))}


def _parse_safetensors(blob: bytes, path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    # safetensors reads an 8-byte header length, a JSON header and raw buffers; no code runs.
    if len(blob) < 8 or blob[8:9] != b"{":
        raise CheckpointError(f"{path}: not a safetensors file")
    try:
        loaded = load(blob)
    except Exception as e:  # SafetensorError, ValueError, ... from a malformed file
        raise CheckpointError(f"{path}: not a valid safetensors file ({e})") from None
    return {k: loaded[k] for k in sorted(loaded)}


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        value = value.numpy()  # dlrun.Tensor
    if hasattr(value, "get") and not isinstance(value, np.ndarray | Mapping):
        value = value.get()  # CuPy array
    arr = np.asarray(value)
    return arr if arr.flags.c_contiguous else arr.copy(order="C")


def _version() -> str:
    from dlrun import __version__

    return __version__
