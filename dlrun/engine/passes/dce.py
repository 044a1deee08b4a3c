"""Dead-code elimination: drop nodes that reach no output, state write or impure node."""

from __future__ import annotations

from typing import Any

from dlrun.engine.graph import SINKS, Graph
from dlrun.engine.prims.registry import REGISTRY


def _impure(op: str) -> bool:
    prim = REGISTRY.get(op)
    return prim is not None and not prim.pure


def dce(graph: Graph) -> tuple[Graph, dict[str, Any]]:
    """Keep sinks, impure nodes (random draws keep their order) and what they use."""
    live: set[int] = set()
    for n in reversed(graph.nodes):
        if n.op in SINKS or _impure(n.op) or n.id in live:
            live.add(n.id)
            live.update(n.inputs)
    kept = [n for n in graph.nodes if n.id in live or n.op == "input"]
    return graph.replace(kept), {"removed": len(graph.nodes) - len(kept)}
