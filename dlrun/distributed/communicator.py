"""The summing all-reduce behind the engine's `all_reduce` primitive: MPI on host arrays,
NCCL (through CuPy) on device arrays. Each call is timed and its payload counted, so the
summary can say what communication costs per step."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from dlrun.distributed.world import World, import_mpi
from dlrun.errors import DistributedError


class Stats:
    """Per all-reduce, in call order: the seconds this rank was held up by it (a blocking call,
    or the wait that ends a started one), when it began and when it was seen complete (by a
    progress test or its wait; a blocking call: its own span), and its payload bytes."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.spans: list[tuple[float, float]] = []
        self.bytes: list[int] = []

    def add(self, seconds: float, nbytes: int, span: tuple[float, float] | None = None) -> None:
        if span is None:  # a blocking call, ended now
            now = time.perf_counter()
            span = (now - seconds, now)
        self.seconds.append(seconds)
        self.spans.append(span)
        self.bytes.append(nbytes)

    def step(self, end: int, k: int) -> tuple[float, float]:
        """For the step whose `k` all-reduces end at call `end`: seconds held up, and seconds
        from the first start to the last completion (under way)."""
        spans = self.spans[end - k:end]
        return sum(self.seconds[end - k:end]), max(e for _, e in spans) - min(b for b, _ in spans)

    def per_step(self, k: int, skip: int = 0) -> tuple[list[float], list[float]]:
        """Held-up and under-way seconds of every step of `k` all-reduces (the first `skip`
        steps left out, unless that leaves none)."""
        pairs = [self.step(e, k) for e in range(k, len(self.seconds) + 1, k)]
        pairs = pairs[skip:] or pairs
        return [h for h, _ in pairs], [f for _, f in pairs]


def _address(x: np.ndarray) -> int:
    return x.__array_interface__["data"][0]


class MpiCommunicator:
    """MPI_Allreduce(SUM) on NumPy arrays, in place when `out` is the input. Device arrays
    travel through host memory (PyPI's MPICH is not CUDA-aware; NCCL is the GPU backend)."""

    def __init__(self, world: World) -> None:
        self.MPI = import_mpi()
        self.comm, self.rank, self.size = world.comm, world.rank, world.size
        self.guard = world.guard
        self.stats = Stats()
        self.pending: dict[int, Any] = {}  # buffer address -> its MPI request

    def start(self, x: Any) -> Any:
        """MPI_Iallreduce(SUM) in place on `x` (a contiguous NumPy array; a device array is
        summed at once, through host memory)."""
        if not isinstance(x, np.ndarray) or not x.flags.c_contiguous:
            return self.all_reduce(x, x)
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, x, op=self.MPI.SUM)
        self.pending[_address(x)] = [request, time.perf_counter(), None]
        return x

    def wait(self, x: Any) -> Any:
        """Wait for the all-reduce `start(x)` began (timed: the part not hidden)."""
        entry = self.pending.pop(_address(x), None) if isinstance(x, np.ndarray) else None
        if entry is None:
            return x
        request, began, done = entry
        t0 = time.perf_counter()
        with self.guard("an all-reduce"):
            request.Wait()
        t1 = time.perf_counter()
        self.stats.add(t1 - t0, x.nbytes, (began, done or t1))
        return x

    def progress(self) -> None:
        """Test the started all-reduces: MPICH moves them on only inside MPI calls."""
        for entry in self.pending.values():
            if entry[2] is None and entry[0].Test():
                entry[2] = time.perf_counter()

    def all_reduce(self, x: Any, out: Any | None = None) -> Any:
        if not isinstance(x, np.ndarray):  # a CuPy array
            host = self.all_reduce(x.get())
            if out is None:
                out = x.copy()
            out.set(host)
            return out
        t0 = time.perf_counter()
        if out is None:
            out = np.empty_like(x)
        with self.guard("an all-reduce"):
            if out is x and x.flags.c_contiguous:
                self.comm.Allreduce(self.MPI.IN_PLACE, out, op=self.MPI.SUM)
            else:
                self.comm.Allreduce(np.ascontiguousarray(x), out, op=self.MPI.SUM)
        self.stats.add(time.perf_counter() - t0, x.nbytes)
        return out


class NcclCommunicator:
    """ncclAllReduce(sum) on CuPy arrays, on the current stream; one GPU per rank. The time
    is the host's, around a stream synchronisation, so it covers the collective itself."""

    TYPES = {"float16": "NCCL_FLOAT16", "float32": "NCCL_FLOAT32", "float64": "NCCL_FLOAT64"}

    def __init__(self, world: World) -> None:
        try:
            import cupy
            from cupy.cuda import nccl
        except ImportError as e:
            raise DistributedError(f"distributed.backend 'nccl' needs CuPy with NCCL ({e}); "
                                   "use backend 'mpi' or install cupy-cuda12x/13x") from None
        self.cupy, self.nccl = cupy, nccl
        self.rank, self.size = world.rank, world.size
        uid = world.bcast_json(list(nccl.get_unique_id()) if world.rank == 0 else None)
        self.comm = nccl.NcclCommunicator(world.size, tuple(uid), world.rank)
        self.stats = Stats()

    def all_reduce(self, x: Any, out: Any | None = None) -> Any:
        t0 = time.perf_counter()
        if out is None:
            out = self.cupy.empty_like(x)
        x = self.cupy.ascontiguousarray(x)
        kind = self.TYPES.get(x.dtype.name)
        if kind is None:
            raise DistributedError(f"NCCL all-reduce: unsupported dtype {x.dtype}")
        stream = self.cupy.cuda.get_current_stream()
        self.comm.allReduce(x.data.ptr, out.data.ptr, x.size, getattr(self.nccl, kind),
                            self.nccl.NCCL_SUM, stream.ptr)
        stream.synchronize()
        self.stats.add(time.perf_counter() - t0, x.nbytes)
        return out

    def start(self, x: Any) -> Any:
        """NCCL runs on its own stream already: the sum is done here, `wait` has nothing to do."""
        return self.all_reduce(x, x)

    def wait(self, x: Any) -> Any:
        return x

    def progress(self) -> None:
        pass


def make_communicator(world: World, backend: str, device: str) -> Any:
    """The communicator of `backend` ('auto': NCCL on CUDA devices, MPI on the CPU)."""
    if backend == "auto":
        backend = "nccl" if device.startswith("cuda") else "mpi"
    if backend == "nccl" and not device.startswith("cuda"):
        raise DistributedError("distributed.backend 'nccl' needs device 'cuda' (NCCL reduces "
                               "GPU memory); use 'mpi' or 'auto' on the CPU")
    world.backend = backend
    if backend == "mpi":
        return MpiCommunicator(world)
    import cupy

    cupy.cuda.Device(int(device.split(":")[1])).use()  # the communicator binds this GPU
    return NcclCommunicator(world)
