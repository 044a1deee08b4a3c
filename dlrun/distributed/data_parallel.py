"""The data-parallel training step: one all-reduce per step over one flat buffer.

After `backward()` each rank holds the gradient of the mean loss over its share of the global
batch. `DataParallel.reduce_gradients` lays every gradient, the loss and this rank's stop
request end to end in one buffer, scales it by the rank's share of the batch (n_rank / m, so the
sum over ranks is the gradient of the global mean even when shares differ by a row), sums it
over the ranks with the `all_reduce` primitive and hands each parameter its slice back as
`.grad`. Written with dlrun ops, the same code runs eagerly and is traced into a static step,
where the all-reduce is one graph node and the buffer is laid out by the memory plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dlrun import functional as F
from dlrun.distributed.world import World
from dlrun.engine.creation import full, zeros
from dlrun.engine.prims.collective import all_reduce
from dlrun.engine.tensor import Tensor


class DataParallel:
    """Gradient averaging for one rank; `weight`, `stop` and `stopped` are 0-d/1-d tensors a
    compiled step reads and writes as state, so changing them never retraces."""

    def __init__(self, world: World, device: str, dtype: Any) -> None:
        self.world = world
        self.weight = full((), 1.0 / world.size, dtype=dtype, device=device)  # n_rank / m
        self.stop = zeros(1, dtype=dtype, device=device)  # this rank asks the job to stop
        self.stopped = zeros((), dtype=dtype, device=device)  # > 0: some rank asked
        self._share = 1.0 / world.size

    def reduce_gradients(self, params: Sequence[Tensor], loss: Tensor) -> Tensor:
        """Sum share-weighted gradients over ranks in one all-reduce; returns the global loss.
        Parameters without a gradient (unused by the model) have none on every rank."""
        grads = [(p, p.grad) for p in params if p.grad is not None]
        pieces = [g.reshape(-1) for _, g in grads] + [loss.detach().reshape(1), self.stop]
        # weighted piece by piece: each product is computed straight into its slice of the
        # buffer by the memory plan (no gathering copy), and reduced there in place
        flat = all_reduce(F.cat([piece * self.weight for piece in pieces]))
        offset = 0
        for p, g in grads:
            p.grad = flat[offset:offset + g.numel()].reshape(*g.shape)
            offset += g.numel()
        self.stopped.copy_(flat[offset + 1].clone())
        return flat[offset].clone()  # the buffer is the plan's, reused next step: not returned

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

    def stop_agreed(self) -> bool:
        """True on every rank once any rank asked to stop (read after a step)."""
        return float(self.stopped.item()) > 0

