"""The reference executor: evaluate a graph node by node through the same bound primitives the
plans call (tests compare plans, and graphs before and after a pass, against it)."""

from __future__ import annotations

from typing import Any

from dlrun.engine.graph import SINKS, Graph
from dlrun.engine.static.lower import bind


def interpret(graph: Graph, xp: Any, inputs: list[Any], state: list[Any],
              grads: list[Any] | None = None) -> dict[int, Any]:
    """{node id: value} for every node of the graph, sinks holding what they receive."""
    sources = {"input": lambda a: inputs[a["index"]], "state": lambda a: state[a["slot"]],
               "state_grad": lambda a: (grads or [])[a["index"]], "const": lambda a: a["value"]}
    env: dict[int, Any] = {}
    for n in graph.nodes:
        if n.op in sources:
            env[n.id] = sources[n.op](n.attrs)
        elif n.op in SINKS:
            env[n.id] = env[n.inputs[0]]
        else:
            env[n.id] = bind(n, xp, tuple(env[i] for i in n.inputs))(
                *[env[i] for i in n.inputs])
    return env
