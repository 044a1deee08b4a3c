"""The one entry for every op: `apply(prim, args, attrs)` routes to the current mode.

Eager mode (eager.py) runs the forward now and links the result to its inputs for autograd; the
trace mode (static/trace.py) appends a node to a graph instead. One contextvar holds the mode, and
`Mode` lists every hook the engine calls on it: callers call the hook, they never ask which mode
is current (eager's hooks that have nothing to record are no-ops).

A leaf: it imports nothing of dlrun, so any module may import it at module level. The contextvar
has no default; `EAGER`, the mode used when none is set, is installed by eager.py when it is
imported (`import dlrun.engine` imports it).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from dlrun.engine.prims.registry import Primitive
    from dlrun.engine.tensor import Tensor


class Mode(Protocol):
    """What the engine asks of a mode; EagerMode and TraceMode implement every hook."""

    name: str
    tracing: bool  # True while recording a graph (a compiled function called then is inlined)

    def apply(self, prim: Primitive, args: tuple[Tensor, ...], attrs: dict[str, Any]) -> Tensor:
        """Apply a primitive: run it now (eager) or record it as a graph node (trace)."""
        ...

    def constant(self, value: Any, device: str) -> Tensor:
        """A tensor holding an array made by the engine (a `const` node while tracing)."""
        ...

    def assign(self, target: Tensor, src: Tensor) -> None:
        """`target.copy_(src)` once src is cast and broadcast: rebind (eager) or a state write."""
        ...

    def read_grad(self, t: Tensor) -> Tensor | None:
        """`.grad` of a concrete tensor; a trace records the read (it may guard the signature)."""
        ...

    def value_of(self, t: Tensor) -> Tensor:
        """The value of a concrete tensor at this point: itself (eager), its current symbolic
        value in a trace (a state read, or what the trace last assigned to it)."""
        ...

    def note_grad(self, t: Tensor) -> None:
        """Called before `.grad` of a concrete tensor changes; a trace replays the change."""
        ...

    def note_module(self, module: Any) -> None:
        """A module is being called; a trace adds its train/eval flag to the signature."""
        ...


MODE: ContextVar[Mode] = ContextVar("dlrun_mode")  # set while tracing; unset: EAGER
EAGER: Mode = None  # type: ignore[assignment]  # the eager mode; eager.py installs it


def install_eager(mode: Mode) -> None:
    """Make `mode` the one used where no other is set (eager.py calls this once)."""
    global EAGER
    EAGER = mode


def apply(prim: Primitive, args: tuple[Tensor, ...], attrs: dict[str, Any]) -> Tensor:
    """Apply a primitive to tensors in the current mode."""
    return MODE.get(EAGER).apply(prim, args, attrs)


def current() -> Mode:
    """The mode in effect: the one set on MODE, else EAGER."""
    return MODE.get(EAGER)


def note_module(module: Any) -> None:
    """Modules call this from __call__: a trace records them, so their train/eval flags join the
    compiled function's signature."""
    MODE.get(EAGER).note_module(module)
