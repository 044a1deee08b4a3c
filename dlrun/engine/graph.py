"""The static graph IR: an ordered list of nodes with explicit inputs, state, outputs.

A node has a unique integer id, an op (a primitive name or one of the structural ops below), input
node ids, attributes, output shape and dtype, and the user source line that created it.

Structural ops:
  input        attrs: index   the index-th tensor argument of the compiled function
  state        attrs: slot    a captured tensor (parameter, buffer, optimizer state), read live
  state_grad   attrs: index   the `.grad` of a captured tensor (see TraceResult.grads.read_slots)
  const        attrs: value   a constant array made while tracing (scalars, dlrun.tensor(...))
  output       attrs: index   inputs: (value,) — the index-th flattened result
  state_write  attrs: slot    inputs: (value,) — the new value of state `slot` after the call
  grad_write   attrs: slot    inputs: (value,) — the new `.grad` of state `slot` after the call

Every other op is a primitive of the registry (engine/prims), `fused` included (a chain of
elementwise primitives made by passes/fuse.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

SOURCES = frozenset({"input", "state", "state_grad", "const"})
SINKS = frozenset({"output", "state_write", "grad_write"})
STRUCTURAL = SOURCES | SINKS


def freeze(value: Any) -> Any:
    """A hashable stand-in for an attribute value (for CSE keys)."""
    if isinstance(value, dict):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, np.ndarray) or hasattr(value, "__cuda_array_interface__"):
        arr = value if isinstance(value, np.ndarray) else value.get()
        return ("array", arr.dtype.str, arr.shape, arr.tobytes())
    if isinstance(value, np.dtype):
        return ("dtype", value.str)
    return value


@dataclass(frozen=True, eq=False)
class Node:
    id: int
    op: str
    inputs: tuple[int, ...]
    attrs: dict[str, Any]
    shape: tuple[int, ...]
    dtype: np.dtype
    where: str = ""

    def key(self) -> tuple[Any, ...]:
        """(op, inputs, attrs) — equal keys on pure nodes compute equal values."""
        return (self.op, self.inputs, freeze(self.attrs))

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def format(self) -> str:
        args = ", ".join(f"%{i}" for i in self.inputs)
        shown = {k: v for k, v in self.attrs.items() if k not in ("value", "program")}
        if self.op == "const":
            v = self.attrs["value"]
            shown = {"value": _short(v)}
        if self.op == "fused":
            shown = {"ops": "·".join(step[0] for step in self.attrs["program"])}
        attr_text = ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items())
        inner = ", ".join(p for p in (args, attr_text) if p)
        dt = self.dtype.name.replace("float", "f").replace("int", "i")
        text = f"%{self.id} = {self.op}({inner}) : {dt}{list(self.shape)}"
        return f"{text}  # {self.where}" if self.where else text


def _short(v: Any) -> str:
    arr = v if isinstance(v, np.ndarray) else np.asarray(v.get())
    if arr.size <= 4:
        return np.array2string(arr, precision=4, separator=",")
    return f"<{arr.size} values>"


def _fmt(v: Any) -> str:
    if isinstance(v, np.dtype):
        return v.name
    return str(v)


@dataclass
class Graph:
    """The nodes, in execution order, and how many inputs and outputs the function has."""

    nodes: list[Node]
    n_inputs: int = 0
    n_outputs: int = 0

    def replace(self, nodes: Iterable[Node]) -> Graph:
        """The same graph with other nodes."""
        return dataclasses.replace(self, nodes=list(nodes))

    def by_id(self) -> dict[int, Node]:
        return {n.id: n for n in self.nodes}

    def users(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {n.id: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out[i].append(n.id)
        return out

    def of_op(self, *ops: str) -> list[Node]:
        return [n for n in self.nodes if n.op in ops]

    def next_id(self) -> int:
        return max((n.id for n in self.nodes), default=-1) + 1

    def verify(self) -> Graph:
        """Check ids are unique and every input is defined before use; returns self."""
        seen: set[int] = set()
        for n in self.nodes:
            if n.id in seen:
                raise AssertionError(f"graph: node id %{n.id} appears twice")
            missing = [i for i in n.inputs if i not in seen]
            if missing:
                raise AssertionError(f"graph: %{n.id} = {n.op} uses undefined {missing}")
            seen.add(n.id)
        return self

    def __str__(self) -> str:
        return "\n".join(n.format() for n in self.nodes)

    def to_dot(self) -> str:
        """Graphviz DOT text of the graph."""
        lines = ["digraph dlrun {", "  rankdir=TB;", '  node [shape=box, fontname="monospace"];']
        colors = {"input": "lightblue", "state": "khaki", "const": "lightgrey",
                  "output": "palegreen", "state_write": "orange", "grad_write": "orange",
                  "fused": "plum"}
        for n in self.nodes:
            label = f"%{n.id} {n.op}\\n{n.dtype.name}{list(n.shape)}"
            fill = colors.get(n.op)
            style = f', style=filled, fillcolor="{fill}"' if fill else ""
            lines.append(f'  n{n.id} [label="{label}"{style}];')
            for i in n.inputs:
                lines.append(f"  n{i} -> n{n.id};")
        lines.append("}")
        return "\n".join(lines)

    def counts(self) -> dict[str, int]:
        """Number of nodes, and of compute nodes (not inputs/state/const/sinks)."""
        compute = sum(1 for n in self.nodes if n.op not in SOURCES | SINKS)
        return {"nodes": len(self.nodes), "compute": compute}


def renumber_inputs(node: Node, mapping: dict[int, int]) -> Node:
    """The node with its inputs redirected through mapping (unchanged ids pass through)."""
    new = tuple(mapping.get(i, i) for i in node.inputs)
    return node if new == node.inputs else replace(node, inputs=new)
