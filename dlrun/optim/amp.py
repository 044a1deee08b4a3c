"""Mixed precision: compute in float16 or bfloat16, keep float32 master weights and optimizer
state, and scale the fp16 loss dynamically (PyTorch's torch.amp autocast + GradScaler, in dlrun
ops so a compiled step traces all of it).

- The model's parameters stay float32 (the masters: what the optimizer updates and checkpoints
  save). `MixedPrecision.run(model, x)` casts each parameter to the compute dtype for the forward
  (a differentiable `cast`, so its gradient arrives in float32 on the master), casts float inputs
  the same way and returns float32 outputs, so losses are computed in float32 as autocast does.
- `GradScaler` (fp16 only: bf16 has float32's range) multiplies the loss by `scale` before
  backward; the optimizer's flat step divides the gradients by it and skips the update when a
  gradient is inf/nan: the parameters and optimizer state keep their values through `where`, not
  a Python `if`, so there is no host-device synchronisation and the step stays one static graph.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from dlrun import functional as F
from dlrun.engine.autograd import no_grad
from dlrun.engine.creation import full
from dlrun.engine.dtypes import is_floating
from dlrun.engine.tensor import Tensor

PRECISIONS = ("fp32", "fp16", "bf16")


def compute_dtype(precision: str) -> np.dtype:
    """The array dtype a precision computes in (bfloat16 comes from ml_dtypes, as in JAX)."""
    if precision == "fp32":
        return np.dtype(np.float32)
    if precision == "fp16":
        return np.dtype(np.float16)
    if precision == "bf16":
        import ml_dtypes  # a dependency of dlrun (and of onnx): NumPy's bfloat16

        return np.dtype(ml_dtypes.bfloat16)
    raise ValueError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")


class GradScaler:
    """Dynamic loss scaling as torch.amp.GradScaler: scale starts at `init_scale`, is multiplied
    by `growth_factor` after `growth_interval` finite steps in a row and by `backoff_factor` on a
    step with an inf/nan gradient (which is skipped). Its state is two float32 0-d tensors."""

    def __init__(self, device: str = "cpu", init_scale: float = 2.0**16,
                 growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000) -> None:
        self.growth_factor, self.backoff_factor = growth_factor, backoff_factor
        self.growth_interval = growth_interval
        self.scale = full((), init_scale, dtype=np.float32, device=device)
        self.growth_tracker = full((), 0.0, dtype=np.float32, device=device)

    def scale_loss(self, loss: Tensor) -> Tensor:
        """loss * scale (backward of it gives scaled gradients)."""
        return loss * self.scale.to_dtype(loss.dtype)

    def unscale_(self, params: list[Tensor]) -> None:
        """Divide every gradient by the scale (an inf/nan stays one)."""
        with no_grad():
            inv = 1.0 / self.scale
            for p in params:
                if p.grad is not None:
                    p.grad = p.grad * inv.to_dtype(p.grad.dtype)

    def step(self, optimizer: Any, *, scaled: bool = False,
             max_norm: float | None = None) -> Tensor:
        """optimizer.step(), left undone (parameters and optimizer state keep their values) when
        a gradient is not finite; then the scale is updated. Returns the found-inf flag.

        With `scaled`, the gradients still carry the loss scale (no unscale_ since backward):
        the optimizer divides them by it in its flat pass, before clipping to `max_norm`.
        """
        with no_grad():
            stats = optimizer.apply_gradients(grad_scale=1.0 / self.scale if scaled else None,
                                              max_norm=max_norm, skip_nonfinite=True)
            bad = stats.found_inf
            if bad is None:  # no gradient at all: nothing stepped, nothing went wrong
                bad = full((), False, dtype=np.bool_, device=self.scale.device)
            self.update(bad)
        return bad

    def update(self, bad: Tensor) -> None:
        """Back off on a bad step, grow after growth_interval good steps in a row."""
        with no_grad():
            tracker = F.where(bad, 0.0, self.growth_tracker + 1.0)
            grow = tracker >= float(self.growth_interval)
            scale = self.scale
            grown = F.where(grow, scale * self.growth_factor, scale)
            self.scale.copy_(F.where(bad, scale * self.backoff_factor, grown))
            self.growth_tracker.copy_(F.where(grow, 0.0, tracker))

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"scale": self.scale.numpy().copy(),
                "growth_tracker": self.growth_tracker.numpy().copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with no_grad():
            self.scale.copy_(float(np.asarray(state["scale"])))
            self.growth_tracker.copy_(float(np.asarray(state["growth_tracker"])))


class MixedPrecision:
    """One run's precision policy: `run` the model in the compute dtype, `backward` with loss
    scaling (fp16) and `step` the optimizer (skipping non-finite steps). With fp32 every method
    is the plain call it replaces."""

    def __init__(self, precision: str, model: Any, optimizer: Any, device: str = "cpu") -> None:
        self.precision = precision
        self.dtype = compute_dtype(precision)
        self.model, self.optimizer = model, optimizer
        self.params = list(model.parameters())
        self.scaler = GradScaler(device) if precision == "fp16" else None
        self.enabled = precision != "fp32"
        self._scaled = False  # the gradients still carry the loss scale

    def run(self, model: Any, x: Tensor) -> Any:
        """model(x) in the compute dtype; float outputs come back as float32."""
        if not self.enabled:
            return model(x)
        if is_floating(x.dtype):
            x = x.to_dtype(self.dtype)
        with cast_parameters(model, self.dtype):
            out = model(x)
        return _to_float32(out)

    def backward(self, loss: Tensor) -> None:
        """loss.backward(); with a scaler, of the scaled loss: the gradients keep the scale
        until `step` (or `unscale_`) divides it out."""
        if self.scaler is None:
            loss.backward()
            return
        self.scaler.scale_loss(loss).backward()
        self._scaled = True

    def mark_scaled(self) -> None:
        """The gradients about to be stepped carry the loss scale (fp16): they were summed
        over several `backward` calls before this step (gradient accumulation)."""
        self._scaled = self.scaler is not None

    def unscale_(self) -> list[Tensor]:
        """Divide the loss scale out of the gradients now, for code that reads them before
        `step` (clipping by value); returns the parameters."""
        if self._scaled:
            self.scaler.unscale_(self.params)
            self._scaled = False
        return self.params

    def state_dict(self) -> dict[str, float]:
        """The loss scaler's state for a checkpoint (empty without one)."""
        if self.scaler is None:
            return {}
        return {k: float(v) for k, v in self.scaler.state_dict().items()}

    def load_state_dict(self, state: dict[str, float]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)

    def step(self, max_norm: float | None = None) -> None:
        """optimizer.step(), clipping by global norm to `max_norm`; with a scaler, also the
        gradients unscaled and the step skipped (in-graph) on an inf/nan, all in one flat
        pass over the gradients."""
        if self.scaler is None:
            self.optimizer.step(max_norm=max_norm)
        else:
            self.scaler.step(self.optimizer, scaled=self._scaled, max_norm=max_norm)
            self._scaled = False


def _to_float32(out: Any) -> Any:
    if isinstance(out, Tensor):
        return out.to_dtype(np.float32) if is_floating(out.dtype) else out
    if isinstance(out, tuple | list):
        return type(out)(_to_float32(o) for o in out)
    return out


@contextmanager
def cast_parameters(model: Any, dtype: np.dtype) -> Iterator[None]:
    """Inside the block, every float parameter of model reads as its cast to dtype (one cast per
    parameter object, so tied weights stay tied); the float32 parameters are put back after."""
    casts: dict[int, Tensor] = {}
    saved: list[tuple[dict[str, Any], str, Any]] = []
    try:
        for m in model.modules():
            store = m._parameters
            for name, p in list(store.items()):
                if p is None or not is_floating(p.dtype) or p.dtype == dtype:
                    continue
                if id(p) not in casts:
                    casts[id(p)] = p.to_dtype(dtype)
                saved.append((store, name, p))
                store[name] = casts[id(p)]
        yield
    finally:
        for store, name, p in reversed(saved):
            store[name] = p
