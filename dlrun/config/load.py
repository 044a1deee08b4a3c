"""Reading a config: YAML (duplicate keys rejected, errors with line and column), dotted `--set`
overrides, validation into an ExperimentConfig with every problem reported at once; writing it
back (resolved, as YAML) and hashing it."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dlrun.atomic import atomic_write_text
from dlrun.config.messages import dotted, explain, kind_of, show
from dlrun.config.schema import SECTIONS, ExperimentConfig
from dlrun.errors import ConfigError

# --------------------------------------------------------------------------- loading


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read a YAML experiment, apply `a.b.c=value` overrides and validate (ConfigError if bad).

    Every bad override and every problem of the file are reported together, in one ConfigError.
    """
    source = str(path)
    data, problems = override(read_yaml(path), overrides)
    return validate_config(data, source=source, overrides=overrides, problems=problems)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file; syntax errors name the file, line and column."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        raise ConfigError(yaml_message(str(path), e)) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        raise ConfigError(f"{path}: empty config; expected keys such as name, data, model")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of keys (name, data, model, ...) at the top level, "
            f"got {kind_of(data)}"
        )
    return data


def parse_override(override: str) -> tuple[tuple[str, ...], Any]:
    """`"a.b.c=value"` -> `(("a", "b", "c"), yaml_value)`; ConfigError if malformed."""
    key, sep, raw = str(override).partition("=")
    key = key.strip()
    parts = tuple(key.split("."))
    if not sep or not key or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", p) for p in parts):
        raise ConfigError(
            f"--set {override}: expected KEY=VALUE with a dotted key, e.g. optimizer.lr=0.01"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"--set {override}: cannot parse the value {raw!r} ({problem})") from None
    return parts, value


def apply_overrides(data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A deep copy of `data` with each `a.b.c=value` override set (values parsed as YAML).

    Missing intermediate sections are created; `loss: mse` is widened to `{name: mse}` so
    `loss.label_smoothing=0.1` works. Unknown keys are left for validation to report; an
    override that cannot be applied raises ConfigError (all of them in one).
    """
    out, problems = override(data, overrides)
    if problems:
        raise ConfigError("\n".join(problems))
    return out


def override(data: Mapping[str, Any], overrides: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """`apply_overrides` that goes on past a bad override: the data with every good one set,
    and one message per override that could not be applied."""
    out = copy.deepcopy(dict(data))
    problems = []
    for item in overrides:
        try:
            _set(out, item)
        except ConfigError as e:
            problems.append(str(e))
    return out, problems


def _set(out: dict[str, Any], override: str) -> None:
    parts, value = parse_override(override)
    node: dict[str, Any] = out
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif isinstance(child, str) and depth == 0 and part == "loss":
            child = node[part] = {"name": child}
        elif not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(
                f"--set {override}: {where} is {show(child)}, not a section with keys"
            )
        node = child
    node[parts[-1]] = value


def validate_config(
    data: Mapping[str, Any], source: str = "config", overrides: Sequence[str] = (),
    problems: Sequence[str] = (),
) -> ExperimentConfig:
    """Validate a config mapping; ConfigError with one `source: key.path: problem` line each.

    Problems at keys set by one of `overrides` name that override instead of `source`;
    `problems` (overrides that could not be applied) come first in the same error.
    """
    try:
        cfg = ExperimentConfig.model_validate(dict(data))
    except ValidationError as e:
        set_paths = []
        for o in overrides:
            try:
                set_paths.append((parse_override(o)[0], o))
            except ConfigError:
                continue
        lines = []
        for err in e.errors():
            for loc, message in explain(err, ExperimentConfig, SECTIONS):
                origin = source
                for parts, o in set_paths:
                    if tuple(map(str, loc[: len(parts)])) == parts:
                        origin = f"--set {o}"
                lines.append(f"{origin}: {dotted(loc) or '(top level)'}: {message}")
        raise ConfigError("\n".join(dict.fromkeys([*problems, *lines]))) from None
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg


def with_overrides(cfg: ExperimentConfig, overrides: Sequence[str]) -> ExperimentConfig:
    """`cfg` with `a.b=value` overrides applied and validated again (e.g. `mode=eager`)."""
    data, problems = override(config_to_dict(cfg), overrides)
    return validate_config(data, source="config", overrides=overrides, problems=problems)


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """The fully resolved config (defaults included) as plain JSON/YAML data."""
    data = cfg.model_dump(mode="json")
    if data.get("sweep") is None:  # a config without a sweep reads (and hashes) as before
        data.pop("sweep", None)
    return data


def dump_config(cfg: ExperimentConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML (atomically); `load_config` reads it back equal."""
    text = yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False,
                     default_flow_style=False, allow_unicode=True)
    return atomic_write_text(path, "# resolved dlrun experiment config\n" + text)


def config_hash(cfg: ExperimentConfig, exclude: Iterable[str] = ()) -> str:
    """SHA-256 of the resolved config (top-level keys in `exclude` left out), for checkpoints."""
    data = config_to_dict(cfg)
    for key in exclude:
        data.pop(key, None)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --------------------------------------------------------------------------- YAML details


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (the second would silently win)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, typing.Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen[key] = True
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def yaml_message(source: str, e: yaml.MarkedYAMLError) -> str:
    mark = e.problem_mark or e.context_mark
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
    problem = e.problem or e.context or "syntax error"
    context = ""
    if e.context and e.problem:
        cm = e.context_mark
        at = f" started at line {cm.line + 1}" if cm and mark and cm.line != mark.line else ""
        context = f" ({e.context}{at})"
    return f"{where}: invalid YAML: {problem}{context}"


class _Dumper(yaml.SafeDumper):
    """Sections as blocks, lists inline (`hidden: [256, 128]`)."""


_Dumper.add_representer(
    list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)


