"""Batch transforms: raw rows of a split (uint8 pixels, unscaled CSV columns, read from a
memory-mapped cache) -> the model's inputs, applied by the loader one batch at a time.

`Normalize` scales and standardises with statistics fitted on the training split; with an
`Augment`, training batches are also flipped and cropped first. Augmentation draws its random
numbers from (seed, epoch, batch) only (see bundle.BatchKey), so a run resumed mid-epoch, or
split over N ranks, sees exactly the batches of an uninterrupted single-process run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dlrun.data.bundle import BatchKey
from dlrun.errors import DataError

AUGMENT_STREAM = 0xA06  # keeps augmentation's draws apart from the loader's shuffling


@dataclass(frozen=True)
class Augment:
    """Training-time image augmentation on (N, C, H, W) batches: a horizontal flip with
    probability 1/2 (`flip`) and a random H x W crop of the image zero-padded by
    `crop_padding` pixels on each side (torchvision's RandomCrop(padding=p))."""

    flip: bool = False
    crop_padding: int = 0

    @classmethod
    def from_options(cls, options: Any, dataset: str) -> Augment | None:
        """The `augment:` option ({flip: true, crop_padding: 4}), None when it does nothing."""
        if options is None or options is False:
            return None
        if not isinstance(options, dict) or set(options) - {"flip", "crop_padding"}:
            raise DataError(f"dataset {dataset!r}: augment must be a mapping with keys flip "
                            f"and crop_padding, got {options!r}")
        flip, pad = options.get("flip", False), options.get("crop_padding", 0)
        if not isinstance(flip, bool):
            raise DataError(f"dataset {dataset!r}: augment.flip must be true or false, "
                            f"got {flip!r}")
        if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
            raise DataError(f"dataset {dataset!r}: augment.crop_padding must be an integer "
                            f">= 0, got {pad!r}")
        return cls(flip, pad) if flip or pad else None

    def __call__(self, x: np.ndarray, key: BatchKey) -> np.ndarray:
        """The batch flipped and cropped as batch `key` draws (a new array)."""
        rng = np.random.default_rng([AUGMENT_STREAM, key.seed, key.epoch, key.batch])
        p = self.crop_padding
        flips = rng.random(key.rows) < 0.5  # drawn for the global batch, then this share
        shifts = rng.integers(0, 2 * p + 1, size=(key.rows, 2))
        share = slice(key.lo, key.lo + len(x))
        flips, shifts = flips[share], shifts[share]
        if p:
            h, w = x.shape[-2:]
            padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(p, p), (p, p)])
            out = np.empty_like(x)
            for i, (dy, dx) in enumerate(shifts):
                out[i] = padded[i, ..., dy:dy + h, dx:dx + w]
        else:
            out = np.array(x)
        if self.flip and flips.any():
            out[flips] = out[flips, ..., ::-1]
        return out


@dataclass(frozen=True)
class Normalize:
    """(x * scale - mean) / std in the run's dtype; mean and std broadcast against one sample
    ((C, 1, 1) per channel for images, (F,) per column for tables). Augments training batches
    first when `augment` is set."""

    mean: np.ndarray
    std: np.ndarray
    scale: float = 1.0
    augment: Augment | None = None

    def __call__(self, x: np.ndarray, key: BatchKey | None, dtype: np.dtype) -> np.ndarray:
        if key is not None and self.augment is not None:
            x = self.augment(x, key)
        factor = (self.scale / np.asarray(self.std, np.float64)).astype(dtype)
        offset = (np.asarray(self.mean, np.float64) / self.std).astype(dtype)
        out = np.asarray(x).astype(dtype)  # a copy: the rows may be a read-only memory map
        out *= factor
        out -= offset
        return out
