"""The data-parallel training step: the gradient all-reduce, in buckets or in one buffer.

After `backward()` each rank holds the gradient of the mean loss over its share of the global
batch. `DataParallel.reduce_gradients` lays the gradients, the loss and this rank's stop
request end to end in buffers (buckets of `distributed.bucket_mb`, or one), scales them by the
rank's share of the batch (n_rank / m, so the sum over ranks is the gradient of the global mean
even when shares differ by a row), sums them over the ranks and hands each parameter its slice
back as `.grad`. Written with dlrun ops, the same code runs eagerly and is traced into a static
step, where each all-reduce is a graph node, each buffer is laid out by the memory plan, and
the `overlap` pass starts each bucket's all-reduce while the backward pass still runs. This is
the one place that decides where the all-reduce goes in a step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlrun import functional as F
from dlrun.distributed.world import World
from dlrun.engine.creation import full, zeros
from dlrun.engine.prims.collective import all_reduce, all_reduce_start, all_reduce_wait
from dlrun.engine.tensor import Tensor


class DataParallel:
    """Gradient averaging for one rank; `weight`, `stop` and `stopped` are 0-d/1-d tensors a
    compiled step reads and writes as state, so changing them never retraces."""

    def __init__(self, world: World, device: str, dtype: Any, bucket_mb: float = 0.0) -> None:
        self.world = world
        self.bucket_bytes = int(bucket_mb * 2**20)
        self.weight = full((), 1.0 / world.size, dtype=dtype, device=device)  # n_rank / m
        self.stop = zeros(1, dtype=dtype, device=device)  # this rank asks the job to stop
        self.stopped = zeros((), dtype=dtype, device=device)  # > 0: some rank asked
        self._share = 1.0 / world.size
        self._buckets = 1

    def reduce_gradients(self, params: Sequence[Tensor], loss: Tensor) -> Tensor:
        """Sum share-weighted gradients over ranks; returns the global loss. Parameters without
        a gradient (unused by the model) have none on every rank. With `bucket_mb` > 0 the
        gradients travel in buckets, in backward order (the last layer's first), each started
        as soon as it is final (the `overlap` pass) and waited for here, before the optimizer
        step; with 0, in one blocking all-reduce of one buffer. The sums are the same, bit for
        bit: MPI sums each element over the ranks alike, however the elements are grouped."""
        grads = [(p, p.grad) for p in params if p.grad is not None]
        extra = [loss.detach().reshape(1), self.stop]
        if self.bucket_bytes <= 0:
            flats = [all_reduce(self._gather(grads, extra))]
            buckets = [grads]
        else:
            buckets = buckets_of(grads[::-1], self.bucket_bytes)
            started = [all_reduce_start(self._gather(b, extra if i == 0 else []))
                       for i, b in enumerate(buckets)]
            flats = [all_reduce_wait(buf) for buf in started]
        self._buckets = len(buckets)
        for k, (bucket, flat) in enumerate(zip(buckets, flats, strict=True)):
            offset = 0
            for p, g in bucket:
                p.grad = flat[offset:offset + g.numel()].reshape(*g.shape)
                offset += g.numel()
            if k == 0:
                self.stopped.copy_(flat[offset + 1].clone())
                total = flat[offset].clone()  # the buffer is the plan's, reused next step
        return total

    def _gather(self, grads: list[tuple[Tensor, Tensor]], extra: list[Tensor]) -> Tensor:
        """One buffer of the weighted gradients (and extras): each product is computed straight
        into its slice by the memory plan (no gathering copy), and reduced there in place."""
        pieces = [g.reshape(-1) for _, g in grads] + extra
        return F.cat([piece * self.weight for piece in pieces])

    def set_share(self, rows: int, global_rows: int) -> None:
        """This rank's share of the coming step's global batch: whoever feeds the step sets it
        (the trainer, from its loader); it stays 1/ranks, right for every full batch, if not."""
        share = rows / global_rows
        if share != self._share:
            self._share = share
            self.weight.copy_(share)

    def ask_stop(self) -> None:
        """Ask every rank to stop after the next step (Ctrl-C on any rank)."""
        self.stop.copy_(1.0)

    @property
    def buckets(self) -> int:
        """All-reduces per step (set once a step was built)."""
        return self._buckets

    def stop_agreed(self) -> bool:
        """True on every rank once any rank asked to stop (read after a step)."""
        return float(self.stopped.item()) > 0



Grads = list[tuple[Tensor, Tensor]]


def buckets_of(grads: Grads, nbytes: int) -> list[Grads]:
    """Consecutive groups of gradients, each closed once it holds at least `nbytes` (as DDP's
    bucket_cap_mb); the first is never empty, so the loss always has a bucket to ride in."""
    out: list[Grads] = [[]]
    size = 0
    for p, g in grads:
        if size >= nbytes and out[-1]:
            out.append([])
            size = 0
        out[-1].append((p, g))
        size += g.numel() * g.dtype.itemsize
    return out
