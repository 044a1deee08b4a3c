"""Elementwise fusion: chains of elementwise ops become one `fused` node.

A chain grows while each link's producer has a single user and already has the chain's final shape
and dtype. On the CPU a fused node runs its ufuncs in place on one buffer (`out=`), so the chain
makes no temporaries; on CUDA the same program becomes one generated elementwise kernel
(`cuda_kernel_source`), one launch and one pass over memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from dlrun.engine.graph import Graph, Node
from dlrun.engine.prims.registry import REGISTRY, Kind

# `where` writes its output in two steps, so it cannot run in place on one of its inputs.
_NOT_IN_PLACE = frozenset({"where"})


def fusable(op: str) -> bool:
    """True for elementwise primitives that can run in place in a chain."""
    prim = REGISTRY.get(op)
    return (prim is not None and prim.kind is Kind.ELEMENTWISE and prim.pure
            and prim.supports_out and prim.cuda_expr is not None and op not in _NOT_IN_PLACE)


def fuse(graph: Graph) -> Graph:
    users = graph.users()
    by_id = graph.by_id()
    # chain_of[node id] = list of member nodes (in order) of the chain that node ends
    chain_of: dict[int, list[Node]] = {}
    absorbed: set[int] = set()
    for n in graph.nodes:
        if not fusable(n.op):
            continue
        chain = [n]
        for i in n.inputs:
            p = by_id[i]
            if (i in chain_of and len(users[i]) == 1 and p.shape == n.shape
                    and p.dtype == n.dtype and n.inputs.count(i) == 1):
                chain = chain_of.pop(i) + [n]
                absorbed.add(i)
                break
        chain_of[n.id] = chain
    out: list[Node] = []
    fused_count = 0
    for n in graph.nodes:
        if n.id in absorbed:
            continue
        chain = chain_of.get(n.id)
        if chain is None or len(chain) == 1:
            out.append(n)
            continue
        out.append(_fused_node(chain))
        fused_count += 1
    g = graph.replace(out)
    g.meta["fuse_detail"] = {"fused_nodes": fused_count,
                             "ops_fused": sum(len(c) for c in chain_of.values() if len(c) > 1)}
    return g


def _fused_node(chain: list[Node]) -> Node:
    members = {m.id for m in chain}
    externals: list[int] = []
    steps = []
    for m in chain:
        refs = []
        for i in m.inputs:
            if i in members:
                refs.append(-1)  # the running result
            else:
                if i not in externals:
                    externals.append(i)
                refs.append(externals.index(i))
        steps.append((m.op, tuple(refs), tuple(sorted(m.attrs.items()))))
    last = chain[-1]
    return replace(last, op="fused", inputs=tuple(externals), attrs={"program": tuple(steps)})


def lower_fused(node: Node, xp: Any) -> Callable[..., Any]:
    """A callable `run(*externals, out=None)` evaluating the chain: every step but the last
    writes a scratch buffer, the last writes `out`, so `out` may alias any external input.
    (Plans inline the same steps into their generated code; this is for interpreters.)"""
    from dlrun.engine.static.lower import bind_op

    bound = [(bind_op(op, dict(attrs), xp), refs) for op, refs, attrs in node.attrs["program"]]
    shape, dtype = node.shape, node.dtype

    def run(*ext: Any, out: Any = None) -> Any:
        acc = xp.empty(shape, dtype=dtype) if len(bound) > 1 else None
        for k, (fn, refs) in enumerate(bound):
            target = out if k == len(bound) - 1 else acc
            args = [acc if r < 0 else ext[r] for r in refs]
            result = fn(*args, out=target) if target is not None else fn(*args)
            if k < len(bound) - 1:
                acc = result
        return result

    return run


C_TYPES = {"float16": "half", "float32": "float", "float64": "double", "int32": "int",
           "int64": "long long", "bool": "bool"}


def lower_fused_cuda(node: Node, cupy: Any) -> Callable[..., Any]:
    """The fused chain as one generated CuPy elementwise kernel: one launch, one pass over
    memory (the GPU path; its source comes from cuda_kernel_source, tested on the CPU)."""
    in_params, out_params, body = cuda_kernel_source(node)
    kernel = cupy.ElementwiseKernel(in_params, out_params, body, f"dlrun_fused_{node.id}")
    shape, dtype = node.shape, node.dtype

    def run(*ext: Any, out: Any = None) -> Any:
        if out is None:
            out = cupy.empty(shape, dtype=dtype)
        return kernel(*ext, out)

    return run


def cuda_kernel_source(node: Node) -> tuple[str, str, str]:
    """(in_params, out_params, body) for cupy.ElementwiseKernel from a fused node's program."""
    expr = ""
    for op, refs, attrs in node.attrs["program"]:
        names = [f"({expr})" if r < 0 else f"in{r}" for r in refs]
        fmt = dict(attrs)
        if "negative_slope" in fmt:
            fmt["slope"] = repr(float(fmt["negative_slope"]))
        if "dtype" in fmt:
            fmt["dtype"] = C_TYPES[np.dtype(fmt["dtype"]).name]
        expr = REGISTRY[op].cuda_expr.format(*names, **fmt)
    n_in = len(node.inputs)
    in_params = ", ".join(f"T{k} in{k}" for k in range(n_in))
    return in_params, "O out", f"out = (O)({expr})"
