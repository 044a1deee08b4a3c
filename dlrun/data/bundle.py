"""The result of every dataset builder, plus the split and scaling helpers they share.

A builder returns a `DatasetBundle`: train / val / test `Split`s of NumPy arrays and a `meta`
dict with what the model builder and the evaluator need (input shape, number of classes or
outputs, vocabulary, scaler statistics). `meta` holds only JSON types so it can be saved
with the run and read back by `dlrun eval`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from dlrun.errors import DataError


@dataclass(frozen=True)
class BatchKey:
    """Which batch a loader is gathering, for transforms that draw random numbers (augmentation):
    the draws depend only on (seed, epoch, batch), never on how far a run got, so a resumed run
    and an uninterrupted one see the same; `lo` and `rows` place this rank's share in the
    global batch, so N ranks draw what one process draws."""

    seed: int
    epoch: int
    batch: int
    lo: int
    rows: int


class BatchTransform(Protocol):
    """Raw rows of a split's `x` -> the model's inputs in `dtype`, one batch at a time (pixel
    scaling and normalisation, column standardisation). `key` is None for evaluation (no
    augmentation) and the batch's BatchKey for training."""

    def __call__(self, x: np.ndarray, key: BatchKey | None, dtype: np.dtype) -> np.ndarray: ...


@dataclass
class Split:
    """One split: inputs `x` and targets `y`, aligned along the first axis.

    They may be read-only strided views (text windows over one corpus, see data.text.windows) or
    memory-mapped files (np.memmap, larger than memory): index rows (`x[idx]`, `take`) rather than
    making the whole array contiguous. With `index`, the split holds only those rows of `x` (a
    memory-mapped array shared by the splits, never copied) and `y` is aligned with `index`.
    With `transform`, `x` holds raw rows (e.g. uint8 pixels) that the loader turns into inputs
    batch by batch.
    """

    x: np.ndarray
    y: np.ndarray
    index: np.ndarray | None = None
    transform: BatchTransform | None = None

    def __post_init__(self) -> None:
        n = len(self.x) if self.index is None else len(self.index)
        if n != len(self.y):
            raise DataError(f"split has {n} inputs but {len(self.y)} targets")

    def __len__(self) -> int:
        return len(self.y)

    def take(self, index: np.ndarray) -> Split:
        """The rows at `index`: a copy, or for memory-mapped inputs a new row index (the file's
        rows are not read)."""
        if self.index is not None or isinstance(self.x, np.memmap):
            rows = np.arange(len(self.x)) if self.index is None else self.index
            return Split(self.x, self.y[index], rows[index], self.transform)
        return Split(self.x[index], self.y[index], None, self.transform)

    def inputs(self, index: np.ndarray | slice) -> np.ndarray:
        """The model inputs of the rows at `index` (gathered, transformed without augmentation,
        float32 when transformed)."""
        rows = np.arange(len(self))[index]
        x = self.x[rows if self.index is None else self.index[rows]]
        return x if self.transform is None else self.transform(x, None, np.dtype(np.float32))


@dataclass
class DatasetBundle:
    """Train / validation / test splits and the metadata a model and evaluator need.

    `val` is None when the validation fraction is 0; `test` is None when the dataset has no
    test split and none was asked for. Standard `meta` keys: name, task ('classification',
    'regression' or 'language_model'), input_shape (one sample), input_dtype, output_dim,
    num_classes (classification), and per family: classes, vocab, scaler, true_weights...
    """

    train: Split
    val: Split | None
    test: Split | None
    meta: dict[str, Any] = field(default_factory=dict)

    def splits(self) -> dict[str, Split]:
        """The splits that exist, by name."""
        out = {"train": self.train}
        if self.val is not None:
            out["val"] = self.val
        if self.test is not None:
            out["test"] = self.test
        return out


def check_fraction(name: str, value: float, dataset: str) -> float:
    """A fraction in [0, 1), else DataError naming the dataset option."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise DataError(f"dataset {dataset!r}: {name} must be a number, got {value!r}") from None
    if not 0.0 <= f < 1.0 or math.isnan(f):
        raise DataError(f"dataset {dataset!r}: {name} must be in [0, 1), got {value!r}")
    return f


def check_positive_int(name: str, value: Any, dataset: str, minimum: int = 1) -> int:
    """An integer >= minimum, else DataError naming the dataset option."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise DataError(
            f"dataset {dataset!r}: {name} must be an integer >= {minimum}, got {value!r}"
        )
    return int(value)


def split_counts(n: int, fractions: tuple[float, ...], dataset: str) -> tuple[int, ...]:
    """Row counts for the trailing parts given their fractions; the rest is the first part."""
    if sum(fractions) >= 1.0:
        raise DataError(f"dataset {dataset!r}: split fractions {fractions} leave no training data")
    counts = tuple(int(round(n * f)) for f in fractions)
    first = n - sum(counts)
    if first < 1:
        raise DataError(f"dataset {dataset!r}: {n} samples are too few to split {fractions}")
    return (first, *counts)


def random_split(
    split: Split, fractions: tuple[float, ...], seed: int, dataset: str
) -> list[Split | None]:
    """Seeded random split into [rest, part_1, part_2, ...]; an empty part is None.

    Rows keep their original relative order inside each part, so the result depends only on
    (n, fractions, seed).
    """
    n = len(split)
    counts = split_counts(n, fractions, dataset)
    perm = np.random.default_rng(seed).permutation(n)
    # The held-out parts are cut from the front of the permutation, in order, so adding a
    # test fraction never changes which rows go to validation for a given seed.
    held_out: list[Split | None] = []
    start = 0
    for count in counts[1:]:
        idx = np.sort(perm[start : start + count])
        held_out.append(split.take(idx) if count > 0 else None)
        start += count
    return [split.take(np.sort(perm[start:])), *held_out]


@dataclass
class Standardizer:
    """Per-column (x - mean) / std, fitted on training data only; std 0 becomes 1.

    kind 'minmax' stores min as `mean` and (max - min) as `std`, so the same formula maps
    the training range onto [0, 1].
    """

    mean: np.ndarray
    std: np.ndarray
    kind: str = "standard"

    @classmethod
    def fit(cls, x: np.ndarray, axis: int | tuple[int, ...] = 0) -> Standardizer:
        """Statistics of `x` over `axis` (float64 for accuracy)."""
        mean = np.asarray(x, dtype=np.float64).mean(axis=axis)
        std = np.asarray(x, dtype=np.float64).std(axis=axis)
        std = np.where(std > 0, std, 1.0)
        return cls(np.asarray(mean), np.asarray(std))

    @classmethod
    def fit_minmax(cls, x: np.ndarray, axis: int | tuple[int, ...] = 0) -> Standardizer:
        """Scale the training range onto [0, 1]."""
        lo = np.asarray(x, dtype=np.float64).min(axis=axis)
        span = np.asarray(x, dtype=np.float64).max(axis=axis) - lo
        return cls(np.asarray(lo), np.asarray(np.where(span > 0, span, 1.0)), "minmax")

    def transform(self, x: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """Scaled copy of `x` in `dtype`."""
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.std).astype(dtype)

    def inverse(self, x: np.ndarray) -> np.ndarray:
        """Back to original units (e.g. forecasts)."""
        return np.asarray(x, dtype=np.float64) * self.std + self.mean

    def to_meta(self) -> dict[str, Any]:
        """JSON form, saved with the run."""
        return {
            "kind": self.kind,
            "mean": np.atleast_1d(self.mean).tolist(),
            "std": np.atleast_1d(self.std).tolist(),
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Standardizer:
        """Rebuild from `to_meta()` output (for eval / prediction)."""
        return cls(
            np.asarray(meta["mean"], dtype=np.float64),
            np.asarray(meta["std"], dtype=np.float64),
            meta.get("kind", "standard"),
        )


def chunked_stats(x: np.ndarray, rows: np.ndarray, axis: tuple[int, ...],
                  chunk_values: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (float64, two passes) of `x[rows]` over `axis` (0: the rows, plus any sample
    axes), reading about `chunk_values` values at a time, so that `x` may be a memory-mapped
    array larger than memory. A constant column or channel has std 0."""
    rows = np.sort(np.asarray(rows))
    step = max(1, chunk_values // max(math.prod(x.shape[1:]), 1))
    count = len(rows) * math.prod(x.shape[a] for a in axis if a != 0)

    def blocks() -> Any:
        for k in range(0, len(rows), step):
            yield np.asarray(x[rows[k:k + step]], dtype=np.float64)

    mean = sum((b.sum(axis=axis) for b in blocks()), np.zeros(())) / count
    centre = np.expand_dims(mean, axis)
    var = sum((np.square(b - centre).sum(axis=axis) for b in blocks()), np.zeros(())) / count
    return mean, np.sqrt(var)
