"""The static executor: trace a function into a Graph, run the passes, lower it to a plan, replay.

trace.py (symbolic execution into a Graph), grads.py (a trace's `.grad` bookkeeping),
lower.py (Graph -> Plan, generated straight-line code), fused.py (fused elementwise chains, NumPy
and CUDA), compile.py (`dlrun.compile`: signature -> cached plan).
"""

from dlrun.engine.static.compile import CompiledFunction, compile  # noqa: A004

__all__ = ["CompiledFunction", "compile"]
