"""The wording of config errors: pydantic's errors rewritten as `key.path: problem` lines that
say what was expected and what was given, and the one `did_you_mean` every "unknown name"
message uses."""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from annotated_types import Ge, GroupedMetadata, Gt, Le, Lt
from pydantic import AliasChoices, BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError


def fail(message: str, items: Sequence[tuple[str, str]] = ()) -> PydanticCustomError:
    """A validation error with a ready message; `items` are (sub-key, message) pairs instead."""
    return PydanticCustomError("dlrun", "{message}", {"message": message, "items": list(items)})


def explain(err: Mapping[str, Any], root: type[BaseModel], sections: Sequence[str]
            ) -> list[tuple[tuple[Any, ...], str]]:
    """Turn one pydantic error of a `root` model into `(loc, readable message)` pairs;
    `sections` are the root's keys whose keys an unknown top-level key may belong to.

    The tag pydantic puts into the location of an error inside a discriminated union
    (`model.mlp.hidden`) is left out: the user wrote `model.hidden`."""
    tags = _tag_positions(root, tuple(err["loc"]))
    return [(tuple(p for i, p in enumerate(loc) if i not in tags), message)
            for loc, message in _explain(err, root, sections)]


def _explain(err: Mapping[str, Any], root: type[BaseModel], sections: Sequence[str]
             ) -> list[tuple[tuple[Any, ...], str]]:
    kind, loc, ctx = err["type"], tuple(err["loc"]), err.get("ctx") or {}
    given = err.get("input")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return [_union_tag(kind, loc, ctx)]
    if kind == "dlrun":
        if ctx.get("items"):
            return [(loc + (key,), msg) for key, msg in ctx["items"]]
        return [(loc, ctx["message"])]
    if kind == "invalid_key" or (loc and loc[-1] == "[key]"):
        loc = loc[:-1] if loc and loc[-1] == "[key]" else loc
        return [(loc, f"keys must be strings, got {show(loc[-1] if loc else given)}")]
    info = _field_at(root, loc)
    if kind == "missing" and loc and isinstance(loc[-1], int):  # a tuple given too few items
        n, _ = _length_bounds(_field_at(root, loc[:-1]))
        return [(loc[:-1], f"expected a list of {n} items, got {show(given)}")]
    if kind == "missing":
        return [(loc, "missing (required)")]
    if kind == "extra_forbidden":
        return [(loc, _unknown_key(root, sections, loc))]
    if kind == "literal_error":
        choices = _literal_choices(info)
        listed = ", ".join(repr(c) for c in choices) if choices else ctx.get("expected", "")
        hint = did_you_mean(given, choices) if isinstance(given, str) else ""
        return [(loc, f"expected one of {listed}, got {show(given)}{hint}")]
    if kind in _BOUNDS:
        return [(loc, f"expected {_bounded(info, given)}, got {show(given)}")]
    if kind in ("too_short", "too_long"):
        lo, hi = _length_bounds(info)
        want = f"{lo}" if lo == hi else f"{lo} to {hi}"
        return [(loc, f"expected a list of {want} items, got {show(given)}")]
    phrase = _PHRASES.get(kind)
    if phrase is None:
        if kind in ("value_error", "assertion_error") and "error" in ctx:
            phrase = str(ctx["error"])
        else:
            msg = str(err.get("msg", kind))
            phrase = msg[:1].lower() + msg[1:]
    if kind in ("model_type", "dict_type", "model_attributes_type") and len(loc) <= 1:
        phrase = "expected a section (a mapping of keys)"
    return [(loc, f"{phrase}, got {show(given)}")]


_PHRASES = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "finite_number": "expected a finite number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
}
_BOUNDS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _union_tag(kind: str, loc: tuple[Any, ...], ctx: Mapping[str, Any]
               ) -> tuple[tuple[Any, ...], str]:
    """The error of a discriminated union's tag (`model.type`): missing, or not a choice."""
    key = str(ctx.get("discriminator", "type")).strip("'")
    if kind == "union_tag_not_found":
        return loc + (key,), "missing (required)"
    choices = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
    tag = ctx.get("tag")
    listed = ", ".join(repr(c) for c in choices)
    return loc + (key,), f"expected one of {listed}, got {show(tag)}{did_you_mean(tag, choices)}"


def _members(info: FieldInfo | None) -> dict[str, Any]:
    """A discriminated union field's members by tag ({} for any other field)."""
    if info is None or not isinstance(info.discriminator, str):
        return {}
    out = {}
    for member in typing.get_args(_unwrap(info.annotation)):
        tag = member.model_fields.get(info.discriminator)
        for value in typing.get_args(tag.annotation) if tag is not None else ():
            out[value] = member
    return out


def _tag_positions(root: type[BaseModel], loc: tuple[Any, ...]) -> set[int]:
    """Which parts of an error location are the tags of discriminated unions."""
    return {i for i in range(1, len(loc)) if loc[i] in _members(_field_at(root, loc[:i]))}


def _field_at(root: type[BaseModel], loc: tuple[Any, ...]) -> FieldInfo | None:
    """The FieldInfo (or element annotation, wrapped) that a pydantic error location points at."""
    current: Any = root
    info: FieldInfo | None = None
    for part in loc:
        member = _members(info).get(part) if isinstance(part, str) else None
        if member is not None:  # a discriminated union's tag: step into that member
            current, info = member, FieldInfo.from_annotation(member)
            continue
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part)) or _field_by_alias(current, str(part))
            if info is None:
                return None
            current = info.annotation
        elif isinstance(part, int) and typing.get_origin(current) in (list, tuple):
            args = typing.get_args(current)
            if not args:
                return None
            current = args[min(part, len(args) - 1)]
            info = FieldInfo.from_annotation(current)
        elif typing.get_origin(current) is dict and len(typing.get_args(current)) == 2:
            current = typing.get_args(current)[1]  # a mapping's value (sweep.parameters.X)
            info = FieldInfo.from_annotation(current)
        else:
            return None
    return info


def _field_by_alias(model: type[BaseModel], name: str) -> FieldInfo | None:
    """The field that accepts `name` as an alias (schedule.eta_min -> min_lr)."""
    for info in model.model_fields.values():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices) and name in alias.choices:
            return info
    return None


def _unwrap(tp: Any) -> Any:
    """Strip `X | None` and Annotated wrappers from a type."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _literal_choices(info: FieldInfo | None) -> list[str]:
    if info is None:
        return []
    tp = _unwrap(info.annotation)
    return list(typing.get_args(tp)) if typing.get_origin(tp) is Literal else []


def _bounded(info: FieldInfo | None, given: Any) -> str:
    """`an integer >= 1`, `a number > 0`, `a number in [0, 1)` from a field's constraints."""
    base = _unwrap(info.annotation) if info is not None else None
    noun = "an integer" if base is int or (base is None and isinstance(given, int)) else "a number"
    lo = hi = None
    metadata = [*info.metadata, *_annotated(info.annotation)] if info is not None else []
    for m in (b for g in metadata for b in (g if isinstance(g, GroupedMetadata) else [g])):
        if isinstance(m, Gt):
            lo = ("(", m.gt)
        elif isinstance(m, Ge):
            lo = ("[", m.ge)
        elif isinstance(m, Lt):
            hi = (")", m.lt)
        elif isinstance(m, Le):
            hi = ("]", m.le)
    if lo and hi:
        return f"{noun} in {lo[0]}{num(lo[1])}, {num(hi[1])}{hi[0]}"
    if lo:
        return f"{noun} {'>' if lo[0] == '(' else '>='} {num(lo[1])}"
    if hi:
        return f"{noun} {'<' if hi[0] == ')' else '<='} {num(hi[1])}"
    return noun


def _annotated(tp: Any) -> list[Any]:
    """The Annotated metadata inside a type (through `X | None`)."""
    out: list[Any] = []
    while True:
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is typing.Annotated:
            out += args[1:]
            tp = args[0]
        elif origin in (typing.Union, types.UnionType):
            rest = [a for a in args if a is not type(None)]
            if len(rest) != 1:
                return out
            tp = rest[0]
        else:
            return out


def _length_bounds(info: FieldInfo | None) -> tuple[int | str, int | str]:
    tp = _unwrap(info.annotation) if info is not None else None
    if typing.get_origin(tp) is tuple and Ellipsis not in typing.get_args(tp):
        n = len(typing.get_args(tp))
        return n, n
    return "?", "?"


def _unknown_key(root: type[BaseModel], sections: Sequence[str], loc: tuple[Any, ...]) -> str:
    key = str(loc[-1])
    parent = _field_at(root, loc[:-1]) if loc[:-1] else None
    model = _unwrap(parent.annotation) if parent is not None else root
    allowed = list(model.model_fields) if isinstance(model, type) else []
    hint = did_you_mean(key, allowed)
    if not hint:
        # The key may belong to another section: `lr` at the top level -> optimizer.lr.
        elsewhere = [f"{s}.{key}" for s in sections
                     if key in _section_fields(root, s) and (len(loc) == 1 or s != loc[0])]
        if len(loc) == 1 and key in root.model_fields:
            elsewhere = []
        if elsewhere:
            hint = f"; did you mean {' or '.join(repr(e) for e in elsewhere)}?"
        elif allowed:
            hint = f"; expected one of: {', '.join(allowed)}"
    return f"unknown key{hint}"


def _section_fields(root: type[BaseModel], section: str) -> list[str]:
    info = root.model_fields[section]
    members = list(_members(info).values()) or [_unwrap(info.annotation)]
    return list(dict.fromkeys(key for m in members for key in m.model_fields))


def did_you_mean(word: str, choices: Iterable[Any], prefix: str = "") -> str:
    """`; did you mean 'x'?` for the choice closest to `word` (shown after `prefix`), or ''.

    Every "unknown name" message of dlrun says it this way: config keys and values, model
    sections, registries, sweep parameters and metrics.
    """
    names = [str(c) for c in choices]
    match = difflib.get_close_matches(str(word), names, n=1, cutoff=0.6)
    return f"; did you mean {prefix + match[0]!r}?" if match else ""


def dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) and out else (f".{part}" if out else str(part))
    return out


def num(v: Any) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def show(v: Any) -> str:
    """A config value the way a user wrote it in YAML (short)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return num(v) if isinstance(v, float) else str(v)
    text = repr(v) if isinstance(v, str) else json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def kind_of(v: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(v), type(v).__name__
    )


