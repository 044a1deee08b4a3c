"""Random primitives: impure nodes that draw from the engine generator in program order."""

from __future__ import annotations

import numpy as np

from dlrun.engine import rng
from dlrun.engine.prims.registry import Kind, primitive

Rnd = Kind.RANDOM


def _sample_rule(*, shape, dtype, device):
    return tuple(shape), np.dtype(dtype)


@primitive("normal", Rnd, _sample_rule, pure=False, differentiable=False)
def normal(xp, *, shape, dtype, device):
    return rng.generator(device).standard_normal(shape, dtype=dtype)


@primitive("uniform", Rnd, _sample_rule, pure=False, differentiable=False)
def uniform(xp, *, shape, dtype, device):
    return rng.generator(device).random(shape, dtype=dtype)


def _randint_rule(*, shape, low, high, device):
    return tuple(shape), np.dtype(np.int64)


@primitive("randint", Rnd, _randint_rule, pure=False, differentiable=False)
def randint(xp, *, shape, low, high, device):
    return rng.generator(device).integers(low, high, size=shape, dtype=np.int64)


def _mask_rule(*, shape, p, dtype, device):
    return tuple(shape), np.dtype(dtype)


@primitive("dropout_mask", Rnd, _mask_rule, pure=False, differentiable=False)
def dropout_mask(xp, *, shape, p, dtype, device):
    """Inverted-dropout mask: 1/(1-p) where kept, 0 where dropped."""
    keep = rng.generator(device).random(shape, dtype=np.float32) >= p
    return keep.astype(dtype) * dtype.type(1.0 / (1.0 - p))
