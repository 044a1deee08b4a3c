"""The one entry for every op: `apply(prim, args, attrs)` routes to the current mode.

Eager mode runs the forward now and links the result to its inputs for autograd; the trace mode
(dlrun.engine.static.trace) appends a node to a graph instead. One contextvar holds the mode.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Protocol

from dlrun.engine.eager import EAGER
from dlrun.engine.prims.registry import Primitive
from dlrun.engine.tensor import Tensor


class Mode(Protocol):
    def apply(self, prim: Primitive, args: tuple[Tensor, ...], attrs: dict[str, Any]) -> Tensor: ...

    def constant(self, value: Any, device: str) -> Tensor: ...


MODE: ContextVar[Mode] = ContextVar("dlrun_mode", default=EAGER)


def apply(prim: Primitive, args: tuple[Tensor, ...], attrs: dict[str, Any]) -> Tensor:
    """Apply a primitive to tensors in the current mode."""
    return MODE.get().apply(prim, args, attrs)


def current_mode() -> Mode:
    return MODE.get()


def note_module(module: Any) -> None:
    """Modules call this from __call__: a trace records them, so their train/eval flags join the
    compiled function's signature."""
    mode = MODE.get()
    if mode is not EAGER:
        mode.note_module(module)
