"""The field types and the base class every config section is written with, here at the bottom
layer so that the parts a config names (model families, optimizers) declare their own sections
with the same wording and checks as dlrun/config/schema.py."""

from __future__ import annotations

import typing
from typing import Any

from annotated_types import Ge, Interval
from pydantic import BaseModel, BeforeValidator, ConfigDict, Strict

from dlrun.config.messages import fail, show


def _no_bool(expected: str) -> Any:
    def check(v: Any) -> Any:
        # pydantic's lax mode reads true/false as 1/0; in a config that is always a mistake.
        if isinstance(v, bool):
            raise fail(f"expected {expected}, got {show(v)}")
        return v

    return BeforeValidator(check)


Int = typing.Annotated[int, _no_bool("an integer")]
Float = typing.Annotated[float, _no_bool("a number")]
Bool = typing.Annotated[bool, Strict()]  # true or false, not 1 or "yes"
PositiveInt = typing.Annotated[Int, Ge(1)]
Probability = typing.Annotated[Float, Interval(ge=0, lt=1)]  # a dropout rate: [0, 1)


class Section(BaseModel):
    """A config section: frozen, unknown keys rejected, no inf or nan."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
