"""Flat optimizer state: the parameters of a group that share a dtype and a device form a bucket,
whose optimizer state is one flat tensor per kind (exp_avg, momentum_buffer, ...) over all of
them, plus one per-parameter vector per count (step). An update is then a handful of
elementwise ops over one long vector (PyTorch's foreach/fused optimizers) instead of ~10 ops per
parameter; `opt.state[p]` and state_dict() show each parameter's slices, in PyTorch's format.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dlrun import functional as F
from dlrun.engine.autograd import no_grad
from dlrun.engine.creation import zeros
from dlrun.engine.tensor import Tensor


@dataclass(eq=False)
class Bucket:
    """Parameters of one group with one dtype and device, and their state as flat tensors.

    `buffers[name]` has one element per parameter element (parameter i owns
    `offsets[i]:offsets[i + 1]`); `counts[name]` has one element per parameter. `lockstep`
    says every count holds the same value (every step so far updated every parameter), so an
    update may read one 0-d count instead of spreading the counts over the elements.
    """

    params: list[Tensor]
    offsets: list[int]
    buffers: dict[str, Tensor] = field(default_factory=dict)
    counts: dict[str, Tensor] = field(default_factory=dict)
    names: tuple[str, ...] = ()  # the state's names in PyTorch's order
    lockstep: bool = True

    @classmethod
    def make(cls, params: list[Tensor], names: Sequence[str], count_names: frozenset[str]
             ) -> Bucket:
        """Zero state for params (one dtype and device)."""
        offsets = [0]
        for p in params:
            offsets.append(offsets[-1] + p.numel())
        first = params[0]
        b = cls(params, offsets, names=tuple(names))
        for name in names:
            n = len(params) if name in count_names else offsets[-1]
            store = b.counts if name in count_names else b.buffers
            store[name] = zeros(n, dtype=first.dtype, device=first.device)
        return b

    def tensors(self) -> list[Tensor]:
        """Every state tensor of the bucket (what a step writes besides the parameters)."""
        return [*self.buffers.values(), *self.counts.values()]

    def part(self, name: str, i: int) -> Tensor:
        """Parameter i's state `name`: a slice of the flat tensor (a 0-d one for a count)."""
        if name in self.counts:
            return self.counts[name][i]
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return self.buffers[name][lo:hi].reshape(self.params[i].shape)

    def gather(self, t: Tensor, active: list[int], counts: bool = False) -> Tensor:
        """The parts of flat tensor t that belong to the parameters `active`, concatenated."""
        if len(active) == len(self.params):
            return t
        bounds = [(i, i + 1) if counts else (self.offsets[i], self.offsets[i + 1])
                  for i in active]
        return F.cat([t[lo:hi] for lo, hi in bounds])

    def scatter(self, t: Tensor, new: Tensor, active: list[int], counts: bool = False) -> Tensor:
        """Flat tensor t with the parts of `active` replaced by `new` (gather's inverse)."""
        if len(active) == len(self.params):
            return new
        pieces, at, pos = [], {i: k for k, i in enumerate(active)}, 0
        for i in range(len(self.params)):
            lo, hi = (i, i + 1) if counts else (self.offsets[i], self.offsets[i + 1])
            if i in at:
                pieces.append(new[pos:pos + hi - lo])
                pos += hi - lo
            else:
                pieces.append(t[lo:hi])
        return F.cat(pieces)

    def spread(self, counts: Tensor, active: list[int]) -> Tensor:
        """Per-parameter values (one per active parameter) repeated over their elements."""
        return F.cat([counts[k:k + 1].expand(self.offsets[i + 1] - self.offsets[i])
                      for k, i in enumerate(active)])

    def load(self, values: list[dict[str, np.ndarray]]) -> None:
        """Set the state from per-parameter arrays (state_dict's format, checked already)."""
        with no_grad():
            for name, flat in self.buffers.items():
                arr = np.array(flat.numpy(), copy=True)
                for i, v in enumerate(values):
                    arr[self.offsets[i]:self.offsets[i + 1]] = np.asarray(v[name]).reshape(-1)
                flat.copy_(arr)
            for name, c in self.counts.items():
                c.copy_(np.array([np.asarray(v[name]).reshape(()) for v in values],
                                 dtype=c.dtype))
        self.lockstep = all(np.all(c.numpy() == c.numpy()[0]) for c in self.counts.values())


class ParamState(Mapping[str, Tensor]):
    """One parameter's state, read live from its bucket: `state["exp_avg"]` is the current
    slice of the flat tensor (a read-only view: write state with load_state_dict)."""

    def __init__(self, bucket: Bucket, index: int) -> None:
        self._bucket, self._index = bucket, index

    def __getitem__(self, name: str) -> Tensor:
        if name not in self._bucket.names:
            raise KeyError(name)
        with no_grad():
            return self._bucket.part(name, self._index)

    def __iter__(self) -> Iterator[str]:
        return iter(self._bucket.names)

    def __len__(self) -> int:
        return len(self._bucket.names)


class StateView(Mapping[Tensor, ParamState]):
    """`optimizer.state`: parameter -> its ParamState, in the optimizer's parameter order."""

    def __init__(self) -> None:
        self._where: dict[int, tuple[Tensor, Bucket, int]] = {}

    def add(self, bucket: Bucket) -> None:
        for i, p in enumerate(bucket.params):
            self._where[id(p)] = (p, bucket, i)

    def __getitem__(self, p: Tensor) -> ParamState:
        if id(p) not in self._where:
            raise KeyError(p)
        _, bucket, i = self._where[id(p)]
        return ParamState(bucket, i)

    def __contains__(self, p: object) -> bool:
        return id(p) in self._where

    def __iter__(self) -> Iterator[Tensor]:
        return (p for p, _, _ in self._where.values())

    def __len__(self) -> int:
        return len(self._where)
