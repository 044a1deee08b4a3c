"""Gradchecks for layers: run a module with its parameters replaced by the checker's inputs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dlrun
from dlrun import nn
from tests.engine.opcheck import OpSpec


def _owner(module: nn.Module, name: str) -> tuple[nn.Module, str]:
    *path, attr = name.split(".")
    for part in path:
        module = getattr(module, part)
    return module, attr


@contextmanager
def swapped(module: nn.Module, names: Sequence[str], tensors: Sequence[dlrun.Tensor]
            ) -> Iterator[None]:
    """Temporarily put `tensors` where the named parameters are, so gradients reach them."""
    saved = []
    for name, t in zip(names, tensors, strict=True):
        owner, attr = _owner(module, name)
        saved.append((owner, attr, owner._parameters[attr]))
        owner._parameters[attr] = t
    try:
        yield
    finally:
        for owner, attr, p in saved:
            owner._parameters[attr] = p


def module_spec(name: str, module: nn.Module, inputs: list[Any],
                out: Callable[[Any], dlrun.Tensor] = lambda y: y,
                params: Sequence[str] | None = None, **kw: Any) -> OpSpec:
    """An OpSpec whose arguments are the module's inputs followed by its parameters (float64)."""
    module.double()
    names = list(params) if params is not None else [n for n, _ in module.named_parameters()]
    shapes = [_owner(module, n)[0]._parameters[_owner(module, n)[1]].shape for n in names]
    n_in = len(inputs)

    def fn(*args: dlrun.Tensor) -> dlrun.Tensor:
        with swapped(module, names, args[n_in:]):
            return out(module(*args[:n_in]))

    spec = OpSpec(name, fn, list(inputs) + shapes, **kw)
    spec.module = module  # type: ignore[attr-defined]
    return spec
