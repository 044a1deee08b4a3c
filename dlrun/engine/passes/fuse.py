"""Elementwise fusion: chains of elementwise ops become one `fused` node.

A chain grows while each link's producer has a single user and already has the chain's final shape
and dtype; a link must be `fusable` (its primitive says so). How a chain runs — in place over one
buffer on the CPU, one generated kernel on CUDA — is the `fused` primitive's business
(prims/fused.py).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from dlrun.engine.graph import Graph, Node
from dlrun.engine.prims.registry import REGISTRY


def fusable(op: str) -> bool:
    """True for primitives that may join a fused chain (see `Primitive.fusable`)."""
    prim = REGISTRY.get(op)
    return prim is not None and prim.fusable


def fuse(graph: Graph) -> tuple[Graph, dict[str, Any]]:
    """Replace each chain of two or more fusable nodes by one `fused` node."""
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
    ops_fused = sum(len(c) for c in chain_of.values() if len(c) > 1)
    return graph.replace(out), {"fused_nodes": fused_count, "ops_fused": ops_fused}


def program_of(members: list[Node]) -> tuple[tuple[int, ...], tuple[Any, ...]]:
    """(the external inputs' ids, the steps `(op, refs, attrs)`) of a group of nodes in order:
    a ref >= 0 indexes the external inputs, a ref -k is the step k places back (so -1 is the
    previous step: a chain's running result)."""
    position = {m.id: p for p, m in enumerate(members)}
    externals: list[int] = []
    steps = []
    for p, m in enumerate(members):
        refs = []
        for i in m.inputs:
            if i in position:
                refs.append(position[i] - p)
            else:
                if i not in externals:
                    externals.append(i)
                refs.append(externals.index(i))
        steps.append((m.op, tuple(refs), tuple(sorted(m.attrs.items()))))
    return tuple(externals), tuple(steps)


def _fused_node(chain: list[Node]) -> Node:
    externals, program = program_of(chain)
    return replace(chain[-1], op="fused", inputs=externals, attrs={"program": program})
