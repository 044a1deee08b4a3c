"""Collective primitives: impure nodes that exchange data with the other processes of a job.

`all_reduce` sums an array over every rank through the process's communicator
(engine/collective.py). It is impure, so passes never fold, merge or drop it, and it may write
its result over its input, so the memory plan can give the reduced buffer no memory of its own.
It is not differentiated through: data-parallel training applies it to gradients after the
backward pass.

`all_reduce_start` and `all_reduce_wait` are the same sum split in two (a non-blocking MPI
all-reduce), so a bucket of gradients can travel while the backward pass computes the next
(the `overlap` pass moves each start to where its bucket is final); the sum itself, element by
element, is the same as `all_reduce`'s.
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



def _into(xp, x, out):
    if out is None or out is x:
        return x if out is x else x.copy()
    out[...] = x
    return out


@primitive("all_reduce_start", Kind.COLLECTIVE, _same_rule, pure=False, differentiable=False,
           in_place=True, in_flight=1)
def all_reduce_start(xp, x, out=None):
    """Begin the sum of x over all ranks (in out, or a copy of x); the value is not the sum
    until all_reduce_wait."""
    return collective.world().start(_into(xp, x, out))


@primitive("all_reduce_wait", Kind.COLLECTIVE, _same_rule, pure=False, differentiable=False,
           in_place=True, in_flight=-1)
def all_reduce_wait(xp, x, out=None):
    """The sum all_reduce_start began on x."""
    return _into(xp, collective.world().wait(x), out)
