"""Layout inference: the memory layout (strides) every value of a graph has at run time.

NumPy keeps the layout of an elementwise op's input in its result (order='K'), views permute,
slice or broadcast their source's layout, and most other ops return C-ordered arrays. The memory
plan allocates each buffer in the layout its value would have had when computed eagerly, so a
value stored channel-major (a convolution's GEMM output seen as NCHW) stays so through its bias
add, pooling and their gradients, with no op transposing on the fly; and it knows which
reshapes are views and which must copy.

Layouts are computed on stand-in arrays: `as_strided` views of a one-byte buffer with the
value's shape and strides counted in elements. NumPy's own view functions (transpose, basic
indexing, broadcast_to, reshape without copying) give the strides of views; no data is touched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from dlrun.engine.graph import SINKS, Graph, Node
from dlrun.engine.prims.registry import REGISTRY, Kind

Strides = tuple[int, ...]
_BASE = np.zeros(1, dtype=np.uint8)

# Ops whose result is laid out like one of their inputs (its index), as elementwise ops are.
FOLLOWS_INPUT = {"max_pool2d": 0, "avg_pool2d": 0, "max_pool2d_grad": 1, "pad": 0}
# Ops that produce a fixed non-C layout of their own (the order of axes, outermost first).
OWN_ORDER = {"col2im": (1, 0, 2, 3)}  # accumulated channel-major, like the columns it sums


def dense(shape: tuple[int, ...], order: tuple[int, ...] | None = None) -> Strides:
    """Strides (in elements) of a dense array whose axes are `order`, outermost first."""
    order = tuple(range(len(shape))) if order is None else order
    strides = [0] * len(shape)
    step = 1
    for a in reversed(order):
        strides[a] = step
        step *= max(shape[a], 1)
    return tuple(strides)


def order_of(shape: tuple[int, ...], strides: Strides) -> tuple[int, ...]:
    """The axes from outermost to innermost in memory (size-1 axes where C order puts them)."""
    return tuple(sorted(range(len(shape)),
                        key=lambda a: (-abs(strides[a]) if shape[a] > 1 else 0, a)))


def allocate(xp: Any, shape: tuple[int, ...], dtype: Any, order: tuple[int, ...]) -> Any:
    """An empty array of `shape` whose memory holds the axes in `order` (outermost first)."""
    if order == tuple(range(len(shape))):
        return xp.empty(shape, dtype=dtype)
    base = xp.empty(tuple(shape[a] for a in order), dtype=dtype)
    return base.transpose(tuple(int(i) for i in np.argsort(order)))


def stand_in(shape: tuple[int, ...], strides: Strides) -> np.ndarray:
    """An array with this shape and these strides (in elements) over one byte: for asking
    NumPy about views (their strides, contiguity) without touching or allocating data."""
    return as_strided(_BASE, shape=shape, strides=strides, writeable=False)


def reshaped(shape: tuple[int, ...], strides: Strides, new_shape: tuple[int, ...]
             ) -> Strides | None:
    """The strides of reshape(x, new_shape) when it is a view of x, else None (a copy)."""
    try:
        view = stand_in(shape, strides).reshape(new_shape, copy=False)
    except (ValueError, TypeError):  # TypeError: NumPy < 2.1 has no copy=False
        return strides_if_c(shape, strides, new_shape)
    return view.strides


def strides_if_c(shape: tuple[int, ...], strides: Strides, new_shape: tuple[int, ...]
                 ) -> Strides | None:
    return dense(new_shape) if strides == dense(shape) else None


def _dense_like(n: Node, src: Strides | None, src_shape: tuple[int, ...]) -> Strides:
    """Dense strides for n in the axis order of a same-rank source."""
    if src is None or len(src_shape) != len(n.shape):
        return dense(n.shape)
    return dense(n.shape, order_of(src_shape, src))


def infer_layouts(graph: Graph) -> dict[int, Strides]:
    """{node id: strides in elements} for every value of the graph."""
    from dlrun.engine.prims.movement import to_python_index

    by_id = graph.by_id()
    out: dict[int, Strides] = {}
    for n in graph.nodes:
        if n.op in SINKS:
            continue
        ins = [out.get(i) for i in n.inputs]
        shapes = [by_id[i].shape for i in n.inputs]
        if n.op == "permute":
            out[n.id] = tuple(ins[0][a] for a in n.attrs["axes"])
        elif n.op == "reshape":
            out[n.id] = reshaped(shapes[0], ins[0], n.shape) or dense(n.shape)
        elif n.op == "getitem":
            view = stand_in(shapes[0], ins[0])[to_python_index(n.attrs["index"])]
            out[n.id] = view.strides
        elif n.op == "broadcast_to":
            out[n.id] = np.broadcast_to(stand_in(shapes[0], ins[0]), n.shape).strides
        elif n.op in OWN_ORDER:
            out[n.id] = dense(n.shape, OWN_ORDER[n.op])
        elif n.op in FOLLOWS_INPUT:
            k = FOLLOWS_INPUT[n.op]
            out[n.id] = _dense_like(n, ins[k], shapes[k])
        elif n.op == "fused" or _elementwise(n.op):
            src = next((k for k, s in enumerate(shapes)
                        if s == n.shape and ins[k] is not None and 0 not in ins[k]), None)
            out[n.id] = dense(n.shape) if src is None else _dense_like(n, ins[src], shapes[src])
        else:
            out[n.id] = dense(n.shape)
    return out


def _elementwise(op: str) -> bool:
    prim = REGISTRY.get(op)
    return prim is not None and prim.kind is Kind.ELEMENTWISE
