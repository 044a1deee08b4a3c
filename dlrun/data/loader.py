"""Mini-batch loader: seeded per-epoch shuffling or random draws, resumable position, one
transfer per batch.

Two samplings. 'permutation' (the default): the order of epoch `e` is a permutation drawn from
a generator seeded by (seed, e) alone, every sample once per epoch. 'random' (nanoGPT's
get_batch): every batch draws `batch_size` samples uniformly with replacement from a
generator seeded by (seed, e, b), b the batch's index in the epoch; an epoch is then
`len(x) // batch_size` batches. Either way a run resumed from a checkpoint (see `state_dict`)
sees exactly the batches it would have seen, and eager and static runs with the same seed see
the same batches. Batches are gathered with `np.take` (into preallocated buffers when the batch
is copied to a GPU anyway), so `x` and `y` may be strided views (overlapping text windows) of
which only the batch is copied, and moved with one `to_device` call per array.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from dlrun.backend import get_xp, normalize_device, to_device
from dlrun.data.bundle import BatchKey, BatchTransform
from dlrun.errors import CheckpointError, DataError

SAMPLINGS = ("permutation", "random")


def _check_arguments(x: Any, y: Any, batch_size: Any, seed: Any, sampling: str,
                     shuffle: bool, index: Any) -> None:
    """DataError naming the first argument a DataLoader cannot work with."""
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
        raise DataError(
            f"DataLoader needs NumPy arrays, got {type(x).__name__} and {type(y).__name__}"
        )
    n = len(x) if index is None else len(index)
    if n != len(y):
        raise DataError(f"DataLoader: {n} inputs but {len(y)} targets")
    if n == 0:
        raise DataError("DataLoader: the split is empty")
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or batch_size < 1
    ):
        raise DataError(f"DataLoader: batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"DataLoader: seed must be an integer >= 0, got {seed!r}")
    if sampling not in SAMPLINGS:
        raise DataError(f"DataLoader: sampling must be one of {', '.join(SAMPLINGS)}, "
                        f"got {sampling!r}")
    if sampling == "random" and not shuffle:
        raise DataError("DataLoader: sampling 'random' draws random batches; it cannot be "
                        "combined with shuffle=False")
    if index is not None and (np.ndim(index) != 1 or len(index) and (
            np.min(index) < 0 or np.max(index) >= len(x))):
        raise DataError(f"DataLoader: index must be rows of x (0 .. {len(x) - 1})")


class DataLoader:
    """Iterate `(xb, yb)` backend arrays (NumPy on 'cpu', CuPy on 'cuda:N') over `x`, `y`.

    - `shuffle`: a fresh permutation per epoch, depending only on (`seed`, epoch).
    - `sampling`: 'permutation' (every sample once per epoch, shuffled or in order) or
      'random' (each batch `batch_size` samples drawn with replacement, depending only on
      (`seed`, epoch, batch index); `len(x) // batch_size` batches per epoch, at least one).
    - `drop_last`: leave out the final short batch (so every batch has `batch_size` rows);
      random batches are always full.
    - `x_shape`: reshape each input batch to (batch, *x_shape), e.g. (784,) to flatten images
      for an MLP; a free view, the data is not copied.
    - `resident`: on a GPU, copy the whole arrays to the device once and gather batches there
      (only the indices travel per batch); worth it when the data fits in device memory.
      Overlapping strided views (text windows) travel as the memory they span, not row by row.
    - `reuse_buffers`: gather into the same host buffers every batch. The default is True
      for GPU devices (the batch is copied off the buffer) and False on the CPU, where the
      yielded arrays are handed to the caller and may be kept (e.g. saved by autograd).
    - `shard`: (rank, ranks) for data-parallel training: every rank walks the same global
      batches (same order, same length, same state) and yields only its contiguous share of
      each, `shard_rows(m, rank, ranks)`; `global_rows` is the size of the last global batch.
    - `index`: the rows of `x` to use (a split of a memory-mapped array shared by the splits);
      `y` is aligned with `index`. Only each batch's rows are read.
    - `transform`: raw rows -> inputs, per batch (see data.bundle.BatchTransform), e.g. uint8
      pixels to normalised floats in `dtype`; with `augment`, it also gets the batch's
      BatchKey, so its random draws depend on (seed, epoch, batch) alone and replay on resume.
    - `prefetch`: gather (and transform) up to this many batches ahead in a background thread,
      so that reading the data overlaps the training step; 0 gathers in the caller's thread.
      The position (`state_dict`) counts only the batches handed out, never those prefetched.

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
        sampling: str = "permutation",
        x_shape: Sequence[int] | None = None,
        resident: bool = False,
        reuse_buffers: bool | None = None,
        shard: tuple[int, int] | None = None,
        index: np.ndarray | None = None,
        transform: BatchTransform | None = None,
        augment: bool = False,
        dtype: Any = np.float32,
        prefetch: int = 0,
    ) -> None:
        _check_arguments(x, y, batch_size, seed, sampling, shuffle, index)
        self.x = x
        self.y = y
        self.index = None if index is None else np.asarray(index, dtype=np.int64)
        self.n = len(y)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.sampling = sampling
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.device = normalize_device(device)
        self.transform, self.augment, self.dtype = transform, bool(augment), np.dtype(dtype)
        self.prefetch = _check_prefetch(prefetch)
        self.x_shape = tuple(int(d) for d in x_shape) if x_shape is not None else None
        if self.x_shape is not None and math.prod(self.x_shape) != math.prod(x.shape[1:]):
            raise DataError(
                f"DataLoader: x_shape {self.x_shape} does not fit samples of shape {x.shape[1:]}"
            )
        self.epoch = 0
        self.position = 0  # batches of `epoch` already yielded
        self.shard = (0, 1) if shard is None else (int(shard[0]), int(shard[1]))
        if not 0 <= self.shard[0] < self.shard[1]:
            raise DataError(f"DataLoader: shard {shard} is not (rank, ranks) with rank < ranks")
        self.global_rows = 0
        self._setup_buffers(reuse_buffers, resident)

    def _setup_buffers(self, reuse_buffers: bool | None, resident: bool) -> None:
        """The device copy (resident) or the ring of host gather buffers (one per batch that
        can be in flight: the prefetched ones, the one being gathered, the one handed out)."""
        x, y = self.x, self.y
        on_gpu = self.device != "cpu"
        self.resident = bool(resident) and on_gpu and self.transform is None
        if self.resident:
            self._xd = _resident_copy(x if self.index is None else x[self.index], self.device)
            self._yd = _resident_copy(y, self.device)
        self.reuse_buffers = on_gpu if reuse_buffers is None else bool(reuse_buffers)
        self._buffers: list[tuple[np.ndarray, np.ndarray]] = []
        if self.reuse_buffers and not self.resident:
            self._buffers = [(np.empty((self.batch_size, *x.shape[1:]), dtype=x.dtype),
                              np.empty((self.batch_size, *y.shape[1:]), dtype=y.dtype))
                             for _ in range(self.prefetch + 2 if self.prefetch else 1)]

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.sampling == "random":
            return max(self.n // self.batch_size, 1)
        if self.drop_last:
            return self.n // self.batch_size
        return -(-self.n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of `epoch` (identity when not shuffling); with random sampling,
        the concatenated indices of the epoch's batches."""
        if self.sampling == "random":
            return np.concatenate([self.draw(epoch, b) for b in range(len(self))])
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(self.n)

    def draw(self, epoch: int, batch: int) -> np.ndarray:
        """Random sampling: the sample indices of batch `batch` of `epoch` (with replacement)."""
        rng = np.random.default_rng([self.seed, int(epoch), int(batch)])
        return rng.integers(0, self.n, size=self.batch_size)

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
            "sampling": self.sampling,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
            "num_samples": self.n,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at a saved position; CheckpointError if the data or batching differ."""
        mine = self.state_dict()
        diffs = [
            f"{k} {state[k]!r} (now {mine[k]!r})"
            for k in ("seed", "shuffle", "sampling", "batch_size", "drop_last", "num_samples")
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
        order = self.order(epoch) if self.shuffle and self.sampling != "random" else None

        def gather(b: int) -> tuple[Any, Any, int]:
            return self._host_batch(order, epoch, b)

        todo = range(self.position, batches)
        source = (prefetched(gather, todo, self.prefetch) if self.prefetch and not self.resident
                  else ((b, gather(b)) for b in todo))
        try:
            for b, (xb, yb, rows) in source:
                self.global_rows = rows
                xb, yb = self._to_device(xb, yb)
                self.position = b + 1
                yield xb, yb
                if self.epoch != epoch:  # set_epoch() was called mid-iteration: stop here
                    return
        finally:
            source.close()  # stops the prefetching thread when the caller stops early
        self.epoch, self.position = epoch + 1, 0

    def _host_batch(self, order: np.ndarray | None, epoch: int, b: int) -> tuple[Any, Any, int]:
        """Batch `b` of `epoch` gathered (and transformed) on the host, this rank's share, and
        the global batch's size. Reads the loader's settings only, so it may run in the
        prefetching thread."""
        if self.sampling == "random":
            order, start, stop = self.draw(epoch, b), 0, self.batch_size
        else:
            start = b * self.batch_size
            stop = min(start + self.batch_size, self.n)
        rows = stop - start
        lo, hi = shard_rows(rows, *self.shard)
        m = hi - lo
        sel = slice(start + lo, start + hi)
        if self.resident:
            if order is None:
                return self._xd[sel], self._yd[sel], rows
            idx = to_device(order[sel], self.device)
            xp = get_xp(self.device)
            return _gather(self._xd, idx, None, xp), _gather(self._yd, idx, None, xp), rows
        xbuf, ybuf = (None, None)
        if self._buffers:
            xbuf, ybuf = (a[:m] for a in self._buffers[b % len(self._buffers)])
        idx = None if order is None else order[sel]
        if idx is None and self.index is None:
            xb, yb = self.x[sel], self.y[sel]
        else:
            yb = self.y[sel] if idx is None else _gather(self.y, idx, ybuf)
            xrows = self.index[sel] if idx is None else (
                idx if self.index is None else self.index[idx])
            xb = _gather(self.x, xrows, xbuf)
        if self.transform is not None:
            key = BatchKey(self.seed, epoch, b, lo, rows) if self.augment else None
            xb = self.transform(xb, key, self.dtype)
        return xb, yb, rows

    def _to_device(self, xb: Any, yb: Any) -> tuple[Any, Any]:
        """The batch on the loader's device (one transfer per array), reshaped to x_shape."""
        if not self.resident:
            xb, yb = to_device(xb, self.device), to_device(yb, self.device)
        if self.x_shape is not None:
            xb = xb.reshape((len(xb), *self.x_shape))
        return xb, yb


def _check_prefetch(prefetch: Any) -> int:
    if isinstance(prefetch, bool) or not isinstance(prefetch, int | np.integer) or prefetch < 0:
        raise DataError(f"DataLoader: prefetch must be an integer >= 0, got {prefetch!r}")
    return int(prefetch)


class _Failed:
    """An exception raised in the prefetching thread, re-raised in the caller's."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


def prefetched(produce: Callable[[int], Any], items: Iterable[int], depth: int
               ) -> Generator[tuple[int, Any], None, None]:
    """(item, produce(item)) for each item, computed by a background thread up to `depth` items
    ahead (NumPy's gathers and copies release the GIL, so they overlap the caller's work).
    Closing the generator stops the thread; an error in the thread is raised here, in order."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for i in items:
                if not put((i, produce(i))):
                    return
        except BaseException as e:  # noqa: BLE001 -- handed to the consumer
            put(_Failed(e))
            return
        put(_DONE)

    thread = threading.Thread(target=work, name="dlrun-prefetch", daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not _DONE:
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


def shard_rows(m: int, rank: int, ranks: int) -> tuple[int, int]:
    """Rank `rank`'s contiguous share [lo, hi) of a batch of m rows split over `ranks`: sizes
    differ by at most one, the first m % ranks ranks taking the extra row."""
    base, extra = divmod(m, ranks)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def _gather(a: Any, idx: Any, out: Any, xp: Any = np) -> Any:
    """The rows `a[idx]`, into `out` when given. A strided view (overlapping text windows) is
    indexed as it is: `take` would first make the whole view contiguous, T times the corpus."""
    if not a.flags.c_contiguous:
        rows = a[idx]
        if out is None:
            return rows
        out[...] = rows
        return out
    if out is None:
        return xp.take(a, idx, axis=0)
    # mode='clip' (indices are valid by construction) avoids the extra buffered copy NumPy
    # makes for out= with the default mode='raise'
    return xp.take(a, idx, axis=0, out=out, mode="clip")


def _resident_copy(a: np.ndarray, device: str) -> Any:
    """`a` on the device. An overlapping strided view (text windows: N rows of T over a corpus
    of about N + T items) travels as the memory it spans and is viewed again there with the
    same strides, instead of being expanded T-fold by a contiguous copy."""
    if a.flags.c_contiguous or a.size == 0 or any(s < 0 for s in a.strides) or any(
            s % a.itemsize for s in a.strides):
        return to_device(np.ascontiguousarray(a), device)
    span = sum((n - 1) * s for n, s in zip(a.shape, a.strides, strict=True)) // a.itemsize + 1
    if span >= a.size:  # not overlapping: a compact copy is no bigger
        return to_device(np.ascontiguousarray(a), device)
    flat = np.lib.stride_tricks.as_strided(a, shape=(span,), strides=(a.itemsize,))
    xp = get_xp(device)
    buf = to_device(np.ascontiguousarray(flat), device)
    return xp.lib.stride_tricks.as_strided(buf, shape=a.shape, strides=a.strides)
