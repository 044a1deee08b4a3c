"""All primitives, registered on import (see registry.py)."""

from dlrun.engine.prims import (
    attention,
    collective,
    conv,
    elementwise,
    fused,
    linalg,
    movement,
    random,
    reduce,
)
from dlrun.engine.prims.registry import REGISTRY, Kind, MissingFact, Primitive, primitive

__all__ = [
    "REGISTRY", "Kind", "MissingFact", "Primitive", "primitive",
    "attention", "collective", "conv", "elementwise", "fused", "linalg", "movement", "random",
    "reduce",
]
