"""What a training step costs on a CUDA device: device time from CUDA events, kernel launches and
host-device synchronisations per step, and the peak of the memory pool.

Launches and synchronisations are counted with PyTorch's profiler when torch is installed: its
CUPTI activity records every CUDA runtime and driver call the process makes, CuPy's included
(CuPy launches through cuLaunchKernel, cuBLAS through cudaLaunchKernel, a CUDA graph through
cudaGraphLaunch), so dlrun, dlrun + CUDA graphs and PyTorch are counted by one instrument.
Counting in dlrun's own dispatch would miss cuBLAS's internal kernels and CuPy's copies.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

# host API calls that put work on the GPU (one launch each)
LAUNCH_CALLS = frozenset({
    "cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx",
    "cudaGraphLaunch", "cuGraphLaunch", "cudaMemcpyAsync", "cudaMemsetAsync", "cuMemcpyAsync",
    "cuMemsetD8Async", "cuMemsetD32Async", "cudaLaunchCooperativeKernel",
})
# host API calls that wait for the GPU (a host-device synchronisation each)
SYNC_CALLS = frozenset({
    "cudaDeviceSynchronize", "cudaStreamSynchronize", "cudaEventSynchronize", "cudaMemcpy",
    "cuCtxSynchronize", "cuStreamSynchronize", "cuEventSynchronize", "cuMemcpyDtoH",
    "cuMemcpyDtoH_v2", "cuMemcpyHtoD", "cuMemcpyHtoD_v2",
})


def classify(events: Iterable[tuple[str, bool]]) -> dict[str, int]:
    """Counts from profiler events given as (name, ran_on_device): host launch calls, host
    synchronisations, and kernels executed on the device (memory copies/sets apart)."""
    counts = {"launch_calls": 0, "syncs": 0, "kernels": 0, "device_copies": 0}
    for name, on_device in events:
        if on_device:
            key = "device_copies" if name.startswith(("Memcpy", "Memset")) else "kernels"
            counts[key] += 1
        elif name in LAUNCH_CALLS:
            counts["launch_calls"] += 1
        elif name in SYNC_CALLS:
            counts["syncs"] += 1
    return counts


def per_step(counts: dict[str, int], steps: int, syncs_by_harness: int = 1) -> dict[str, float]:
    """Counts divided by the number of steps; the harness's own final synchronisation(s) are
    taken out of the sync count first."""
    out = {k: v / steps for k, v in counts.items()}
    out["syncs"] = max(counts["syncs"] - syncs_by_harness, 0) / steps
    return out


def profile_counts(step: Callable[[], Any], steps: int, synchronize: Callable[[], None]
                   ) -> dict[str, float] | None:
    """Launches, syncs and kernels per step, from torch.profiler (None without torch)."""
    try:
        from torch.autograd import DeviceType
        from torch.profiler import ProfilerActivity, profile
    except ImportError:
        return None
    synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        synchronize()
    events = [(e.name, e.device_type == DeviceType.CUDA) for e in prof.events()]
    return per_step(classify(events), steps)


def event_time_ms(step: Callable[[], Any], steps: int, cupy: Any) -> float:
    """Device time per step: CUDA events recorded around `steps` steps on the current stream
    (the host never waits in between, so this is the GPU's time when the host keeps ahead)."""
    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(steps):
        step()
    end.record()
    end.synchronize()
    return float(cupy.cuda.get_elapsed_time(start, end)) / steps


def wall_time_ms(step: Callable[[], Any], steps: int, synchronize: Callable[[], None]) -> float:
    """Host wall time per step, synchronised at the end (the CPU's measure)."""
    synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    return (time.perf_counter() - t0) * 1e3 / steps


def cupy_peak_bytes(step: Callable[[], Any], cupy: Any) -> int:
    """Peak device memory of one step: CuPy's pool keeps every block it grew to, so after
    emptying its cache and running one step, total_bytes() is the step's peak (plus what was
    live before it: parameters, optimizer state, plan buffers)."""
    pool = cupy.get_default_memory_pool()
    cupy.cuda.Device().synchronize()
    pool.free_all_blocks()
    step()
    cupy.cuda.Device().synchronize()
    return int(pool.total_bytes())


def torch_peak_bytes(step: Callable[[], Any]) -> int:
    """Peak device memory of one PyTorch step (its caching allocator's peak counter)."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated())
