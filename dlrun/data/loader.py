"""Mini-batch loader: seeded per-epoch shuffling, resumable position, one transfer per batch.

The order of epoch `e` is a permutation drawn from a generator seeded by (seed, e) alone, so
a run resumed from a checkpoint (see `state_dict`) sees exactly the batches it would have
seen, and eager and static runs with the same seed see the same batches. Batches are
gathered with `np.take` (into preallocated buffers when the batch is copied to a GPU
anyway) and moved with one `to_device` call per array.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from dlrun.backend import get_xp, normalize_device, to_device
from dlrun.errors import CheckpointError, DataError


class DataLoader:
    """Iterate `(xb, yb)` backend arrays (NumPy on 'cpu', CuPy on 'cuda:N') over `x`, `y`.

    - `shuffle`: a fresh permutation per epoch, depending only on (`seed`, epoch).
    - `drop_last`: leave out the final short batch (so every batch has `batch_size` rows).
    - `x_shape`: reshape each input batch to (batch, *x_shape), e.g. (784,) to flatten images
      for an MLP; a free view, the data is not copied.
    - `resident`: on a GPU, copy the whole arrays to the device once and gather batches there
      (only the indices travel per batch); worth it when the data fits in device memory.
    - `reuse_buffers`: gather into the same host buffers every batch. The default is True
      for GPU devices (the batch is copied off the buffer) and False on the CPU, where the
      yielded arrays are handed to the caller and may be kept (e.g. saved by autograd).

    Iterating runs from the current position to the end of the current epoch, then moves to
    the next epoch; `set_epoch(n)` selects an epoch explicitly.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        device: str = "cpu",
        *,
        x_shape: Sequence[int] | None = None,
        resident: bool = False,
        reuse_buffers: bool | None = None,
    ) -> None:
        if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
            raise DataError(
                f"DataLoader needs NumPy arrays, got {type(x).__name__} and {type(y).__name__}"
            )
        if len(x) != len(y):
            raise DataError(f"DataLoader: {len(x)} inputs but {len(y)} targets")
        if len(x) == 0:
            raise DataError("DataLoader: the split is empty")
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, int | np.integer)
            or batch_size < 1
        ):
            raise DataError(f"DataLoader: batch_size must be an integer >= 1, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise DataError(f"DataLoader: seed must be an integer >= 0, got {seed!r}")
        self.x = x
        self.y = y
        self.n = len(x)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.device = normalize_device(device)
        self.x_shape = tuple(int(d) for d in x_shape) if x_shape is not None else None
        if self.x_shape is not None and math.prod(self.x_shape) != math.prod(x.shape[1:]):
            raise DataError(
                f"DataLoader: x_shape {self.x_shape} does not fit samples of shape {x.shape[1:]}"
            )
        self.epoch = 0
        self.position = 0  # batches of `epoch` already yielded

        on_gpu = self.device != "cpu"
        self.resident = bool(resident) and on_gpu
        if self.resident:
            self._xd = to_device(np.ascontiguousarray(x), self.device)
            self._yd = to_device(np.ascontiguousarray(y), self.device)
        self.reuse_buffers = on_gpu if reuse_buffers is None else bool(reuse_buffers)
        self._xbuf: np.ndarray | None = None
        self._ybuf: np.ndarray | None = None
        if self.reuse_buffers and not self.resident:
            self._xbuf = np.empty((self.batch_size, *x.shape[1:]), dtype=x.dtype)
            self._ybuf = np.empty((self.batch_size, *y.shape[1:]), dtype=y.dtype)

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return self.n // self.batch_size
        return -(-self.n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of `epoch` (identity when not shuffling)."""
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(self.n)

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its first batch at the next iteration."""
        if epoch < 0:
            raise DataError(f"DataLoader: epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)
        self.position = 0

    def state_dict(self) -> dict[str, Any]:
        """Where the loader is (epoch, batches done), plus what must match on resume."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
            "num_samples": self.n,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at a saved position; CheckpointError if the data or batching differ."""
        mine = self.state_dict()
        diffs = [
            f"{k} {state[k]!r} (now {mine[k]!r})"
            for k in ("seed", "shuffle", "batch_size", "drop_last", "num_samples")
            if k in state and state[k] != mine[k]
        ]
        if diffs:
            raise CheckpointError(
                "data loader state does not match this run: saved with " + ", ".join(diffs)
            )
        epoch, position = int(state.get("epoch", 0)), int(state.get("position", 0))
        if epoch < 0 or not 0 <= position <= len(self):
            raise CheckpointError(
                f"data loader state out of range: epoch {epoch}, position {position} "
                f"of {len(self)} batches"
            )
        self.epoch, self.position = epoch, position

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        batches = len(self)
        if batches and self.position >= batches:  # saved right after an epoch's last batch
            self.epoch, self.position = self.epoch + 1, 0
        epoch = self.epoch
        order = self.order(epoch) if self.shuffle else None
        for b in range(self.position, batches):
            start = b * self.batch_size
            stop = min(start + self.batch_size, self.n)
            xb, yb = self._batch(order, start, stop)
            self.position = b + 1
            yield xb, yb
            if self.epoch != epoch:  # set_epoch() was called mid-iteration: stop here
                return
        self.epoch, self.position = epoch + 1, 0

    def _batch(self, order: np.ndarray | None, start: int, stop: int) -> tuple[Any, Any]:
        m = stop - start
        if self.resident:
            xp = get_xp(self.device)
            if order is None:
                xb, yb = self._xd[start:stop], self._yd[start:stop]
            else:
                idx = to_device(order[start:stop], self.device)
                xb, yb = xp.take(self._xd, idx, axis=0), xp.take(self._yd, idx, axis=0)
        else:
            if order is None:
                xb, yb = self.x[start:stop], self.y[start:stop]
            elif self._xbuf is not None and self._ybuf is not None:
                idx = order[start:stop]
                # mode='clip' (indices are valid by construction) avoids the extra buffered
                # copy NumPy makes for out= with the default mode='raise'
                xb = np.take(self.x, idx, axis=0, out=self._xbuf[:m], mode="clip")
                yb = np.take(self.y, idx, axis=0, out=self._ybuf[:m], mode="clip")
            else:
                idx = order[start:stop]
                xb, yb = np.take(self.x, idx, axis=0), np.take(self.y, idx, axis=0)
            xb, yb = to_device(xb, self.device), to_device(yb, self.device)
        if self.x_shape is not None:
            xb = xb.reshape((m, *self.x_shape))
        return xb, yb
