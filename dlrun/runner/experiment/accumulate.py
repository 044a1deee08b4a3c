"""Gradient accumulation (`train.accumulate: K`): one optimizer step over K micro-batches.

The loader yields the batch of one optimizer step, K x batch_size rows (on several ranks this
rank's share of it). `AccumulatedStep` splits it into micro-batches of batch_size rows (per
rank: batch_size / ranks) and runs the micro-step on each: forward, and backward of the loss
times the micro-batch's share of the step's rows, the gradients and the weighted loss added into
the `Accumulator`'s buffers. Weighting by rows makes the sum the gradient of the mean loss over
the whole step's batch, so K micro-batches of B compute what one batch of K x B computes, a
short last batch included. Then the update: the buffers become the gradients, the all-reduce (on
several ranks: once per optimizer step), clipping and the optimizer step; the buffers are zeroed.

In static mode the micro-step and the update are two compiled functions, so two traces (a short
last micro-batch adds one, as a short last batch does without accumulation); the weight is a
0-d state tensor, so a new weight never retraces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dlrun.engine.autograd import no_grad
from dlrun.engine.creation import full, zeros, zeros_like
from dlrun.engine.tensor import Tensor


class Accumulator:
    """The accumulation buffers: one gradient per parameter and the weighted loss, and the
    weight of the coming micro-batch (a 0-d tensor a compiled micro-step reads as state)."""

    def __init__(self, params: list[Tensor], device: str, dtype: Any) -> None:
        self.params = [p for p in params if p.requires_grad]  # frozen ones get no gradient
        with no_grad():
            self.grads = [zeros_like(p) for p in self.params]
        self.loss = zeros((), dtype=dtype, device=device)
        self.weight = full((), 1.0, dtype=dtype, device=device)
        self._weight = 1.0
        self._seen: set[int] = set()  # parameters that got a gradient (unused ones never do)

    def set_weight(self, weight: float) -> None:
        """The coming micro-batch's share of the step's rows (copied only when it changes)."""
        if weight != self._weight:
            self._weight = weight
            self.weight.copy_(weight)

    def add(self, loss: Tensor) -> None:
        """Add the micro-batch's gradients (then cleared, for the next backward) and its
        weighted loss into the buffers."""
        with no_grad():
            for p, acc in zip(self.params, self.grads, strict=True):
                if p.grad is not None:
                    acc.copy_(acc + p.grad)
                    self._seen.add(id(p))
                p.grad = None
            self.loss.copy_(self.loss + loss.detach() * self.weight)

    def take(self) -> Tensor:
        """Hand the accumulated gradients to the parameters that got one; the accumulated
        loss (a copy: the buffer is zeroed by `clear`)."""
        for p, acc in zip(self.params, self.grads, strict=True):
            if id(p) in self._seen:
                p.grad = acc
        return self.loss.clone()

    def clear(self) -> None:
        """Zero the buffers and drop the parameters' gradients (after an update, or when a
        step was interrupted half-way)."""
        with no_grad():
            for p, acc in zip(self.params, self.grads, strict=True):
                p.grad = None
                acc.copy_(0.0)
            self.loss.copy_(0.0)


class AccumulatedStep:
    """train_step(x, y) -> loss over one optimizer step's batch: the micro-step on every
    `rows` rows of it, then the update. `micro(x, y)` and `update() -> loss` are the step's
    two functions (compiled in static mode); `parts` names them for reports."""

    def __init__(self, micro: Callable[[Tensor, Tensor], Any], update: Callable[[], Tensor],
                 acc: Accumulator, rows: int) -> None:
        self.micro, self.update, self.acc, self.rows = micro, update, acc, rows
        self.micro_steps = 0  # micro-steps of the last optimizer step

    @property
    def parts(self) -> dict[str, Any]:
        return {"micro_step": self.micro, "update": self.update}

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        n = y.shape[0]
        self.micro_steps = 0
        try:
            for lo in range(0, n, self.rows):
                hi = min(lo + self.rows, n)
                self.acc.set_weight((hi - lo) / n)
                self.micro(_rows(x, lo, hi, n), _rows(y, lo, hi, n))
                self.micro_steps += 1
            return self.update()
        except BaseException:
            self.acc.clear()  # an interrupted step leaves no half-accumulated gradients
            raise

    # ----- what reports read of a compiled step (static mode) -----------------------------------
    @property
    def trace_count(self) -> int:
        return sum(f.trace_count for f in self.parts.values())

    @property
    def traces(self) -> list[Any]:
        """The trace records of both parts (the micro-step's first)."""
        return [r for f in self.parts.values() for r in f.traces]

    @property
    def last(self) -> Any:
        """The micro-step's last plan entry (the step's forward and backward); static mode
        only (AttributeError in eager mode, as for an uncompiled step)."""
        return self.micro.last

    def plan_calls(self) -> int:
        """Calls of the compiled plans in the last optimizer step."""
        return self.micro_steps * self.micro.last.plan.calls + self.update.last.plan.calls


def _rows(t: Tensor, lo: int, hi: int, n: int) -> Tensor:
    """Rows lo:hi of a batch tensor, a view without an op (not traced, not taped)."""
    if lo == 0 and hi == n:
        return t
    return Tensor._wrap(t._value[lo:hi], t.device, t._xp, False)
