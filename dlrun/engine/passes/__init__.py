"""Graph optimization passes: each a small function that rewrites a graph, keeping results equal.

A pass is `Pass`: it takes a graph and returns the new graph and a dict saying what it did (empty
when there is nothing to say); it never writes onto the graph. PIPELINE runs in order; `run`
applies the enabled ones, verifies the graph after each and collects per-pass statistics (nodes
before/after, time, the pass's dict). Memory planning is not a pass: the static executor plans
the final graph (engine/static/memory.py) and adds its figures to the report.
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
from dlrun.engine.passes.fuse_rows import fuse_rows
from dlrun.engine.passes.hoist import hoist
from dlrun.engine.passes.matmul_sum import matmul_sum
from dlrun.engine.passes.overlap import overlap
from dlrun.engine.passes.simplify import simplify

Pass = Callable[[Graph], tuple[Graph, dict[str, Any]]]

PIPELINE: tuple[tuple[str, Pass], ...] = (
    ("dce", dce),
    ("cse", cse),
    ("fold", fold),
    ("simplify", simplify),
    ("hoist", hoist),  # the per-step input projections of an unrolled RNN as one GEMM
    ("matmul_sum", matmul_sum),
    ("cse2", cse),  # merges the concatenations matmul_sum made of the same values
    ("dce2", dce),
    ("fuse_rows", fuse_rows),  # only where row kernels run (see CPU_KERNEL_PASSES)
    ("fuse", fuse),
    ("overlap", overlap),  # gradient buckets' all-reduces start during the backward pass
)
PASS_NAMES = tuple(name for name, _ in PIPELINE)
# Passes whose nodes only a native CPU kernel runs well: skipped on CuPy and without Numba.
CPU_KERNEL_PASSES = frozenset({"fuse_rows"})


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
    memory: dict[str, Any] = field(default_factory=dict)  # the memory plan's figures, if planned

    def as_dict(self) -> dict[str, Any]:
        return {
            "traced_nodes": self.traced_nodes,
            "final_nodes": self.final_nodes,
            "passes": [s.__dict__ for s in self.stats],
            "memory": self.memory,
        }


def _base(name: str) -> str:
    return name.rstrip("0123456789")


def enabled(name: str, which: bool | tuple[str, ...]) -> bool:
    """Whether the step `name` runs under `which`: True (all), False (none) or a tuple of names
    (`cse` enables `cse2` too). The static executor asks it about "memory" as well."""
    if which is True:
        return True
    if which is False:
        return False
    return name in which or _base(name) in which


def run(graph: Graph, which: bool | tuple[str, ...] = True,
        cpu_kernels: bool = False) -> tuple[Graph, PassReport]:
    """Apply the enabled passes of PIPELINE in order (`cpu_kernels`: the plan runs on NumPy
    with native kernels, so CPU_KERNEL_PASSES run too)."""
    report = PassReport(traced_nodes=len(graph.nodes))
    for name, fn in PIPELINE:
        if not enabled(name, which) or (name in CPU_KERNEL_PASSES and not cpu_kernels):
            continue
        before = graph.counts()
        start = time.perf_counter()
        graph, detail = fn(graph)
        graph.verify()
        after = graph.counts()
        report.stats.append(PassStat(name, before["nodes"], after["nodes"], before["compute"],
                                     after["compute"], time.perf_counter() - start, dict(detail)))
    report.final_nodes = len(graph.nodes)
    return graph, report
