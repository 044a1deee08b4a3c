"""Collective primitives: impure nodes that exchange data with the other processes of a job.

`all_reduce` sums an array over every rank through the process's communicator
(engine/collective.py). It is impure, so passes never fold, merge or drop it, and it may write
its result over its input, so the memory plan can give the reduced buffer no memory of its own.
It is not differentiated through: data-parallel training applies it to gradients after the
backward pass.
"""

from __future__ import annotations

from dlrun.engine import collective
from dlrun.engine.prims.registry import Kind, primitive


def _same_rule(x):
    return tuple(x.shape), x.dtype


@primitive("all_reduce", Kind.COLLECTIVE, _same_rule, pure=False, differentiable=False,
           in_place=True)
def all_reduce(xp, x, out=None):
    """The sum of x over all ranks of the job."""
    return collective.world().all_reduce(x, out)

