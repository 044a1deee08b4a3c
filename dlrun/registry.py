"""One registry per concept a config names (optimizers, schedules, losses, model families,
datasets): each name with what builds it and one line saying what it is.

The config's choices (`Literal[*REGISTRY.names()]`), its "did you mean" and the README's tables
(`markdown()`, checked by tests/test_readme.py) all come from the registry, so a new entry is
one `register` call.

>>> COLORS = Registry("color")
>>> @COLORS.register("red", doc="the colour of blood")
... def _red() -> str:
...     return "#f00"
>>> COLORS["red"](), COLORS.names()
('#f00', ('red',))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from dlrun.config.messages import did_you_mean
from dlrun.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    value: T
    doc: str


class Registry(Generic[T]):
    """Names of one concept, in the order they were registered."""

    def __init__(self, concept: str) -> None:
        self.concept = concept
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, value: T, doc: str) -> T:
        if name in self._entries:
            raise ValueError(f"{self.concept} {name!r} is registered twice")
        self._entries[name] = Entry(name, value, doc)
        return value

    def register(self, name: str, *, doc: str) -> Callable[[T], T]:
        """A decorator: `@OPTIMIZERS.register("sgd", doc=...)` over the builder."""
        return lambda value: self.add(name, value, doc)

    def copy(self) -> Registry[T]:
        """A registry with the same entries (a test adds to a copy)."""
        out: Registry[T] = Registry(self.concept)
        out._entries = dict(self._entries)
        return out

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def entry(self, name: str) -> Entry[T]:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.concept} {name!r}{did_you_mean(name, self._entries)}"
                              f"; expected one of {', '.join(self._entries)}")
        return self._entries[name]

    def __getitem__(self, name: str) -> T:
        return self.entry(name).value

    def __contains__(self, name: Any) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def markdown(self, heading: str | None = None) -> str:
        """The README's table of this concept: name and what it is."""
        rows = [f"| {heading or self.concept} | what it is |", "|---|---|"]
        rows += [f"| `{e.name}` | {e.doc} |" for e in self._entries.values()]
        return "\n".join(rows) + "\n"
