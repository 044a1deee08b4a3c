"""Overlap: start each collective as soon as its inputs are final, as PyTorch DDP starts a
gradient bucket's all-reduce during the backward pass.

A traced data-parallel step reduces its gradients after `backward()` returns, so the nodes that
gather a bucket (reshape, scale, concatenate) and the start of its all-reduce come after the
whole backward pass. Those nodes serve only the start (every use leads to it), so they can run
as soon as the last gradient they read is computed: the pass moves each start, with the nodes
that serve only it, to right after the last other node it depends on. Nothing else moves, so
every other node sees the same values in the same order; the wait stays where it was (before
the optimizer reads the gradients).
"""

from __future__ import annotations

from typing import Any

from dlrun.engine.graph import SINKS, SOURCES, Graph, Node
from dlrun.engine.prims.registry import REGISTRY


def _starts(graph: Graph) -> set[int]:
    return {n.id for n in graph.nodes if n.op in REGISTRY and REGISTRY[n.op].in_flight > 0}


def _serving(graph: Graph, starts: set[int]) -> set[int]:
    """Pure nodes (sources included: they read nothing a step writes before its end) whose
    every use leads only to starts."""
    users = graph.users()
    serving: set[int] = set()
    for n in reversed(graph.nodes):
        uses = users.get(n.id, [])
        prim = REGISTRY.get(n.op)  # sources (constants, state reads) have no entry
        movable = n.op not in SINKS and (prim.pure if prim is not None else n.op in SOURCES)
        if movable and uses and all(u in starts or u in serving for u in uses):
            serving.add(n.id)
    return serving


def _group(start: Node, by_id: dict[int, Node], serving: set[int], pos: dict[int, int],
           ready_of: dict[int, int]) -> tuple[list[int], int]:
    """The serving nodes `start` needs that no earlier start took, and the position after which
    they and `start` can run (-1: from the beginning)."""
    group, ready, todo = [], -1, list(start.inputs)
    while todo:
        i = todo.pop()
        if i in ready_of:  # taken by an earlier start: ready with it
            ready = max(ready, ready_of[i])
        elif i in serving:
            if i not in group:
                group.append(i)
                todo.extend(by_id[i].inputs)
        else:
            ready = max(ready, pos[i])
    return group, ready


def overlap(graph: Graph) -> tuple[Graph, dict[str, Any]]:
    """Move each collective start (and what serves only it) up to where its inputs are final."""
    starts = _starts(graph)
    if not starts:
        return graph, {"starts": 0, "nodes_earlier": 0}
    by_id = graph.by_id()
    pos = {n.id: k for k, n in enumerate(graph.nodes)}
    serving = _serving(graph, starts)
    moved = serving | starts
    after: dict[int, list[int]] = {}  # the position of a start's last dependency -> groups
    ready_of: dict[int, int] = {}
    for n in graph.nodes:
        if n.id in starts:
            group, ready = _group(n, by_id, serving, pos, ready_of)
            ready_of.update({i: ready for i in [*group, n.id]})
            after.setdefault(ready, []).extend(sorted(group, key=pos.__getitem__) + [n.id])
    order = list(after.get(-1, []))
    for n in graph.nodes:
        if n.id not in moved:
            order.append(n.id)
            order.extend(after.get(pos[n.id], []))
    assert len(order) == len(graph.nodes), "overlap: a node was lost"
    earlier = sum(1 for k, i in enumerate(order) if k < pos[i])
    return graph.replace(by_id[i] for i in order), {"starts": len(starts),
                                                    "nodes_earlier": earlier}
