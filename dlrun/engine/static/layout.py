"""Layout inference: the memory layout (strides) every value of a graph has at run time.

NumPy keeps the layout of an elementwise op's input in its result (order='K'), views permute,
slice or broadcast their source's layout, and most other ops return C-ordered arrays. Each
primitive says which (its `layout` rule, built from prims/strides.py). The memory plan allocates
each buffer in the layout its value would have had when computed eagerly, so a value stored
channel-major (a convolution's GEMM output seen as NCHW) stays so through its bias add, pooling
and their gradients, with no op transposing on the fly; and it knows which views must copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlrun.engine.graph import SINKS, Graph, Node
from dlrun.engine.prims.registry import REGISTRY
from dlrun.engine.prims.strides import Strides, dense, order_of, reshaped, stand_in

__all__ = ["Strides", "allocate", "dense", "infer_layouts", "order_of", "reshaped", "stand_in",
           "view_nodes"]


def _rule_result(n: Node, shapes: list[tuple[int, ...]], strides: list[Strides]
                 ) -> Strides | None:
    prim = REGISTRY.get(n.op)
    if prim is None or prim.layout is None:  # sources, and ops that return C-ordered arrays
        return None
    return prim.layout(tuple(shapes), tuple(strides), n.shape, **n.attrs)


def infer_layouts(graph: Graph) -> dict[int, Strides]:
    """{node id: strides in elements} for every value of the graph."""
    shape_of = {n.id: n.shape for n in graph.nodes}
    out: dict[int, Strides] = {}
    for n in graph.nodes:
        if n.op in SINKS:
            continue
        strides = _rule_result(n, [shape_of[i] for i in n.inputs], [out[i] for i in n.inputs])
        out[n.id] = dense(n.shape) if strides is None else strides
    return out


def view_nodes(graph: Graph, layouts: dict[int, Strides]) -> set[int]:
    """Ids of the nodes whose value is a view of their first input: view primitives whose
    layout rule finds a view for their input's layout (a reshape that must copy is planned like
    any computed value)."""
    shape_of = {n.id: n.shape for n in graph.nodes}
    out = set()
    for n in graph.nodes:
        prim = REGISTRY.get(n.op)
        if prim is None or not prim.view:
            continue
        if _rule_result(n, [shape_of[i] for i in n.inputs],
                        [layouts[i] for i in n.inputs]) is not None:
            out.add(n.id)
    return out


def allocate(xp: Any, shape: tuple[int, ...], dtype: Any, order: tuple[int, ...]) -> Any:
    """An empty array of `shape` whose memory holds the axes in `order` (outermost first)."""
    if order == tuple(range(len(shape))):
        return xp.empty(shape, dtype=dtype)
    base = xp.empty(tuple(shape[a] for a in order), dtype=dtype)
    return base.transpose(tuple(int(i) for i in np.argsort(order)))
