"""Optimizer base: parameter groups, per-parameter state and a pickle-free state_dict.

Rules that keep `step()` compilable into a static graph (dlrun.compile):

- all state tensors (moments, step counts) are created eagerly in `__init__` as real tensors, so a
  traced step reads and writes them as graph state instead of baking in constants;
- updates go through `Tensor.copy_` under `no_grad`, which the tracer records as state writes;
- the learning rate of each group is a 0-d tensor `group['lr_t']` that `step()` reads; setting
  `group['lr'] = x` (what schedulers do) copies x into it, so a new learning rate never retraces;
- `step()` never reads tensor values in Python (no `.item()`), it only branches on `grad is None`,
  shapes and Python hyper-parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from dlrun.engine.autograd import enable_grad, no_grad
from dlrun.engine.creation import full, zeros_like
from dlrun.engine.tensor import Tensor
from dlrun.errors import CheckpointError


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


class Optimizer:
    """Base class: holds `param_groups` (list of ParamGroup) and `state` (param -> dict)."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.state: dict[Tensor, dict[str, Tensor]] = {}
        self.param_groups: list[ParamGroup] = []
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
        for p in params:
            self.state[p] = self._init_state(p, group)

    def _validate(self, group: dict[str, Any]) -> None:
        lr = group.get("lr")
        if not isinstance(lr, int | float) or isinstance(lr, bool) or lr < 0.0:
            raise ValueError(f"invalid learning rate: {lr!r}")

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        """The state tensors of one parameter (override; created eagerly, never in step)."""
        return {}

    @staticmethod
    def _zeros(p: Tensor) -> Tensor:
        return zeros_like(p)

    @staticmethod
    def _scalar(p: Tensor, value: float = 0.0) -> Tensor:
        return full((), value, dtype=p.dtype, device=p.device)

    @staticmethod
    def _lr(group: dict[str, Any], p: Tensor) -> Tensor:
        """The group's learning-rate tensor in p's dtype."""
        lr = group["lr_t"]
        return lr if lr.dtype == p.dtype else lr.to_dtype(p.dtype)

    @staticmethod
    def _grad(p: Tensor, maximize: bool = False) -> Tensor:
        g = p.grad
        if g.dtype != p.dtype:
            g = g.to_dtype(p.dtype)
        return -g if maximize else g

    # ----- the update ----------------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns closure() if given."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        self._update(p, group, self.state[p])
        return loss

    def _update(self, p: Tensor, group: dict[str, Any], state: dict[str, Tensor]) -> None:
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
        plan: list[tuple[Tensor, Any]] = []
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
                    plan.append((target, st[name]))
                index += 1
        with no_grad():
            for target, value in plan:
                if isinstance(value, Tensor):
                    value = value.numpy()
                target.copy_(np.asarray(value))
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
