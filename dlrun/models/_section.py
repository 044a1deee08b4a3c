"""Typed access to one config section; every error names the key path (e.g. `model.hidden`)."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from dlrun.config.messages import did_you_mean
from dlrun.errors import ConfigError

_MISSING = object()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


class Section:
    """A config mapping at `path`; unknown keys are rejected up front."""

    def __init__(self, cfg: Mapping[str, Any], path: str, allowed: Collection[str]) -> None:
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {type(cfg).__name__}")
        self.cfg, self.path = cfg, path
        unknown = [k for k in cfg if k not in allowed]
        if unknown:
            hint = did_you_mean(str(unknown[0]), sorted(allowed))
            raise ConfigError(f"{self.key(unknown[0])}: unknown key{hint}; expected one of "
                              + ", ".join(sorted(allowed)))

    def key(self, name: str) -> str:
        return f"{self.path}.{name}"

    def has(self, name: str) -> bool:
        return name in self.cfg

    def _get(self, name: str, default: Any) -> Any:
        v = self.cfg.get(name, default)
        if v is _MISSING:
            raise ConfigError(f"{self.key(name)}: missing (required)")
        return v

    def int(self, name: str, default: Any = _MISSING, minimum: int = 1) -> int:
        v = self._get(name, default)
        if not _is_int(v) or v < minimum:
            what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
            raise ConfigError(f"{self.key(name)}: expected {what}, got {v!r}")
        return int(v)

    def float(self, name: str, default: Any = _MISSING, low: float = -math.inf,
              high: float = math.inf, high_open: bool = False) -> float:
        v = self._get(name, default)
        ok = _is_number(v) and low <= v and (v < high if high_open else v <= high)
        if not ok:
            hi = ")" if high_open else "]"
            raise ConfigError(f"{self.key(name)}: expected a number in [{low}, {high}{hi}, "
                              f"got {v!r}")
        return float(v)

    def bool(self, name: str, default: Any = _MISSING) -> bool:
        v = self._get(name, default)
        if not isinstance(v, bool):
            raise ConfigError(f"{self.key(name)}: expected true or false, got {v!r}")
        return v

    def choice(self, name: str, choices: Sequence[str], default: Any = _MISSING) -> str:
        v = self._get(name, default)
        if v not in choices:
            raise ConfigError(
                f"{self.key(name)}: expected one of {', '.join(choices)}, got {v!r}"
            )
        return str(v)

    def int_list(self, name: str, default: Any = _MISSING, allow_empty: bool = True,
                 minimum: int = 1) -> list[int]:
        v = self._get(name, default)
        what = "a list of positive ints" if minimum == 1 else f"a list of ints >= {minimum}"
        if not isinstance(v, list | tuple):
            raise ConfigError(f"{self.key(name)}: expected {what}, got {v!r}")
        for x in v:
            if not _is_int(x) or x < minimum:
                raise ConfigError(f"{self.key(name)}: expected {what}, got {x!r}")
        if not v and not allow_empty:
            raise ConfigError(f"{self.key(name)}: expected a non-empty list, got []")
        return [int(x) for x in v]
