"""The optimizers a config names, and the hyper-parameters each takes, read from its constructor.

An optimizer declares its hyper-parameters once, in its `__init__` signature: names, defaults
and bounds (`Annotated[float, Ge(0)]`, annotated_types metadata that pydantic reads too). The
config schema builds its `optimizer` section from the signatures of `OPTIMIZERS` and
`Optimizer.__init__` checks the same bounds, so a new optimizer is one decorated class, as
LightningCLI reads a class's signature into its config.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from annotated_types import Ge, GroupedMetadata, Gt, Interval, Le, Lt

from dlrun.registry import Registry

NonNegative = Annotated[float, Ge(0)]
Fraction = Annotated[float, Interval(ge=0, lt=1)]  # in [0, 1)
Betas = tuple[Fraction, Fraction]

# The optimizer classes a config's `optimizer.name` names: (params, **hyper-parameters).
OPTIMIZERS: Registry[Any] = Registry("optimizer")

_BOUNDS = ((Ge, "ge", ">=", lambda v, b: v >= b), (Gt, "gt", ">", lambda v, b: v > b),
           (Le, "le", "<=", lambda v, b: v <= b), (Lt, "lt", "<", lambda v, b: v < b))


class HyperparameterError(ValueError):
    """A hyper-parameter out of its bounds; `key` names it, `problem` says what is wrong."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"invalid {key} value: {problem}")
        self.key, self.problem = key, problem


@dataclass(frozen=True)
class Hyperparameter:
    """One keyword of an optimizer's constructor: its annotation (bounds included), default."""

    name: str
    annotation: Any
    default: Any


def hyperparameters(cls: type) -> dict[str, Hyperparameter]:
    """The keyword hyper-parameters of an optimizer class, in signature order."""
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    return {name: Hyperparameter(name, hints.get(name, Any), p.default)
            for name, p in inspect.signature(cls.__init__).parameters.items()
            if name not in ("self", "params") and p.default is not inspect.Parameter.empty}


def check(cls: type, values: Mapping[str, Any]) -> None:
    """Raise HyperparameterError if a value is out of the bounds its annotation states, or
    breaks a rule of the class (its `_check_hyperparameters` hook)."""
    for name, h in hyperparameters(cls).items():
        if name in values:
            _check_bounds(name, h.annotation, values[name])
    hook = getattr(cls, "_check_hyperparameters", None)
    if hook is not None:
        hook(values)


def bounds(annotation: Any) -> list[Any]:
    """The annotated_types bounds (Ge, Gt, Le, Lt) an `Annotated[...]` carries."""
    if typing.get_origin(annotation) is not Annotated:
        return []
    out: list[Any] = []
    for meta in typing.get_args(annotation)[1:]:
        out.extend(meta if isinstance(meta, GroupedMetadata) else [meta])
    return [m for m in out if isinstance(m, Ge | Gt | Le | Lt)]


def _check_bounds(key: str, annotation: Any, value: Any) -> None:
    for bound in bounds(annotation):
        for kind, attr, sign, holds in _BOUNDS:
            if isinstance(bound, kind) and not holds(value, getattr(bound, attr)):
                raise HyperparameterError(key, f"{value!r} (expected {sign} "
                                               f"{getattr(bound, attr)})")
    annotated = typing.get_origin(annotation) is Annotated
    base = typing.get_args(annotation)[0] if annotated else annotation
    if typing.get_origin(base) is tuple and isinstance(value, tuple | list):
        for i, (item, v) in enumerate(zip(typing.get_args(base), value, strict=False)):
            _check_bounds(f"{key}[{i}]", item, v)
