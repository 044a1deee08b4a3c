"""The experiment schema, YAML loading, dotted `--set` overrides and readable validation errors.

`load_config("exp.yaml", ["optimizer.lr=0.1"])` reads the file, applies the overrides and validates
the result into a frozen `ExperimentConfig`. Every problem is reported at once, one line each, in
a single ConfigError:

    exp.yaml: optimizer.lr: expected a number > 0, got -1
    exp.yaml: train.batchsize: unknown key; did you mean 'batch_size'?
    --set model.hiden=[64]: model.hiden: ...

Sections given as `null` (an empty `train:` in YAML) take their defaults; `loss: mse` is short for
`loss: {name: mse}`; `train.early_stopping: true` enables it with defaults, `null`/`false` disables.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dlrun.config.load import (
        apply_overrides,
        config_hash,
        config_to_dict,
        dump_config,
        load_config,
        parse_override,
        read_yaml,
        validate_config,
        with_overrides,
    )
    from dlrun.config.messages import did_you_mean
    from dlrun.config.schema import (
        SECTIONS,
        DataConfig,
        DistributedConfig,
        EarlyStopping,
        ExperimentConfig,
        LoggingConfig,
        LossConfig,
        ModelConfig,
        OptimizerConfig,
        ScheduleConfig,
        SweepConfig,
        SweepParameter,
        SweepPruner,
        TrainConfig,
    )

# Each public name and the module that defines it: imported on first use, so that
# `dlrun.config.messages` (imported by the registries that the schema reads) does not
# pull in the schema.
_WHERE = {
    "apply_overrides": "load",
    "config_hash": "load",
    "config_to_dict": "load",
    "dump_config": "load",
    "load_config": "load",
    "parse_override": "load",
    "read_yaml": "load",
    "validate_config": "load",
    "with_overrides": "load",
    "did_you_mean": "messages",
    "SECTIONS": "schema",
    "DataConfig": "schema",
    "DistributedConfig": "schema",
    "EarlyStopping": "schema",
    "ExperimentConfig": "schema",
    "LoggingConfig": "schema",
    "LossConfig": "schema",
    "ModelConfig": "schema",
    "OptimizerConfig": "schema",
    "ScheduleConfig": "schema",
    "SweepConfig": "schema",
    "SweepParameter": "schema",
    "SweepPruner": "schema",
    "TrainConfig": "schema",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'dlrun.config' has no attribute {name!r}")
    value = getattr(import_module(f"dlrun.config.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "apply_overrides",
    "config_hash",
    "config_to_dict",
    "dump_config",
    "load_config",
    "parse_override",
    "read_yaml",
    "validate_config",
    "with_overrides",
    "did_you_mean",
    "SECTIONS",
    "DataConfig",
    "DistributedConfig",
    "EarlyStopping",
    "ExperimentConfig",
    "LoggingConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "SweepConfig",
    "SweepParameter",
    "SweepPruner",
    "TrainConfig",
]
