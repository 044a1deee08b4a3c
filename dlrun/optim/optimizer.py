"""Optimizer base: parameter groups, flat state and a pickle-free state_dict.

Rules that keep `step()` compilable into a static graph (dlrun.compile):

- all state tensors (moments, step counts) are created eagerly in `__init__` as real tensors, so a
  traced step reads and writes them as graph state instead of baking in constants;
- updates go through `Tensor.copy_` under `no_grad`, which the tracer records as state writes;
- the learning rate of each group is a 0-d tensor `group['lr_t']` that `step()` reads; setting
  `group['lr'] = x` (what schedulers do) copies x into it, so a new learning rate never retraces;
- `step()` never reads tensor values in Python (no `.item()`), it only branches on `grad is None`,
  shapes and Python hyper-parameters.

The update is flat (see flat.py): per bucket (the parameters of a group with one dtype and
device) the gradients are concatenated into one vector, unscaled, clipped by the global norm and
checked for inf/nan there, the optimizer's formula runs once over the whole vector and its
state, and each parameter takes back its slice. Eager and static mode run this same code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import numpy as np

from dlrun import functional as F
from dlrun.engine.autograd import enable_grad, no_grad
from dlrun.engine.creation import full, zeros_like
from dlrun.engine.prims.reduce import sum_squares
from dlrun.engine.tensor import Tensor
from dlrun.errors import CheckpointError
from dlrun.optim import hyperparameters
from dlrun.optim.flat import Bucket, StateView


class ParamGroup(dict):
    """A parameter group; assigning 'lr' also updates the 0-d tensor 'lr_t' that step() reads."""

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        if key == "lr" and "lr_t" in self:
            with no_grad():
                self["lr_t"].copy_(float(value))

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for k, v in dict(*args, **kwargs).items():
            self[k] = v


def _jsonable(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _as(t: Tensor, like: Tensor) -> Tensor:
    """0-d tensor t in like's dtype."""
    return t if t.dtype == like.dtype else t.to_dtype(like.dtype)


class GradStats(NamedTuple):
    """What a step saw of the gradients: the global norm (when clipping) and the inf/nan flag
    (when asked to skip non-finite steps), as 0-d tensors (no host synchronisation)."""

    norm: Tensor | None
    found_inf: Tensor | None


# From this many parameters (of one group, dtype and device) on, one flat bucket pays: below
# it the concatenations cost more than the per-parameter calls they save (the numbers are the
# same either way: the update is elementwise and the global norm does not depend on the split).
FLAT_MIN_PARAMS = 5


class Optimizer:
    """Base class: holds `param_groups` (list of ParamGroup) and `state` (param -> its state).

    A subclass names its state (`_state_names`; names in `_count_names` are per-parameter
    counts, the others have the parameter's shape) and writes its formula once, over flat
    vectors (`_flat_update`).
    """

    _count_names: frozenset[str] = frozenset({"step"})

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.state = StateView()
        self.param_groups: list[ParamGroup] = []
        self._buckets: list[list[Bucket]] = []  # per group, in order
        groups = list(params) if not isinstance(params, Tensor) else [params]
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    # ----- groups and state ------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (its own hyper-parameters override the defaults); creates its state now."""
        params = param_group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
            if id(p) in seen:
                raise ValueError("some parameters appear in more than one parameter group")
            seen.add(id(p))
        if not params:
            raise ValueError("optimizer got a parameter group with no parameters")
        group = ParamGroup({k: v for k, v in param_group.items() if k != "params"})
        dict.__setitem__(group, "params", params)
        for k, v in self.defaults.items():
            if k not in group:
                dict.__setitem__(group, k, v)
        self._validate(group)
        first = params[0]
        dict.__setitem__(group, "lr_t", full((), float(group["lr"]), dtype=first.dtype,
                                             device=first.device))
        self.param_groups.append(group)
        alike: dict[tuple[Any, str], list[Tensor]] = {}
        for p in params:
            alike.setdefault((p.dtype, p.device), []).append(p)
        names = self._state_names(group)
        buckets = [Bucket.make(part, names, self._count_names) for ps in alike.values()
                   for part in ([ps] if len(ps) >= FLAT_MIN_PARAMS else [[q] for q in ps])]
        self._buckets.append(buckets)
        for b in buckets:
            self.state.add(b)

    def _validate(self, group: dict[str, Any]) -> None:
        """Check a group's hyper-parameters against the bounds in the class's signature."""
        lr = group.get("lr")
        if not isinstance(lr, int | float) or isinstance(lr, bool) or lr < 0.0:
            raise ValueError(f"invalid learning rate: {lr!r}")
        hyperparameters.check(type(self), group)

    def _state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The names of a parameter's state in PyTorch's order (override)."""
        return ()

    def state_tensors(self) -> list[Tensor]:
        """Every tensor a step writes: the parameters and the flat state."""
        out = [p for g in self.param_groups for p in g["params"]]
        return out + [t for bs in self._buckets for b in bs for t in b.tensors()]

    @staticmethod
    def _lr(group: dict[str, Any], p: Tensor) -> Tensor:
        """The group's learning-rate tensor in p's dtype."""
        lr = group["lr_t"]
        return lr if lr.dtype == p.dtype else lr.to_dtype(p.dtype)

    # ----- the update ----------------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None, *,
             grad_scale: Tensor | float | None = None, max_norm: float | None = None,
             skip_nonfinite: bool = False) -> Any:
        """Update every parameter that has a gradient; returns closure() if given.

        The keywords act on the flat gradients, in this order: multiply by `grad_scale` (the
        inverse loss scale of fp16 training), clip by global norm to `max_norm` (as
        clip_grad_norm_), and with `skip_nonfinite` leave parameters and state unchanged when
        some gradient is inf or nan (see `apply_gradients` for the norm and the flag).
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        self.apply_gradients(grad_scale=grad_scale, max_norm=max_norm,
                             skip_nonfinite=skip_nonfinite)
        return loss

    def apply_gradients(self, *, grad_scale: Tensor | float | None = None,
                        max_norm: float | None = None, skip_nonfinite: bool = False
                        ) -> GradStats:
        """step() without the closure; returns the global norm and the inf/nan flag."""
        with no_grad():
            work = []
            for group, buckets in zip(self.param_groups, self._buckets, strict=True):
                for b in buckets:
                    active = [i for i, p in enumerate(b.params) if p.grad is not None]
                    if active:
                        work.append((group, b, active, self._flat_grad(b, active, grad_scale)))
            if not work:
                return GradStats(None, None)
            norm = bad = None
            if max_norm is not None:
                norm = F.sqrt(sum_squares(*(g for *_, g in work)))
                coef = F.minimum(float(max_norm) / (norm + 1e-6), 1.0)
                work = [(*w[:3], w[3] * _as(coef, w[3])) for w in work]
            if skip_nonfinite:
                probes = [F.sum(g * 0.0).to_dtype(np.float32) for *_, g in work]
                total = probes[0] if len(probes) == 1 else F.stack(probes).sum()
                bad = total != total  # a sum of g * 0 is nan when some g is inf or nan
            for group, b, active, g in work:
                self._update_bucket(group, b, active, g, bad)
        return GradStats(norm, bad)

    @staticmethod
    def _flat_grad(b: Bucket, active: list[int], grad_scale: Tensor | float | None) -> Tensor:
        parts = []
        for i in active:
            p = b.params[i]
            g = p.grad if p.grad.dtype == p.dtype else p.grad.to_dtype(p.dtype)
            parts.append(g.reshape(-1))
        g = parts[0] if len(parts) == 1 else F.cat(parts)
        if grad_scale is not None:
            g = g * (_as(grad_scale, g) if isinstance(grad_scale, Tensor) else grad_scale)
        return g

    def _update_bucket(self, group: dict[str, Any], b: Bucket, active: list[int], g: Tensor,
                       bad: Tensor | None) -> None:
        """One flat update of the active parameters of bucket b (gradient g, flat)."""
        ps = [b.params[i] for i in active]
        p = ps[0].reshape(-1) if len(ps) == 1 else F.cat([q.reshape(-1) for q in ps])
        if group.get("maximize"):
            g = -g
        old = {k: b.gather(t, active) for k, t in b.buffers.items()}
        old_counts = {k: b.gather(t, active, counts=True) for k, t in b.counts.items()}
        counts = {k: c + 1.0 for k, c in old_counts.items()}
        everyone = len(active) == len(b.params)
        step = None
        if "step" in counts:
            step = counts["step"][0] if b.lockstep and everyone else b.spread(counts["step"],
                                                                               active)
        new_p, new = self._flat_update(p, g, group, old, step)
        if bad is not None:  # a skipped step keeps every old value (no host decision)
            new_p = F.where(bad, p, new_p)
            new = {k: F.where(bad, old[k], v) for k, v in new.items()}
            counts = {k: F.where(bad, old_counts[k], v) for k, v in counts.items()}
        for k, v in new.items():
            b.buffers[k].copy_(b.scatter(b.buffers[k], v, active))
        for k, v in counts.items():
            b.counts[k].copy_(b.scatter(b.counts[k], v, active, counts=True))
        at = 0
        for q in ps:
            q.copy_(new_p[at:at + q.numel()].reshape(q.shape))
            at += q.numel()
        if not everyone:
            b.lockstep = False

    def _flat_update(self, p: Tensor, g: Tensor, group: dict[str, Any],
                     state: dict[str, Tensor], step: Tensor | None
                     ) -> tuple[Tensor, dict[str, Tensor]]:
        """The formula over flat vectors: parameters p, gradient g, the state buffers and the
        new step count (0-d, or one per element); returns p's new values and the buffers'."""
        raise NotImplementedError

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of every parameter (None by default, as PyTorch)."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad = zeros_like(p.grad)

    # ----- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """{'state': {index: {name: np.ndarray}}, 'param_groups': [JSON-able dicts]}.

        Parameters are numbered across groups in order (PyTorch's layout); arrays are copies.
        """
        index = 0
        groups, state = [], {}
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                st = self.state.get(p, {})
                if st:
                    state[index] = {k: np.array(v.numpy(), copy=True) for k, v in st.items()}
                ids.append(index)
                index += 1
            packed = {k: _jsonable(v) for k, v in group.items() if k not in ("params", "lr_t")}
            packed["params"] = ids
            groups.append(packed)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyper-parameters and state from `state_dict()` output, copying in place.

        Everything is checked first; a mismatch raises CheckpointError and changes nothing.
        """
        groups = state_dict.get("param_groups")
        saved_state = state_dict.get("state", {})
        if not isinstance(groups, list) or len(groups) != len(self.param_groups):
            n = len(groups) if isinstance(groups, list) else "no"
            raise CheckpointError(
                f"optimizer state_dict has {n} parameter groups, the optimizer has "
                f"{len(self.param_groups)}"
            )
        saved_state = {int(k): v for k, v in saved_state.items()}
        found: dict[int, dict[str, Any]] = {}  # id(parameter) -> its saved state
        index = 0
        for gi, (group, saved) in enumerate(zip(self.param_groups, groups, strict=True)):
            if len(saved["params"]) != len(group["params"]):
                raise CheckpointError(
                    f"optimizer state_dict group {gi} has {len(saved['params'])} parameters, the "
                    f"optimizer has {len(group['params'])}"
                )
            for saved_id, p in zip(saved["params"], group["params"], strict=True):
                own = self.state.get(p, {})
                st = saved_state.get(int(saved_id), {})
                for name, target in own.items():
                    if name not in st:
                        raise CheckpointError(
                            f"optimizer state_dict: parameter {index} has no state {name!r}"
                        )
                    shape = tuple(np.shape(st[name]))
                    if shape != target.shape:
                        raise CheckpointError(
                            f"optimizer state_dict: state {name!r} of parameter {index} has "
                            f"shape {shape}, the optimizer has {target.shape}"
                        )
                found[id(p)] = {k: v.numpy() if isinstance(v, Tensor) else v
                                for k, v in st.items()}
                index += 1
        for b in (b for bs in self._buckets for b in bs):
            if b.names:
                b.load([found[id(p)] for p in b.params])
        for group, saved in zip(self.param_groups, groups, strict=True):
            for k, v in saved.items():
                if k in ("params", "lr_t"):
                    continue
                if isinstance(group.get(k), tuple) and isinstance(v, list):
                    v = tuple(v)
                group[k] = v

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(group):
                if k not in ("params", "lr_t"):
                    lines.append(f"    {k}: {group[k]}")
        lines.append(")")
        return "\n".join(lines)
