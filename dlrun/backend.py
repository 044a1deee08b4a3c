"""Device handling: device string -> array module (NumPy or CuPy), synchronize, memory figures.

CuPy is imported only when a CUDA device is asked for, so CPU-only installs never touch it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy

from dlrun.errors import DeviceError

_cupy: ModuleType | None = None
_cupy_error: str | None = None


def _import_cupy() -> ModuleType:
    global _cupy, _cupy_error
    if _cupy is not None:
        return _cupy
    if _cupy_error is not None:
        raise DeviceError(_cupy_error)
    try:
        import cupy
    except ImportError:
        _cupy_error = (
            "device 'cuda' needs CuPy, which is not installed: "
            "pip install 'dlrun[cuda12]' (CUDA 12) or 'dlrun[cuda13]' (CUDA 13)"
        )
        raise DeviceError(_cupy_error) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError when no driver / no GPU
        count = 0
        detail = f" ({e})"
    else:
        detail = ""
    if count == 0:
        _cupy_error = f"device 'cuda' asked for, but CuPy finds no GPU{detail}"
        raise DeviceError(_cupy_error)
    _cupy = cupy
    return cupy


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    try:
        _import_cupy()
    except DeviceError:
        return False
    return True


def normalize_device(device: str | None) -> str:
    """'cpu' | 'cuda' | 'cuda:N' | 'auto' | None -> 'cpu' or 'cuda:N'."""
    if device is None or device == "cpu":
        return "cpu"
    if device == "auto":
        return "cuda:0" if cuda_available() else "cpu"
    if device == "cuda":
        device = "cuda:0"
    if device.startswith("cuda:") and device[5:].isdigit():
        cupy = _import_cupy()
        index = int(device[5:])
        count = cupy.cuda.runtime.getDeviceCount()
        if index >= count:
            raise DeviceError(f"device {device!r} asked for, but only {count} GPU(s) are visible")
        return device
    raise DeviceError(f"unknown device {device!r}: expected 'cpu', 'cuda', 'cuda:N' or 'auto'")


def get_xp(device: str) -> ModuleType:
    """The array module for a normalized device string."""
    if device == "cpu":
        return numpy
    return _import_cupy()


def array_module(array: Any) -> ModuleType:
    """The array module an array belongs to: numpy, or cupy for a GPU array."""
    if isinstance(array, numpy.ndarray | numpy.generic):
        return numpy
    return _import_cupy()


def device_of(array: Any) -> str:
    """The device string of a backend array."""
    if isinstance(array, numpy.ndarray | numpy.generic):
        return "cpu"
    return f"cuda:{array.device.id}"


def to_device(array: Any, device: str) -> Any:
    """Copy an array to the given normalized device (no copy when already there)."""
    if device == "cpu":
        if isinstance(array, numpy.ndarray):
            return array
        if hasattr(array, "get"):
            return array.get()
        return numpy.asarray(array)
    cupy = _import_cupy()
    with cupy.cuda.Device(int(device[5:])):
        return cupy.asarray(array)


def synchronize(device: str) -> None:
    """Wait for all queued work on the device (a no-op on the CPU)."""
    if device != "cpu":
        _import_cupy().cuda.Device(int(device[5:])).synchronize()


def memory_stats(device: str) -> dict[str, int]:
    """Bytes in use on a CUDA device's memory pool (empty on the CPU)."""
    if device == "cpu":
        return {}
    pool = _import_cupy().get_default_memory_pool()
    return {"used_bytes": int(pool.used_bytes()), "total_bytes": int(pool.total_bytes())}


_ALLOCATOR_TUNED: list[bool] = []


def tune_host_allocator() -> bool:
    """Keep freed large blocks in glibc's heap instead of unmapping them (mallopt), so a training
    loop that frees and re-allocates the same large temporaries every step does not fault the
    pages back in each time (thousands of minor page faults per step in eager mode). Like a
    framework's caching allocator; the cost is memory not returned to the OS while training.
    Set DLRUN_MALLOC_TUNING=0 to leave malloc alone. Returns whether the tuning is in effect."""
    if _ALLOCATOR_TUNED:
        return _ALLOCATOR_TUNED[0]
    import ctypes
    import os
    import sys

    ok = False
    if os.environ.get("DLRUN_MALLOC_TUNING", "1") != "0" and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            m_trim_threshold, m_mmap_threshold = -1, -3
            ok = bool(libc.mallopt(m_mmap_threshold, 256 << 20)) and bool(
                libc.mallopt(m_trim_threshold, 1 << 30))
        except (OSError, AttributeError):  # not glibc
            ok = False
    _ALLOCATOR_TUNED.append(ok)
    return ok
