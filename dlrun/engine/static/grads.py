"""A trace's `.grad` bookkeeping: the gradients of captured tensors as traced state.

- A gradient the body reads before it sets it comes from the caller: a real one becomes a
  `state_grad` node, read live at every call, and whether it was None joins the compiled
  function's signature (the body may branch on it: `backward()` accumulates into a gradient or
  starts one, `step()` skips a parameter without one).
- A gradient the body sets becomes a `grad_write` sink (a symbolic value) or an effect each call
  repeats (None, or a real tensor captured from outside). A gradient set before any read is the
  body's own, so its value at call time is not guarded: `zero_grad()` before `backward()` traces
  once, whatever the gradients were.
- Every gradient the body set is put back after the trace; the plan applies the changes, on the
  first call too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dlrun.engine.tensor import Tensor

if TYPE_CHECKING:
    from dlrun.engine.static.trace import TraceMode


class GradTracker:
    """The `.grad` reads and writes of one trace, and what each call of its plan does about them."""

    def __init__(self, mode: TraceMode) -> None:
        self._mode: TraceMode | None = mode
        self._written: dict[int, tuple[Tensor, Tensor | None]] = {}  # id -> (t, .grad at start)
        self._reads: dict[int, Tensor | None] = {}  # id -> what its first read returned
        self._after: list[tuple[Tensor, Tensor | None]] = []
        self.guarded: list[Tensor] = []  # read before set: None-ness joins the signature
        self.read_slots: list[int] = []  # `state_grad` k reads state[read_slots[k]]'s .grad
        self.effects: list[tuple[int, Tensor | None]] = []  # (slot, value) set without a node
        self._read_from: list[Tensor] = []
        self._write_to: list[Tensor] = []
        self._effects: list[tuple[Tensor, Tensor | None]] = []

    # ----- while tracing (TraceMode.read_grad / note_grad) ------------------------------------
    def read(self, t: Tensor) -> Tensor | None:
        """`t.grad` inside the body, t concrete and its gradient None or concrete."""
        key = id(t)
        if key in self._written:
            return t._grad  # the body's own value
        if key in self._reads:
            return self._reads[key]
        self.guarded.append(t)
        g, sym = t._grad, None
        if g is not None:
            mode = self._mode
            self.read_slots.append(mode.slot(t))
            sym = mode.node("state_grad", (), {"index": len(self.read_slots) - 1}, g.shape,
                            g.dtype)
        self._reads[key] = sym
        return sym

    def write(self, t: Tensor) -> None:
        """The body is about to set `t.grad`: remember the value to put back."""
        self._written.setdefault(id(t), (t, t._grad))

    # ----- when the trace ends -----------------------------------------------------------------
    def restore(self) -> None:
        """Put back every gradient the body set, keeping what it set for `finish`."""
        self._after = [(t, t._grad) for t, _ in self._written.values()]
        for t, before in self._written.values():
            t._grad = before

    def finish(self) -> None:
        """Each gradient the body set: a `grad_write` sink if symbolic, else an effect."""
        mode = self._mode
        for t, after in self._after:
            slot = mode.slot(t)
            if after is not None and after._value is None:
                mode.sink("grad_write", mode.lift(after), "slot", slot)
            else:
                self.effects.append((slot, after))
        self._mode, self._reads, self._written, self._after = None, {}, {}, []

    # ----- at every call of the compiled function ------------------------------------------------
    def bind(self, state: list[Tensor], grad_write_slots: list[int]) -> None:
        """Resolve slots to the captured tensors once, for the plan that replays this trace."""
        self._read_from = [state[s] for s in self.read_slots]
        self._write_to = [state[s] for s in grad_write_slots]
        self._effects = [(state[s], value) for s, value in self.effects]

    def inputs(self) -> list[Any]:
        """The arrays the plan's `state_grad` nodes read (the signature guarantees they exist)."""
        return [t._grad._value for t in self._read_from]

    def store(self, values: list[Any], device: str, xp: Any) -> None:
        """Apply the body's gradient changes: the plan's grad writes, then the effects."""
        nd, wrap = xp.ndarray, Tensor._wrap
        for t, v in zip(self._write_to, values, strict=True):
            t._grad = wrap(v if type(v) is nd else xp.asarray(v), device, xp, False)
        for t, value in self._effects:
            t._grad = value

    # ----- the signature -------------------------------------------------------------------------
    @staticmethod
    def key(guarded: list[Tensor]) -> tuple[bool, ...]:
        """The signature part for gradients read before set: which of them are None."""
        return tuple([t._grad is None for t in guarded])

    @staticmethod
    def describe_change(guarded: list[Tensor], old: tuple[bool, ...],
                        new: tuple[bool, ...]) -> str:
        """Why two signatures' gradient parts differ, naming the first gradient that changed."""
        for t, a, b in zip(guarded, old, new, strict=False):
            if a != b:
                show = {True: "None", False: "a tensor"}
                return (f"the .grad of a captured tensor of shape {t.shape}, read by the traced "
                        f"function before it set it, changed: {show[a]} -> {show[b]}")
        return "a captured tensor's .grad changed between None and a tensor"
