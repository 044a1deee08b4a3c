"""Small graphs for pass tests: trace a function, evaluate a graph with the reference executor."""

from __future__ import annotations

from typing import Any

import numpy as np

import dlrun
from dlrun.engine.graph import Graph
from dlrun.engine.static.interpret import interpret
from dlrun.engine.static.trace import TraceResult, trace


def traced(fn, *args: Any) -> TraceResult:
    return trace(fn, args, {}, "cpu", np)


def evaluate(graph: Graph, result: TraceResult, args: tuple[Any, ...]) -> list[np.ndarray]:
    """The values of the graph's sinks (outputs and writes), in order."""
    inputs = [a._value for a in args if isinstance(a, dlrun.Tensor)]
    env = interpret(graph, np, inputs, [t._value for t in result.state])
    return [np.asarray(env[n.id]) for n in graph.nodes if n.op in ("output", "state_write",
                                                                   "grad_write")]


def assert_same_results(before: Graph, after: Graph, result: TraceResult, args) -> None:
    a, b = evaluate(before, result, args), evaluate(after, result, args)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-14)


def ops(graph: Graph) -> list[str]:
    return [n.op for n in graph.nodes]
