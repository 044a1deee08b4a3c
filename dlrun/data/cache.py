"""Decoded-data caches: one .npy array, memory-mapped when read, plus a JSON manifest saying
what it was built from (the source files' names, sizes and modification times), so that a
dataset is decoded once and decoded again only when its files change.

The cache goes beside the data, in `<data>/.dlrun-cache/`. When that folder cannot be written
(read-only data), it goes to `$DLRUN_DATA_CACHE`, else `~/.cache/dlrun/cache/`, in a folder
named after the data's path. Both files are written atomically (dlrun.atomic): the array first,
then the manifest, so a cache is used only once it is whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.atomic import atomic_path, atomic_write_json

CACHE_ENV = "DLRUN_DATA_CACHE"
LOCAL_FOLDER = ".dlrun-cache"


def cache_folder(source: Path) -> Path:
    """Where the cache of `source` (a data folder or file) lives: beside it when writable."""
    source = Path(source).resolve()
    parent = source if source.is_dir() else source.parent
    local = parent / LOCAL_FOLDER
    if os.access(local if local.is_dir() else parent, os.W_OK | os.X_OK):
        return local
    base = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "dlrun" / "cache")
    digest = hashlib.sha256(str(source).encode()).hexdigest()[:16]
    return base / f"{source.name}-{digest}"


def fallback_note(source: Path, array_path: Path) -> list[str]:
    """One line saying where the cache went when it is not beside the data (else none)."""
    if array_path.parent.name == LOCAL_FOLDER:
        return []
    return [f"{source}: its folder is not writable; the decoded cache is {array_path}"]


def file_entries(root: Path, names: list[str]) -> list[list[Any]]:
    """[name, size, mtime_ns] of each file (relative to root): what a manifest compares."""
    out = []
    for name in names:
        st = (root / name).stat()
        out.append([name, st.st_size, st.st_mtime_ns])
    return out


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest at `path`, None when missing or unreadable (the cache is then rebuilt)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def open_array(path: Path, shape: tuple[int, ...], dtype: Any) -> np.memmap | None:
    """The cached array, memory-mapped read-only, when it has the expected shape and dtype."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if not isinstance(arr, np.memmap) or arr.shape != tuple(shape) or arr.dtype != dtype:
        return None
    return arr


@contextlib.contextmanager
def new_files_in(folder: Path) -> Iterator[None]:
    """Around building a cache: when the block fails, a cache folder it created is removed
    again (an existing cache stays as it was: its files are replaced only once whole)."""
    created = not folder.exists()
    try:
        yield
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def write_cache(array_path: Path, manifest_path: Path, shape: tuple[int, ...], dtype: Any,
                fill: Callable[[np.memmap], None], manifest: dict[str, Any]) -> np.memmap:
    """Build the array with `fill` (rows written into a memory-mapped temporary file, so it
    never has to fit in memory), then the manifest, both atomically; the array, mapped
    read-only. On an error nothing is left behind (not even a new empty cache folder)."""
    with new_files_in(array_path.parent):
        with atomic_path(array_path) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
            fill(out)
            out.flush()
            del out
        atomic_write_json(manifest_path, manifest, indent=None)
    arr = open_array(array_path, shape, np.dtype(dtype))
    assert arr is not None
    return arr


def _npy_header(shape: tuple[int, ...], dtype: np.dtype, length: int | None = None) -> bytes:
    """A version 1.0 .npy header for `shape`, padded to `length` bytes (default: the shortest
    multiple of 64), so that a header written before the row count is known can be rewritten
    in place once it is."""
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                 "shape": tuple(shape)})
    size = length or -(-(10 + len(text) + 1) // 64) * 64
    body = text.ljust(size - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + (size - 10).to_bytes(2, "little") + body.encode("latin1")


def write_rows(path: Path, row_shape: tuple[int, ...], dtype: Any,
               chunks: Any) -> int:
    """Stream `chunks` (arrays of rows of `row_shape`) into the .npy file `path` without knowing
    the row count in advance (the header is rewritten at the end); the number of rows."""
    dtype = np.dtype(dtype)
    reserved = len(_npy_header((1 << 62, *row_shape), dtype))
    rows = 0
    with open(path, "wb") as f:
        f.write(b"\0" * reserved)
        for chunk in chunks:
            block = np.ascontiguousarray(chunk, dtype=dtype).reshape(-1, *row_shape)
            f.write(block.tobytes())
            rows += len(block)
        f.seek(0)
        f.write(_npy_header((rows, *row_shape), dtype, reserved))
    return rows
