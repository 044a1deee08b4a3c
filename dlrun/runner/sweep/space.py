"""A sweep's search space against the rest of the config: checks before any trial runs, the
values a trial suggests, the config a trial trains, and the fingerprint that finds a sweep again.

The `sweep:` section's own keys and ranges are checked by `dlrun.config` (SweepConfig). Here:
every parameter is a real config key (did-you-mean), its bounds and categories make a valid config,
and the sweep's metric is one the task logs. Categories that are not scalars (`[128, 64]`) travel
through Optuna as their JSON text, since Optuna's categorical choices must be scalars.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from dlrun.config import (
    ExperimentConfig,
    SweepConfig,
    SweepParameter,
    config_to_dict,
    did_you_mean,
    validate_config,
)
from dlrun.errors import ConfigError

_SCALARS = (type(None), bool, int, float, str)
_FREE_FORM = ("model", "data.options")  # keys depend on model.type / data.name: probed values


def base_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The resolved config without its `sweep` section: what every trial starts from."""
    data = config_to_dict(cfg)
    data.pop("sweep", None)
    return data


def check_space(cfg: ExperimentConfig, source: str) -> dict[str, Any]:
    """Check the parameters and the metric (ConfigError naming `source` and the key); returns
    the dataset's meta (its task) so the caller need not load it again."""
    sweep = _sweep_of(cfg, source)
    problems = [p for name in sweep.parameters if (p := _key_problem(name))]
    if problems:
        raise ConfigError("\n".join(f"{source}: sweep.parameters.{p}" for p in problems))
    from dlrun.runner.experiment.data import load_data

    bundle = load_data(cfg)
    base = base_config(cfg)
    for name, param in sweep.parameters.items():
        for value in _probe_values(param):
            _probe(base, name, value, bundle.meta, source)
    _check_metric(sweep.metric, bundle, source)
    return dict(bundle.meta)


def _sweep_of(cfg: ExperimentConfig, source: str) -> SweepConfig:
    if cfg.sweep is None:
        raise ConfigError(f"{source}: no sweep section; add `sweep:` with the metric and the "
                          "parameters to search (see configs/sweep_mnist_mlp.yaml)")
    return cfg.sweep


def _key_problem(name: str) -> str | None:
    """Why a dotted name is not a config key (did-you-mean), or None."""
    model: Any = ExperimentConfig
    parts = name.split(".")
    for depth, part in enumerate(parts):
        where = ".".join(parts[: depth + 1])
        if where in _FREE_FORM:
            return None
        if model is None:
            return f"{name}: {'.'.join(parts[:depth])} has no keys to search inside"
        fields = model.model_fields
        if part not in fields:
            prefix = "".join(f"{p}." for p in parts[:depth])
            return f"{name}: not a config key{did_you_mean(part, fields, prefix)}"
        if where == "sweep":
            return f"{name}: the sweep section itself cannot be searched"
        model = _section_model(fields[part].annotation)
    return None


def _section_model(annotation: Any) -> type[BaseModel] | None:
    import types
    import typing

    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
    for tp in (annotation, *args):
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return tp
    return None


def _probe_values(param: SweepParameter) -> list[Any]:
    """Values that must each make a valid config: the bounds, every category, every value."""
    if param.values is not None:
        return list(param.values)
    if param.space == "choice":
        return list(param.categories or [])
    lo, hi = param.lower, param.upper
    return [int(lo), int(hi)] if param.space == "int" else [lo, hi]


def _probe(base: dict[str, Any], name: str, value: Any, meta: Mapping[str, Any],
           source: str) -> None:
    where = f"{source}: sweep.parameters.{name}"
    try:
        cfg = validate_config(set_key(base, name, value), source="@")
        if name.startswith("model."):
            from dlrun.models import build_model

            build_model(cfg.model, meta)
    except ConfigError as e:
        lines = [line.removeprefix("@: ") for line in str(e).splitlines()]
        raise ConfigError(f"{where}: {json.dumps(value)} does not make a valid config: "
                          f"{'; '.join(lines)}") from None


def _check_metric(metric: str, bundle: Any, source: str) -> None:
    from dlrun.runner.evaluation import metric_names

    task = bundle.meta.get("task", "classification")
    logged = (metric_names(task, "val") if bundle.val is not None else []) + ["train_loss"]
    if metric not in logged:
        hint = did_you_mean(metric, logged)
        why = "" if bundle.val is not None else " (data.val_fraction is 0: no validation split)"
        raise ConfigError(f"{source}: sweep.metric: {metric!r} is never logged by this "
                          f"{task} run{why}{hint}; logged: {', '.join(logged)}")


def set_key(data: Mapping[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A deep copy of `data` with the dotted key set (missing sections are created)."""
    out = copy.deepcopy(dict(data))
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {} if child is None else {"name": child}
        node = child
    node[parts[-1]] = copy.deepcopy(value)
    return out


# --------------------------------------------------------------------------- trial values


def _encoded(options: list[Any]) -> tuple[list[Any], bool]:
    """Optuna-safe choices: all as JSON text when any is not a scalar (a list, a mapping)."""
    if all(isinstance(o, _SCALARS) for o in options):
        return list(options), False
    return [json.dumps(o) for o in options], True


def param_choices(param: SweepParameter) -> list[Any] | None:
    """The Optuna choices of a `values`/`choice` parameter (encoded), None for a range."""
    options = param.values if param.values is not None else (
        param.categories if param.space == "choice" else None)
    return None if options is None else _encoded(list(options))[0]


def decode(param: SweepParameter, value: Any) -> Any:
    """A value as Optuna stores it -> the config value (JSON text back to a list)."""
    options = param.values if param.values is not None else param.categories
    if options is not None and _encoded(list(options))[1] and isinstance(value, str):
        return json.loads(value)
    return value


def suggest(trial: Any, sweep: SweepConfig) -> dict[str, Any]:
    """Ask an Optuna trial for every parameter; returns config values by dotted key."""
    out: dict[str, Any] = {}
    for name, p in sweep.parameters.items():
        choices = param_choices(p)
        if choices is not None:
            value = trial.suggest_categorical(name, choices)
        elif p.space == "int":
            value = trial.suggest_int(name, int(p.lower), int(p.upper),
                                      step=int(p.step or 1), log=p.log)
        else:
            value = trial.suggest_float(name, p.lower, p.upper, step=p.step,
                                        log=p.log or p.space == "loguniform")
        out[name] = decode(p, value)
    return out


def decoded_params(sweep: SweepConfig, params: Mapping[str, Any]) -> dict[str, Any]:
    """A stored trial's params as config values."""
    return {k: decode(sweep.parameters[k], v) if k in sweep.parameters else v
            for k, v in params.items()}


def grid_space(sweep: SweepConfig) -> dict[str, list[Any]]:
    """Optuna GridSampler's search space (encoded choices)."""
    return {name: param_choices(p) or [] for name, p in sweep.parameters.items()}


def trial_config(base: Mapping[str, Any], params: Mapping[str, Any],
                 source: str) -> ExperimentConfig:
    """The config a trial trains: the base with each parameter set (ConfigError if invalid)."""
    data: dict[str, Any] = dict(base)
    for name, value in params.items():
        data = set_key(data, name, value)
    return validate_config(data, source=source)


def fingerprint(cfg: ExperimentConfig) -> str:
    """SHA-256 of the search space and the config it searches (not the trial count, logging):
    a sweep with the same fingerprint can be continued."""
    assert cfg.sweep is not None
    space = cfg.sweep.model_dump(mode="json", exclude={"trials"})
    base = base_config(cfg)
    base.pop("logging", None)
    text = json.dumps({"space": space, "config": base}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
