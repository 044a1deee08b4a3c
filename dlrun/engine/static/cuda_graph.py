"""CUDA graphs for compiled steps: a plan with fixed shapes captured once by stream capture and
replayed with one `graph.launch()` per call (CuPy's `Stream.begin_capture` / `end_capture` ->
`cupy.cuda.graph.Graph`).

What a captured graph bakes in is every device address it touches, so:
- inputs are copied into static input buffers before each replay (`Bindings.bind_inputs`);
- the captured state arrays stay the tensors' arrays: a state tensor rebound since (a schedule
  set the learning rate, a checkpoint was loaded) is copied back into its captured array
  (`Bindings.bind_state`), and the plan's non-in-place state writes are copied into the state
  arrays inside the graph, so after a replay every state tensor still holds its captured array;
- temporaries come from a private memory pool kept alive with the graph (as PyTorch's graph
  pools), so no other allocation can be handed an address the graph writes to;
- outputs are copied out after a replay (the captured output buffer is overwritten by the next).

`blocker()` says why a plan cannot be captured (the CPU, random draws that must differ every
step, gradients kept between steps); the copy logic is array-module generic, so it is tested on
NumPy, and only `capture` / `launch` need CuPy.
"""

from __future__ import annotations

from typing import Any

from dlrun.engine.graph import Graph
from dlrun.engine.prims.registry import REGISTRY, Kind
from dlrun.engine.static.lower import Plan

_SOURCES = ("input", "state", "state_grad", "const", "output", "state_write", "grad_write")


def blocker(graph: Graph, plan: Plan, device: str, grad_inputs: int) -> str | None:
    """Why this plan cannot be replayed as a CUDA graph, or None when it can."""
    if not device.startswith("cuda"):
        return f"device {device} (CUDA graphs need a CUDA device)"
    for n in graph.nodes:
        if n.op in _SOURCES:
            continue
        prim = REGISTRY[n.op]
        if prim.kind is Kind.COLLECTIVE:
            return f"{n.op!r} talks to the other processes of the job as it runs (the MPI path "\
                   "goes through the host; a replay cannot)"
        if not prim.pure:
            return f"random op {n.op!r} must draw new numbers every step (a replay repeats them)"
    if grad_inputs or plan.grad_write_slots:
        return "gradients are kept between steps (call zero_grad() inside the step)"
    return None


class Bindings:
    """The fixed arrays a captured graph reads and writes, and the copies that keep them the
    arrays the caller's tensors use."""

    def __init__(self, xp: Any, inputs: list[Any], state: list[Any], plan: Plan) -> None:
        self.xp = xp
        self.inputs = [xp.array(a, copy=True) for a in inputs]  # static input buffers
        self.state = list(state)  # the captured state arrays (the tensors' own)
        inplace = set(plan.inplace_slots)
        self.fresh = [(k, s) for k, s in enumerate(plan.state_write_slots) if s not in inplace]
        self.write_slots = list(plan.state_write_slots)

    def bind_inputs(self, inputs: list[Any]) -> None:
        """Copy this call's inputs into the static input buffers (shapes are the signature's)."""
        copyto = self.xp.copyto
        for buf, a in zip(self.inputs, inputs, strict=True):
            if buf is not a:
                copyto(buf, a)

    def bind_state(self, tensors: list[Any]) -> int:
        """Copy any state tensor rebound since the capture back into its captured array and
        give the tensor that array again; returns how many were copied."""
        copied = 0
        for t, arr in zip(tensors, self.state, strict=True):
            if t._value is not arr:
                self.xp.copyto(arr, t._value)
                t._value = arr
                copied += 1
        return copied

    def store_writes(self, writes: tuple[Any, ...]) -> None:
        """Inside the capture: the plan's fresh (not in-place) state writes into the state
        arrays, so the next replay reads them where it read the old values."""
        for k, slot in self.fresh:
            self.xp.copyto(self.state[slot], writes[k])

    def writes(self) -> list[Any]:
        """What a replay wrote for each state write: the captured state arrays themselves."""
        return [self.state[s] for s in self.write_slots]


class CudaGraphStep:
    """One plan captured on a side stream into a CUDA graph, and its replay."""

    def __init__(self, plan: Plan, bindings: Bindings) -> None:
        import cupy

        self.cupy, self.plan, self.bindings = cupy, plan, bindings
        self.pool = cupy.cuda.MemoryPool()  # private: the graph's temporaries live here
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.graph: Any = None
        self.outputs: tuple[Any, ...] = ()

    def capture(self) -> None:
        """Record one run of the plan (nothing executes). The caller has run the plan once
        already (warm-up: cuBLAS handles, kernel compilation, the pool's blocks)."""
        cupy, b = self.cupy, self.bindings
        cupy.cuda.get_current_stream().synchronize()
        with cupy.cuda.using_allocator(self.pool.malloc), self.stream:
            self.stream.begin_capture()
            try:
                outs, writes, _ = self.plan.run(b.inputs, b.state, [])
                b.store_writes(writes)
            finally:
                self.graph = self.stream.end_capture()
        self.outputs = tuple(outs)

    def run(self, inputs: list[Any], tensors: list[Any]) -> tuple[list[Any], list[Any], list]:
        """Replay on the current stream (ordered after the input copies): outputs (fresh
        copies), the state writes (the captured arrays) and no gradient writes."""
        b = self.bindings
        b.bind_inputs(inputs)
        b.bind_state(tensors)
        self.graph.launch(stream=self.cupy.cuda.get_current_stream())
        return [o.copy() for o in self.outputs], b.writes(), []
