"""The eager executor: define-by-run. Each primitive runs now on backend arrays, and results that
need gradients link to their inputs (`_ctx`) for `autograd.backward`.

EagerMode implements every hook of `mode.Mode`; those with nothing to record are no-ops.
"""

from __future__ import annotations

from typing import Any

from dlrun.backend import get_xp
from dlrun.engine import autograd, mode
from dlrun.engine.prims.registry import Primitive
from dlrun.engine.tensor import Tensor


class EagerMode:
    """Define-by-run: compute now, record `_ctx` links when gradients are wanted."""

    name = "eager"
    tracing = False
    ops = 0  # primitives applied so far (dlrun compare reports ops per step)

    def apply(self, prim: Primitive, args: tuple[Tensor, ...], attrs: dict[str, Any]) -> Tensor:
        self.ops += 1
        if args:
            first = args[0]
            xp, device = first._xp, first.device
            for a in args:
                if a._value is None:
                    raise _symbolic_in_eager(prim, a)
                if a.device != device:
                    raise RuntimeError(
                        f"{prim.name}: expected all tensors on one device, got {device} and "
                        f"{a.device}"
                    )
        else:
            device = attrs["device"]
            xp = get_xp(device)
        try:
            out = prim.forward(xp, *[a._value for a in args], **attrs)
        except Exception as e:
            e.add_note(f"in dlrun primitive {prim.name!r}")
            raise
        if type(out) is not xp.ndarray:
            out = xp.asarray(out)
        requires_grad = (
            autograd.GRAD.enabled and prim.differentiable and any(a.requires_grad for a in args)
        )
        t = Tensor._wrap(out, device, xp, requires_grad)
        if requires_grad:
            t._ctx = (next(autograd.SEQ), prim, args, attrs)
        return t

    def constant(self, value: Any, device: str) -> Tensor:
        """The array itself, wrapped."""
        return Tensor._wrap(value, device, get_xp(device), False)

    def assign(self, target: Tensor, src: Tensor) -> None:
        """copy_: the target now holds src's array (arrays are never written in place here)."""
        if src._value is None:
            raise RuntimeError("copy_: cannot store a symbolic tensor into a concrete one")
        target._value = src._value

    def read_grad(self, t: Tensor) -> Tensor | None:
        """The stored gradient."""
        return t._grad

    def note_grad(self, t: Tensor) -> None:
        """Nothing to record: the setter stores the new gradient."""

    def note_module(self, module: Any) -> None:
        """Nothing to record: train/eval flags matter to compiled functions only."""

    def value_of(self, t: Tensor) -> Tensor:
        """A concrete tensor is its own current value."""
        return t


def _symbolic_in_eager(prim: Primitive, t: Tensor) -> RuntimeError:
    return RuntimeError(
        f"{prim.name}: a symbolic tensor from a traced function escaped into eager code; "
        "return it from the compiled function instead of keeping a reference"
    )


EAGER = EagerMode()
mode.install_eager(EAGER)
