"""dlrun.compile(fn): trace once per input signature, optimize, lower to a plan, replay.

The first call with a new signature (tensor shapes/dtypes/devices/requires_grad, Python argument
values, grad mode, train/eval flags of the modules used, and which of the captured gradients the
traced function reads before it sets them are None: see grads.py) traces `fn` into a graph, runs
the passes and caches the lowered plan; later calls with that signature run the plan without
running fn's Python body. Every trace is counted and its reason logged; a cap turns a retracing
storm into a clear error (or, when allowed, a recorded fall-back to eager).
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlrun.backend import get_xp
from dlrun.engine import autograd, mode, passes
from dlrun.engine.graph import Graph
from dlrun.engine.static import cpu_kernels
from dlrun.engine.static.grads import GradTracker
from dlrun.engine.static.lower import Plan, lower
from dlrun.engine.static.memory import MemoryPlan, plan_memory
from dlrun.engine.static.trace import TraceResult, _Leaf, trace, unflatten
from dlrun.engine.tensor import Tensor
from dlrun.errors import TraceError

log = logging.getLogger("dlrun.compile")


@dataclass
class TraceRecord:
    """One trace: the signature that caused it, why, and what the passes did."""

    signature: tuple[Any, ...]
    reason: str
    seconds: float
    report: passes.PassReport
    kernels: dict[str, Any] = field(default_factory=dict)  # CPU kernels made (cpu_kernels.py)


@dataclass
class _Entry:
    """A traced signature: its graph and plan, and what a call does around the plan, worked
    out once (the call path of a tiny model is a large share of its step)."""

    result: TraceResult
    plan: Plan
    graph: Graph
    memory: MemoryPlan | None  # where the plan keeps the graph's values (None: not planned)
    device: str = "cpu"
    xp: Any = np
    inplace: list[Tensor] = field(default_factory=list)  # state tensors written in place
    fresh_writes: list[tuple[int, Tensor]] = field(default_factory=list)  # (write index, state)
    single: bool = False  # the function returns one tensor
    cuda_graph: Any = None  # CudaGraphStep once captured; see cuda_graph.py
    graph_blocker: str | None = None  # why this plan runs without a CUDA graph

    def __post_init__(self) -> None:
        """Resolve the plan's slots to the captured tensors once."""
        state, plan = self.result.state, self.plan
        self.inplace = [state[s] for s in plan.inplace_slots]
        inplace = set(plan.inplace_slots)
        self.fresh_writes = [(k, state[s]) for k, s in enumerate(plan.state_write_slots)
                             if s not in inplace]
        self.result.grads.bind(state, plan.grad_write_slots)
        self.single = type(self.result.out_tree) is _Leaf


def _arg_sig(a: Any) -> Any:
    """One argument's part of the signature (tensors by metadata, Python values by value)."""
    if isinstance(a, Tensor):
        return ("tensor", a.shape, a.dtype, a.device, a.requires_grad)
    try:
        hash(a)
    except TypeError:
        raise TraceError(
            f"compiled functions take tensors and hashable Python values; got {type(a).__name__}"
        ) from None
    return ("py", a)


def _describe(sig: tuple[Any, ...]) -> list[str]:
    """The positional arguments of a signature, one readable line each."""
    out = []
    for i, part in enumerate(sig[0]):
        if part[0] == "tensor":
            out.append(f"argument {i}: shape {part[1]}, dtype {np.dtype(part[2]).name}, "
                       f"device {part[3]}, requires_grad={part[4]}")
        else:
            out.append(f"argument {i}: {part[1]!r}")
    return out


def _describe_change(what: str, a: Any, b: Any) -> str:
    """How one argument's signature part changed, in words."""
    if a[0] == b[0] == "tensor":
        names = ("kind", "shape", "dtype", "device", "requires_grad")
        show = [str, str, lambda d: np.dtype(d).name, str, str]
        diffs = [f"{names[k]} {show[k](a[k])} -> {show[k](b[k])}"
                 for k in range(1, 5) if a[k] != b[k]]
        return f"{what}: " + ", ".join(diffs)
    return f"{what}: {a[1]!r} -> {b[1]!r}"


def _reason(old: tuple[Any, ...] | None, new: tuple[Any, ...], grads: list[Tensor]) -> str:
    """Why a call traced: the first part of the signature that differs from the last one."""
    if old is None:
        return "first call"
    if len(old[0]) != len(new[0]):
        return f"number of arguments {len(old[0])} -> {len(new[0])}"
    for i, (a, b) in enumerate(zip(old[0], new[0], strict=True)):
        if a != b:
            return _describe_change(f"argument {i}", a, b)
    if old[1] != new[1]:
        before, after = dict(old[1]), dict(new[1])
        for key in sorted(set(before) | set(after)):
            if key not in before or key not in after:
                return f"keyword arguments {sorted(before)} -> {sorted(after)}"
            if before[key] != after[key]:
                return _describe_change(f"keyword argument {key}", before[key], after[key])
    if old[2] != new[2]:
        return f"grad mode {old[2]} -> {new[2]}"
    if old[3] != new[3]:
        return "train/eval mode of a module changed"
    return GradTracker.describe_change(grads, old[4], new[4])


class CompiledFunction:
    """The callable returned by dlrun.compile."""

    def __init__(self, fn: Callable[..., Any], *, passes_enabled: bool | tuple[str, ...] = True,
                 max_traces: int = 8, fallback: str = "error", cuda_graphs: bool = False) -> None:
        if fallback not in ("error", "eager"):
            raise ValueError("fallback must be 'error' or 'eager'")
        self.fn = fn
        self.passes_enabled = passes_enabled
        self.max_traces = max_traces
        self.fallback = fallback
        self.cuda_graphs = cuda_graphs  # replay each plan as a CUDA graph where it can be
        self.traces: list[TraceRecord] = []
        self.fallbacks = 0
        self._cache: dict[tuple[Any, ...], _Entry] = {}
        self._modules: list[Any] = []
        self._grad_guards: list[Tensor] = []  # gradients some trace read before setting them
        self._last_sig: tuple[Any, ...] | None = None
        functools.update_wrapper(self, fn)

    @property
    def trace_count(self) -> int:
        """How many times fn was traced (one per signature seen)."""
        return len(self.traces)

    @property
    def last(self) -> _Entry | None:
        """The most recently used cache entry (graph, plan, trace result)."""
        return self._cache.get(self._last_sig) if self._last_sig else None

    def _signature(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """The cache key of a call: everything a trace of fn may depend on."""
        return (
            tuple([_arg_sig(a) for a in args]),
            tuple(sorted((k, _arg_sig(v)) for k, v in kwargs.items())) if kwargs else (),
            autograd.GRAD.enabled,
            tuple([m.training for m in self._modules]) if self._modules else (),
            GradTracker.key(self._grad_guards) if self._grad_guards else (),
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the plan cached for this signature, tracing fn first on a miss."""
        if mode.current().tracing:
            return self.fn(*args, **kwargs)  # called while tracing another function: inline
        sig = self._signature(args, kwargs)
        entry = self._cache.get(sig)
        if entry is None:
            if self.trace_count >= self.max_traces:
                reason = _reason(self._last_sig, sig, self._grad_guards)
                if self.fallback == "eager":
                    self.fallbacks += 1
                    log.warning("dlrun.compile(%s): trace cap %d reached (%s); running eagerly",
                                self.__name__, self.max_traces, reason)
                    return self.fn(*args, **kwargs)
                raise TraceError(
                    f"dlrun.compile({self.__name__}) traced {self.trace_count} times, the cap "
                    f"(max_traces={self.max_traces}); the last retrace was caused by: {reason}. "
                    "Keep input shapes fixed (e.g. drop_last=True), raise max_traces, or pass "
                    "fallback='eager'"
                )
            entry, sig = self._trace(args, kwargs, sig)
        self._last_sig = sig
        return self._run(entry, args, kwargs)

    def _trace(self, args: tuple[Any, ...], kwargs: dict[str, Any],
               sig: tuple[Any, ...]) -> tuple[_Entry, tuple[Any, ...]]:
        """Trace fn, run the passes, lower, cache; the entry and its (maybe grown) signature."""
        start = time.perf_counter()
        kernels_before = cpu_kernels.STATS.as_dict()
        ref = _first_tensor((*args, *kwargs.values()), [])
        device = ref.device if ref is not None else "cpu"
        xp = get_xp(device)
        result = trace(self.fn, args, kwargs, device, xp)
        for m in result.modules:
            if all(m is not k for k in self._modules):
                self._modules.append(m)
        for t in result.grads.guarded:
            if all(t is not k for k in self._grad_guards):
                self._grad_guards.append(t)
        sig = self._signature(args, kwargs)  # the modules and grads guarded may have grown
        kernels_on = xp is np and cpu_kernels.available()
        graph, report = passes.run(result.graph, self.passes_enabled, kernels_on)
        memory = _plan_memory(graph, report, self.passes_enabled)
        plan = lower(graph, memory, xp)
        out_ref = ref if ref is not None else _first_tensor((), result.state)
        out_device, out_xp = (out_ref.device, out_ref._xp) if out_ref is not None else ("cpu", np)
        entry = self._cache[sig] = _Entry(result, plan, graph, memory, out_device, out_xp)
        reason = _reason(self._last_sig, sig, self._grad_guards)
        kernels = cpu_kernels.STATS.since(kernels_before) if xp is np else {}
        record = TraceRecord(sig, reason, time.perf_counter() - start, report, kernels)
        self.traces.append(record)
        if self.traces[:-1]:
            log.info("dlrun.compile(%s): retrace #%d: %s", self.__name__, len(self.traces),
                     reason)
        return entry, sig

    def _run(self, entry: _Entry, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run a cached plan and apply its writes to the captured tensors and their grads."""
        inputs = [a._value for a in args if isinstance(a, Tensor)]
        if kwargs:
            inputs += [v._value for _, v in sorted(kwargs.items()) if isinstance(v, Tensor)]
        state = entry.result.state
        grad_state = entry.result.grads
        if entry.cuda_graph is not None:  # its bindings hold the state arrays (no _writable)
            outs, writes, grads = entry.cuda_graph.run(inputs, state)
        else:
            for t in entry.inplace:
                _writable(t)
            outs, writes, grads = entry.plan.run(inputs, [t._value for t in state],
                                                 grad_state.inputs())
            if self.cuda_graphs and entry.graph_blocker is None:
                _capture(entry, inputs)
        device, xp = entry.device, entry.xp
        nd, wrap = xp.ndarray, Tensor._wrap
        for k, t in entry.fresh_writes:  # (in-place writes already landed in the state arrays)
            value = writes[k]
            t._value = value if type(value) is nd else xp.asarray(value)
        grad_state.store(grads, device, xp)
        if entry.single:
            o = outs[0]
            return wrap(o if type(o) is nd else xp.asarray(o), device, xp, False)
        wrapped = [wrap(o if type(o) is nd else xp.asarray(o), device, xp, False) for o in outs]
        return unflatten(entry.result.out_tree, wrapped)


def _capture(entry: _Entry, inputs: list[Any]) -> None:
    """After a plain run (the warm-up), capture the plan as a CUDA graph, or record why not."""
    from dlrun.engine.static import cuda_graph

    grads = entry.result.grads.inputs()
    entry.graph_blocker = cuda_graph.blocker(entry.graph, entry.plan, entry.device, len(grads))
    if entry.graph_blocker is not None:
        log.info("no CUDA graph: %s", entry.graph_blocker)
        return
    state = [t._value for t in entry.result.state]
    step = cuda_graph.CudaGraphStep(entry.plan, cuda_graph.Bindings(entry.xp, inputs, state,
                                                                    entry.plan))
    try:
        step.capture()
    except Exception as e:  # an op that syncs with the host cannot be captured
        entry.graph_blocker = f"capture failed: {type(e).__name__}: {e}"
        log.warning("no CUDA graph: %s", entry.graph_blocker)
        return
    entry.cuda_graph = step


def _writable(t: Tensor) -> None:
    """The plan writes this state's array in place: make sure it may. The array must be
    writeable, C-ordered, own its memory and be referenced by this tensor alone (refcount: the
    tensor, `arr`, getrefcount's argument), so no other tensor or view sees the update;
    otherwise the tensor gets a private copy first (once: the copy is private)."""
    arr = t._value
    if sys.getrefcount(arr) <= 3 and arr.base is None:
        flags = arr.flags
        if flags.writeable and flags.c_contiguous:
            return
    t._value = t._xp.array(arr, copy=True)


def _first_tensor(args: tuple[Any, ...], state: list[Tensor]) -> Tensor | None:
    """The tensor that decides the device: the first tensor argument, else the first state."""
    for a in args:
        if isinstance(a, Tensor):
            return a
    return state[0] if state else None


def _plan_memory(graph: Graph, report: passes.PassReport,
                 which: bool | tuple[str, ...]) -> MemoryPlan | None:
    """The optimized graph's memory plan, when enabled ("memory" among the passes named), its
    figures added to the report as the step after the passes."""
    if not passes.enabled("memory", which):
        return None
    counts = graph.counts()
    start = time.perf_counter()
    memory = plan_memory(graph)
    report.stats.append(passes.PassStat("memory", counts["nodes"], counts["nodes"],
                                        counts["compute"], counts["compute"],
                                        time.perf_counter() - start, dict(memory.stats)))
    report.memory = dict(memory.stats)
    return memory


def compile(fn: Callable[..., Any] | None = None, *, passes: bool | tuple[str, ...] = True,  # noqa: A001
            max_traces: int = 8, fallback: str = "error", cuda_graphs: bool = False) -> Any:
    """Compile fn into a static graph: traced once per input signature, optimized, replayed.

    `passes`: True (all), False (none) or a tuple of pass names. `max_traces`: how many
    signatures may be traced before a retrace is an error (or, with fallback='eager', runs fn
    eagerly and is counted in `.fallbacks`). `cuda_graphs`: on CUDA, capture each plan once and
    replay it as a CUDA graph (see static/cuda_graph.py). Usable as a decorator, with or without
    arguments.
    """
    if fn is None:
        return lambda f: CompiledFunction(f, passes_enabled=passes, max_traces=max_traces,
                                          fallback=fallback, cuda_graphs=cuda_graphs)
    return CompiledFunction(fn, passes_enabled=passes, max_traces=max_traces, fallback=fallback,
                            cuda_graphs=cuda_graphs)
