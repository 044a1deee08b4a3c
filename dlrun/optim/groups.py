"""Parameter groups for weight decay: decay matrices, not biases and norm scales (nanoGPT's
configure_optimizers)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dlrun.engine.tensor import Tensor


def decay_groups(params: Iterable[Tensor], weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: parameters with at least 2 dimensions (weight matrices, embeddings, conv
    kernels) decay by `weight_decay`; the others (biases, LayerNorm / BatchNorm scales) do not.

    A parameter given twice (tied weights) appears once, in first-seen order; a group with
    no parameters is left out.

    >>> from dlrun import nn, optim
    >>> model = nn.Linear(3, 2)
    >>> opt = optim.AdamW(optim.decay_groups(model.parameters(), 0.1), lr=1e-3)
    >>> [(len(g["params"]), g["weight_decay"]) for g in opt.param_groups]
    [(1, 0.1), (1, 0.0)]
    """
    seen: set[int] = set()
    decay: list[Tensor] = []
    no_decay: list[Tensor] = []
    for p in params:
        if id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": float(weight_decay)},
              {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]
