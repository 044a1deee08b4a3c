"""Constant folding: evaluate pure nodes whose inputs are all constants. State is never folded.

A fold that would materialize a constant larger than its inputs (a broadcast) is skipped: the
view is as fast to use and costs no memory.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dlrun.backend import array_module
from dlrun.engine.graph import Graph
from dlrun.engine.prims.registry import REGISTRY

SMALL = 64  # results up to this size fold even when they are larger than their inputs


def _size(shape: tuple[int, ...]) -> int:
    count = 1
    for s in shape:
        count *= s
    return count


def fold(graph: Graph) -> tuple[Graph, dict[str, Any]]:
    """Replace pure nodes of constant inputs by their value, computed with the constants' own
    array module (NumPy or CuPy)."""
    consts = {n.id: n.attrs["value"] for n in graph.nodes if n.op == "const"}
    out, folded = [], 0
    for n in graph.nodes:
        prim = REGISTRY.get(n.op)
        if (prim is not None and prim.pure and n.inputs
                and all(i in consts for i in n.inputs)
                and _size(n.shape) <= max(SMALL, max(consts[i].size for i in n.inputs))):
            xp = array_module(consts[n.inputs[0]])
            value = xp.asarray(prim.forward(xp, *[consts[i] for i in n.inputs], **n.attrs))
            value = value.astype(n.dtype, order="C", copy=True)
            consts[n.id] = value
            n = replace(n, op="const", inputs=(), attrs={"value": value})
            folded += 1
        out.append(n)
    return graph.replace(out), {"folded": folded}
