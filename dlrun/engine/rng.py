"""The engine's seeded random generators, one per device; draws happen in program order.

Eager ops and compiled plans draw from the same generator in the same order, so a seeded eager run
and a seeded static run see the same dropout masks and initial weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlrun.backend import get_xp

_SEED = 0
_GENERATORS: dict[str, Any] = {}


def manual_seed(seed: int) -> None:
    """Seed every device's generator (like torch.manual_seed)."""
    global _SEED
    _SEED = int(seed)
    _GENERATORS.clear()


def initial_seed() -> int:
    return _SEED


def generator(device: str) -> Any:
    """The generator for a device: numpy.random.Generator or cupy.random.Generator."""
    gen = _GENERATORS.get(device)
    if gen is None:
        if device == "cpu":
            gen = np.random.default_rng(_SEED)
        else:
            cupy = get_xp(device)
            with cupy.cuda.Device(int(device.split(":")[1])):
                gen = cupy.random.default_rng(_SEED)
        _GENERATORS[device] = gen
    return gen


def get_state(device: str = "cpu") -> dict[str, Any]:
    """The generator state as JSON-able data (for checkpoints); CPU generators only."""
    if device != "cpu":
        raise NotImplementedError("saving the RNG state of a CUDA generator")
    return {"seed": _SEED, "bit_generator": generator("cpu").bit_generator.state}


def set_state(state: dict[str, Any], device: str = "cpu") -> None:
    """Restore a state from get_state."""
    global _SEED
    _SEED = int(state["seed"])
    gen = np.random.default_rng(_SEED)
    gen.bit_generator.state = state["bit_generator"]
    _GENERATORS[device] = gen
