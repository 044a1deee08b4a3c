"""The communicator collective primitives talk to: one per process, set by whoever starts the
process group (dlrun.distributed), so the engine itself never imports MPI or NCCL.

A communicator sums arrays across the processes of a job: `all_reduce(x, out)` returns the sum
of `x` over every rank (in `out` when given, which may be `x` itself). Eager ops and compiled
plans call it through the `all_reduce` primitive, so both executors share one definition.
"""

from __future__ import annotations

from typing import Any, Protocol


class Communicator(Protocol):
    """What the all_reduce primitive needs: the job's size, this rank, and a summing reduce."""

    rank: int
    size: int

    def all_reduce(self, x: Any, out: Any | None = None) -> Any:
        """The elementwise sum of `x` over all ranks (written into `out` when given)."""
        ...


_WORLD: Communicator | None = None


def set_world(comm: Communicator | None) -> None:
    """Make `comm` the communicator of this process (None: a single process again)."""
    global _WORLD
    _WORLD = comm


def world() -> Communicator:
    """The communicator set by set_world; an error when the process has none."""
    if _WORLD is None:
        raise RuntimeError("all_reduce needs a communicator: this process is not part of a "
                           "distributed job (see dlrun.distributed)")
    return _WORLD
