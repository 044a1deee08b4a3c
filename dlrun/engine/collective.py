"""The communicator collective primitives talk to: one per process, set by whoever starts the
process group (dlrun.distributed), so the engine itself never imports MPI or NCCL.

A communicator sums arrays across the processes of a job: `all_reduce(x, out)` returns the sum
of `x` over every rank (in `out` when given, which may be `x` itself). Eager ops and compiled
plans call it through the `all_reduce` primitive, so both executors share one definition.
`start(x)` begins the same sum in place without waiting, `wait(x)` ends it; `progress()` lets a
started sum move on (MPI moves only inside MPI calls: a compiled plan calls it between nodes).
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

    def start(self, x: Any) -> Any:
        """Begin summing `x` over all ranks, in place; returns `x` (do not touch it until
        `wait(x)`)."""
        ...

    def wait(self, x: Any) -> Any:
        """Finish the sum `start(x)` began; returns `x`, now the sum."""
        ...

    def progress(self) -> None:
        """Let started sums move on."""
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


def progress() -> None:
    """Let this process's started collectives move on (a no-op without a communicator)."""
    if _WORLD is not None:
        _WORLD.progress()
