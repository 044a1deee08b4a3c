"""Per-step losses read back from the device in batches, not one host sync per step.

On a GPU, `loss.item()` after every step makes the host wait for the device each step, so
the next step cannot be queued while this one runs. The trainer instead keeps each step's loss
tensor and reads the pending ones with one transfer at the points that need the values
(logging, evaluation, checkpoints, the end of an epoch or of the run); the NaN/Inf check
happens there too, before anything is saved. On the CPU there is nothing to overlap, and every
step is read at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from dlrun import functional as F
from dlrun.engine.tensor import Tensor
from dlrun.errors import NumericalError


@dataclass
class StepRecord:
    step: int
    epoch: int
    loss: Tensor
    lr: float
    rows: int
    seconds: float  # the step's own time when read at once; replaced by the interval's mean


class PendingLosses:
    """Steps whose loss has not been read yet; `read()` reads them all with one transfer."""

    def __init__(self, every: int) -> None:
        self.every = max(1, int(every))
        self.steps: list[StepRecord] = []
        self.reads = 0  # host reads of losses so far (one per read() with steps pending)
        self._since = time.perf_counter()

    def add(self, record: StepRecord) -> None:
        self.steps.append(record)

    @property
    def due(self) -> bool:
        return len(self.steps) >= self.every

    def read(self) -> list[tuple[StepRecord, float]]:
        """(record, loss) for every pending step, in order; NumericalError at the first loss
        that is not finite, naming its step. With steps read in batches, each step's time is
        the batch's wall time over its steps (what the device took, queueing overlapped)."""
        pending, self.steps = self.steps, []
        now = time.perf_counter()
        if not pending:
            self._since = now
            return []
        losses = pending[0].loss.reshape(1) if len(pending) == 1 else \
            F.stack([r.loss.detach() for r in pending])
        values = np.asarray(losses.numpy(), dtype=np.float64).reshape(-1)
        self.reads += 1
        if self.every > 1:
            for r in pending:
                r.seconds = (now - self._since) / len(pending)
        self._since = now
        for r, v in zip(pending, values, strict=True):
            if not np.isfinite(v):
                raise NumericalError(
                    f"the loss is {v} at step {r.step} (epoch {r.epoch + 1}); training stopped, "
                    "the last good checkpoint is kept (try a lower optimizer.lr or "
                    "train.grad_clip_norm)")
        return list(zip(pending, (float(v) for v in values), strict=True))


def read_every(device: str, log_every: int) -> int:
    """Read losses every step on the CPU, every `log_every` steps on a GPU."""
    return 1 if device == "cpu" else log_every

