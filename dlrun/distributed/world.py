"""The MPI job this process belongs to: detected from the launcher's environment, joined
through mpi4py only when there is one (a single process never imports MPI)."""

from __future__ import annotations

import json
import os
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlrun.distributed.watchdog import Beacon, Watchdog, leave_note
from dlrun.errors import DistributedError

# Sizes the MPI launchers put in each worker's environment: MPICH/Hydra (PMI), PMIx, Open MPI
SIZE_VARIABLES = ("PMI_SIZE", "PMIX_SIZE", "OMPI_COMM_WORLD_SIZE")
INSTALL_HINT = ("pip install 'dlrun[mpi]' (MPICH and mpi4py from PyPI; `make` installs them "
                "into .venv)")


def launched_size() -> int:
    """How many processes the launcher that started this one started (1 without one)."""
    for name in SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def import_mpi() -> Any:
    """mpi4py's MPI module, or a DistributedError saying what to install."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise DistributedError(f"multi-process training needs mpi4py and an MPI library "
                               f"({e}): {INSTALL_HINT}") from None
    return MPI


@dataclass
class World:
    """This process's place in the job and the host-side collectives the runner uses (the
    training step's all-reduce goes through `communicator`)."""

    comm: Any  # mpi4py.MPI.Comm
    rank: int
    size: int
    local_rank: int  # among the ranks on this machine: which GPU a rank uses
    communicator: Any = None  # set by runner.parallel.attach: MPI or NCCL
    backend: str = "mpi"
    hosts: list[str] = field(default_factory=list)  # each rank's host name, in rank order
    watchdog: Any = None  # distributed.watchdog.Watchdog: ends a rank stuck in a collective
    beacon: Any = None  # distributed.watchdog.Beacon: the launcher's is-it-alive probe

    def guard(self, what: str) -> Any:
        """A context timing a blocking collective against the watchdog (if there is one)."""
        return self.watchdog.guard(what) if self.watchdog is not None else nullcontext()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def bcast_json(self, value: Any) -> Any:
        """Rank 0's JSON-able value on every rank: its length, then its UTF-8 JSON bytes, with
        two MPI broadcasts of plain buffers (nothing pickled)."""
        data = json.dumps(value).encode() if self.rank == 0 else b""
        size = np.array([len(data)], dtype=np.int64)
        buf = np.frombuffer(data, dtype=np.uint8).copy() if self.rank == 0 else None
        with self.guard("a broadcast"):
            self.comm.Bcast(size, root=0)
            if buf is None:
                buf = np.empty(int(size[0]), dtype=np.uint8)
            self.comm.Bcast(buf, root=0)
        return json.loads(buf.tobytes().decode())

    def gather_json(self, value: Any) -> list[Any]:
        """Every rank's JSON-able value, in rank order, on every rank (plain byte buffers)."""
        data = np.frombuffer(json.dumps(value).encode(), dtype=np.uint8).copy()
        sizes = np.empty(self.size, dtype=np.int64)
        with self.guard("a gather"):
            self.comm.Allgather(np.array([data.size], dtype=np.int64), sizes)
            out = np.empty(int(sizes.sum()), dtype=np.uint8)
            self.comm.Allgatherv(data, [out, sizes])
        ends = np.cumsum(sizes)
        return [json.loads(out[e - n:e].tobytes().decode()) for n, e in zip(sizes, ends,
                                                                            strict=True)]

    def bcast_arrays(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rank 0's named NumPy arrays on every rank: names, shapes and dtypes as JSON, then
        each array's bytes with one MPI broadcast."""
        spec = self.bcast_json([[k, list(a.shape), a.dtype.str] for k, a in arrays.items()]
                               if self.rank == 0 else None)
        out = {}
        for name, shape, dtype in spec:
            buf = (np.ascontiguousarray(arrays[name]) if self.rank == 0
                   else np.empty(shape, dtype=np.dtype(dtype)))
            with self.guard("a broadcast"):
                self.comm.Bcast(buf.reshape(-1).view(np.uint8), root=0)
            out[name] = buf
        return out

    def sum_host(self, values: np.ndarray) -> np.ndarray:
        """The elementwise sum over ranks of a small host array (metric sums)."""
        MPI = import_mpi()
        values = np.ascontiguousarray(values)
        out = np.empty_like(values)
        with self.guard("a metric sum"):
            self.comm.Allreduce(values, out, op=MPI.SUM)
        return out


def join() -> World | None:
    """The World this process was launched into, or None for a single process."""
    if launched_size() <= 1:
        return None
    MPI = import_mpi()
    comm = MPI.COMM_WORLD
    rank, host = comm.Get_rank(), MPI.Get_processor_name()
    local = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    world = World(comm, rank, comm.Get_size(), local.Get_rank())
    world.watchdog = Watchdog(f"rank {rank} on host {host}",
                              lambda message: leave_note(f"rank{rank}.lost", message))
    beacon = Beacon()
    table = world.gather_json([host, beacon.port])
    world.hosts = [h for h, _ in table]
    world.beacon = beacon
    if rank == 0:  # for the launcher: which host each rank is on, and where it answers
        leave_note("ranks.json", json.dumps(table))
    return world
