"""All primitives, registered on import (see registry.py)."""

from dlrun.engine.prims import conv, elementwise, linalg, movement, random, reduce
from dlrun.engine.prims.registry import REGISTRY, Kind, Primitive, primitive

__all__ = [
    "REGISTRY", "Kind", "Primitive", "primitive",
    "conv", "elementwise", "linalg", "movement", "random", "reduce",
]
