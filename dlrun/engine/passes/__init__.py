"""Graph optimization passes: each a small `Graph -> Graph` function that keeps results equal.

PIPELINE runs in order; `run` applies the enabled ones, verifies the graph after each and
collects per-pass statistics (nodes before/after, time, and the memory plan's figures).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dlrun.engine.graph import Graph
from dlrun.engine.passes.cse import cse
from dlrun.engine.passes.dce import dce
from dlrun.engine.passes.fold import fold
from dlrun.engine.passes.fuse import fuse
from dlrun.engine.passes.matmul_sum import matmul_sum
from dlrun.engine.passes.memory import plan_memory
from dlrun.engine.passes.simplify import simplify

Pass = Callable[[Graph], Graph]

PIPELINE: tuple[tuple[str, Pass], ...] = (
    ("dce", dce),
    ("cse", cse),
    ("fold", fold),
    ("simplify", simplify),
    ("matmul_sum", matmul_sum),
    ("cse2", cse),  # merges the concatenations matmul_sum made of the same values
    ("dce2", dce),
    ("fuse", fuse),
    ("memory", plan_memory),
)
PASS_NAMES = tuple(name for name, _ in PIPELINE)


@dataclass
class PassStat:
    name: str
    nodes_before: int
    nodes_after: int
    compute_before: int
    compute_after: int
    seconds: float
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class PassReport:
    stats: list[PassStat] = field(default_factory=list)
    traced_nodes: int = 0
    final_nodes: int = 0
    memory: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "traced_nodes": self.traced_nodes,
            "final_nodes": self.final_nodes,
            "passes": [s.__dict__ for s in self.stats],
            "memory": self.memory,
        }


def _base(name: str) -> str:
    return name.rstrip("0123456789")


def _enabled(name: str, which: bool | tuple[str, ...]) -> bool:
    if which is True:
        return True
    if which is False:
        return False
    return name in which or _base(name) in which


def run(graph: Graph, which: bool | tuple[str, ...] = True) -> tuple[Graph, PassReport]:
    """Apply the enabled passes of PIPELINE in order."""
    report = PassReport(traced_nodes=len(graph.nodes))
    for name, fn in PIPELINE:
        if not _enabled(name, which):
            continue
        before = graph.counts()
        start = time.perf_counter()
        graph = fn(graph).verify()
        after = graph.counts()
        report.stats.append(PassStat(name, before["nodes"], after["nodes"], before["compute"],
                                     after["compute"], time.perf_counter() - start,
                                     dict(graph.detail)))
    report.final_nodes = len(graph.nodes)
    report.memory = dict(graph.memory.stats) if graph.memory is not None else {}
    return graph, report
