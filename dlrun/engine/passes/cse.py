"""Common-subexpression elimination: pure nodes with equal (op, inputs, attrs) are merged."""

from __future__ import annotations

from typing import Any

from dlrun.engine.graph import SINKS, Graph, renumber_inputs
from dlrun.engine.prims.registry import REGISTRY

_SMALL_CONST = 4096  # constants up to this many elements are compared by value


def _mergeable(op: str) -> bool:
    if op == "const":
        return True
    if op in SINKS or op in ("input", "state", "state_grad"):
        return False
    prim = REGISTRY.get(op)
    return prim is not None and prim.pure


def cse(graph: Graph) -> tuple[Graph, dict[str, Any]]:
    """Merge each pure node into the first equal one (large constants are never compared)."""
    seen: dict[tuple, int] = {}
    mapping: dict[int, int] = {}
    kept = []
    for n in graph.nodes:
        n = renumber_inputs(n, mapping)
        if _mergeable(n.op) and not (n.op == "const" and n.attrs["value"].size > _SMALL_CONST):
            key = (n.key(), n.shape, n.dtype.str)
            if key in seen:
                mapping[n.id] = seen[key]
                continue
            seen[key] = n.id
        kept.append(n)
    return graph.replace(kept), {"merged": len(mapping)}
