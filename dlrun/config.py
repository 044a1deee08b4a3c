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

import copy
import difflib
import hashlib
import json
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from annotated_types import Ge, Gt, Le, Lt
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from dlrun.atomic import atomic_write_text
from dlrun.errors import ConfigError

# --------------------------------------------------------------------------- field types


def _fail(message: str, items: Sequence[tuple[str, str]] = ()) -> PydanticCustomError:
    """A validation error with a ready message; `items` are (sub-key, message) pairs instead."""
    return PydanticCustomError("dlrun", "{message}", {"message": message, "items": list(items)})


def _no_bool(expected: str) -> Any:
    def check(v: Any) -> Any:
        # pydantic's lax mode reads true/false as 1/0; in a config that is always a mistake.
        if isinstance(v, bool):
            raise _fail(f"expected {expected}, got {_show(v)}")
        return v

    return BeforeValidator(check)


Int = typing.Annotated[int, _no_bool("an integer")]
Float = typing.Annotated[float, _no_bool("a number")]
_SECTION = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
_DEVICE = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


class _Section(BaseModel):
    model_config = _SECTION


# --------------------------------------------------------------------------- the schema


class DataConfig(_Section):
    """`data`: which dataset, where its files are, the validation split and builder options."""

    name: str
    root: str | None = None
    val_fraction: Float = Field(0.1, ge=0, lt=1)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        from dlrun.data.datasets import available_datasets

        names = available_datasets()
        key = v.strip().lower().replace("-", "_")
        if key not in names:
            raise _fail(f"unknown dataset {v!r}{_did_you_mean(key, names)} "
                        f"(available: {', '.join(names)})")
        return key

    @field_validator("root")
    @classmethod
    def _root_used(cls, v: str | None, info: ValidationInfo) -> str | None:
        name = info.data.get("name")
        if v is not None and name is not None and "root" not in _options_of(name):
            hint = "; give its file as data.options.path" if "path" in _options_of(name) else ""
            raise _fail(f"dataset {name!r} reads no files from a root folder{hint}")
        return v

    @field_validator("options")
    @classmethod
    def _known_options(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        if name is None:  # the name itself is wrong; that error is reported already
            return v
        allowed = _options_of(name)
        if _takes_any_option(name):
            allowed = [*allowed, *v]
        problems = []
        for key in v:
            if key in ("root", "val_fraction"):
                problems.append((key, f"set it as data.{key}, not as an option"))
            elif key not in allowed:
                listed = ", ".join(a for a in allowed if a not in ("root", "val_fraction"))
                problems.append((key, f"dataset {name!r} has no option {key!r}"
                                      f"{_did_you_mean(key, allowed)} (options: {listed})"))
        if problems:
            raise _fail("unknown options", problems)
        return v


class ModelConfig(BaseModel):
    """`model`: the family in `type`; family-specific keys are checked by the model builders."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: Literal["linear", "mlp", "cnn", "rnn", "lstm", "gru", "gpt"]

    def options(self) -> dict[str, Any]:
        """The family-specific keys (everything but `type`) as a plain dict (a deep copy)."""
        return copy.deepcopy(dict(self.model_extra or {}))

    def as_dict(self) -> dict[str, Any]:
        """`{"type": ..., **options()}`: the section as `dlrun.models.build_model` takes it."""
        return {"type": self.type, **self.options()}


class LossConfig(_Section):
    """`loss`: the loss function (None: chosen from the task) and its options."""

    name: Literal["cross_entropy", "mse", "l1", "bce_with_logits", "nll"] | None = None
    label_smoothing: Float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        if data is None:
            return {}
        if isinstance(data, str):
            return {"name": data}
        if not isinstance(data, Mapping):
            raise _fail(f"expected a loss name or a mapping, got {_show(data)}")
        return data


class OptimizerConfig(_Section):
    """`optimizer`: SGD, Adam, AdamW or RMSprop and their hyper-parameters.

    `decay` says which parameters `weight_decay` applies to: `all`, or `matrices`: those with
    at least 2 dimensions (weight matrices, embeddings, conv kernels) while biases and norm
    scales are not decayed, nanoGPT's configure_optimizers (two parameter groups).
    """

    name: Literal["sgd", "adam", "adamw", "rmsprop"] = "adam"
    lr: Float = Field(1e-3, gt=0)
    momentum: Float = Field(0.0, ge=0)
    nesterov: bool = False
    dampening: Float = Field(0.0, ge=0)
    weight_decay: Float = Field(0.0, ge=0)
    decay: Literal["all", "matrices"] = "all"
    betas: tuple[Float, Float] = (0.9, 0.999)
    eps: Float = Field(1e-8, gt=0)
    alpha: Float = Field(0.99, ge=0)

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise _fail(f"expected two numbers in [0, 1), got {_show(list(v))}")
        return v

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimizerConfig:
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise _fail("", [("nesterov", "needs momentum > 0 and dampening 0")])
        return self


class ScheduleConfig(_Section):
    """`schedule`: the learning-rate schedule, stepped per epoch or per step, after warm-up.

    Warm-up is nanoGPT's: lr * (k + 1) / (warmup_steps + 1) at step (or epoch) k. `cosine`
    then decays to `min_lr` (alias `eta_min`) at `decay_steps` (warm-up included, nanoGPT's
    lr_decay_iters; or `t_max` steps after the warm-up; default: the end of training) and
    holds `min_lr` after. `min_lr` is also the floor of `plateau`.
    """

    name: Literal["constant", "step", "multistep", "exponential", "cosine", "plateau"] = "constant"
    warmup_steps: Int = Field(0, ge=0)
    step_size: Int = Field(1, ge=1)
    milestones: list[Int] = Field(default_factory=list)
    gamma: Float = Field(0.1, gt=0)
    t_max: Int | None = Field(None, ge=1)
    decay_steps: Int | None = Field(None, ge=1)
    min_lr: Float = Field(0.0, ge=0, validation_alias=AliasChoices("min_lr", "eta_min"))
    patience: Int = Field(10, ge=0)
    factor: Float = Field(0.1, gt=0, lt=1)
    interval: Literal["epoch", "step"] = "epoch"

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if any(m < 1 for m in v) or any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise _fail(f"expected increasing integers >= 1, got {_show(v)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _one_floor(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "min_lr" in data and "eta_min" in data:
            raise _fail("", [("eta_min", "is another name for min_lr; give one of them")])
        return data

    @model_validator(mode="after")
    def _multistep_needs_milestones(self) -> ScheduleConfig:
        if self.name == "multistep" and not self.milestones:
            raise _fail("", [("milestones", "the multistep schedule needs at least one milestone")])
        if self.t_max is not None and self.decay_steps is not None:
            raise _fail("", [("decay_steps", "give decay_steps (counted from step 0) or t_max "
                                             "(counted after the warm-up), not both")])
        if self.decay_steps is not None and self.decay_steps <= self.warmup_steps:
            raise _fail("", [("decay_steps", f"must be greater than warmup_steps "
                                             f"({self.warmup_steps}), got {self.decay_steps}")])
        return self


class EarlyStopping(_Section):
    """`train.early_stopping`: stop when `metric` has not improved for `patience` evaluations."""

    metric: str = "val_loss"
    patience: Int = Field(5, ge=1)
    mode: Literal["min", "max"] = "min"
    min_delta: Float = Field(0.0, ge=0)


class TrainConfig(_Section):
    """`train`: length, batching, clipping, evaluation, early stopping and checkpoint frequency.

    `sampling`: `permutation` (every sample once per epoch, shuffled when `shuffle`) or
    `random` (every step draws `batch_size` samples with replacement, nanoGPT's get_batch; an
    epoch is then len(train) // batch_size steps).
    """

    epochs: Int = Field(1, ge=1)
    max_steps: Int | None = Field(None, ge=1)
    batch_size: Int = Field(64, ge=1)
    eval_batch_size: Int | None = Field(None, ge=1)
    grad_clip_norm: Float | None = Field(None, gt=0)
    grad_clip_value: Float | None = Field(None, gt=0)
    eval_every: Int | None = Field(None, ge=1)
    early_stopping: EarlyStopping | None = None
    checkpoint_every: Int | None = Field(None, ge=1)
    drop_last: bool = True
    shuffle: bool = True
    sampling: Literal["permutation", "random"] = "permutation"

    @model_validator(mode="after")
    def _random_is_shuffled(self) -> TrainConfig:
        if self.sampling == "random" and not self.shuffle:
            raise _fail("", [("shuffle", "false contradicts sampling: random (random batches "
                                         "at every step); remove one of them")])
        return self

    @field_validator("early_stopping", mode="before")
    @classmethod
    def _switch(cls, v: Any) -> Any:
        if v is True:
            return {}
        return None if v is False else v


class LoggingConfig(_Section):
    """`logging`: where runs go, how often steps are logged, whether plots and TensorBoard
    event files (the optional tensorboardX) are written."""

    dir: str = "runs"
    log_every: Int = Field(50, ge=1)
    plots: bool = True
    tensorboard: bool = False


class DistributedConfig(_Section):
    """`distributed`: how the workers of `dlrun train --nproc N` (or of an `mpiexec` launch)
    sum their gradients: `auto` is NCCL on CUDA devices and MPI on CPUs."""

    backend: Literal["auto", "mpi", "nccl"] = "auto"


SECTIONS = ("data", "model", "loss", "optimizer", "schedule", "train", "logging", "distributed")

# --------------------------------------------------------------------------- sweep (dlrun sweep)
# The `sweep:` section: what `dlrun sweep` searches. Checked here: its own keys and ranges.
# Checked by dlrun.runner.sweep.space before any trial: that each parameter names a real config
# key and that the task logs the metric (both need the rest of the config and the dataset).


class SweepParameter(_Section):
    """One searched key: a range (`uniform`, `loguniform`, `int`), `choice` among `categories`,
    or explicit `values` (a grid axis for `sampler: grid`, a choice for the other samplers)."""

    space: Literal["uniform", "loguniform", "int", "choice"] | None = None
    lower: Float | None = None
    upper: Float | None = None
    log: bool = False
    step: Float | None = Field(None, gt=0)
    categories: list[Any] | None = None
    values: list[Any] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> SweepParameter:
        if self.space is None and self.values is None:
            raise _fail("", [("space", "missing: give space (uniform, loguniform, int, choice) "
                                       "or a list of values")])
        if self.space in ("uniform", "loguniform", "int"):
            self._check_range()
        if self.space == "choice" and not self.categories:
            raise _fail("", [("categories", "the choice space needs a non-empty list")])
        if self.categories is not None and self.space != "choice":
            raise _fail("", [("categories", "only for space: choice")])
        if self.values is not None and not self.values:
            raise _fail("", [("values", "expected a non-empty list")])
        return self

    def _check_range(self) -> None:
        if self.lower is None or self.upper is None:
            missing = "lower" if self.lower is None else "upper"
            raise _fail("", [(missing, f"missing: the {self.space} space needs lower and upper")])
        if self.lower >= self.upper:
            raise _fail("", [("upper", f"must be greater than lower ({_show(self.lower)}), "
                                       f"got {_show(self.upper)}")])
        if (self.space == "loguniform" or self.log) and self.lower <= 0:
            raise _fail("", [("lower", f"a log scale needs lower > 0, got {_show(self.lower)}")])
        if self.space == "int" and not (self.lower.is_integer() and self.upper.is_integer()):
            raise _fail("", [("lower", "the int space needs integer lower and upper")])
        if self.step is not None and (self.space == "loguniform" or self.log):
            raise _fail("", [("step", "cannot be combined with a log scale")])


class SweepPruner(_Section):
    """`sweep.pruner`: `none`, `median` or `hyperband` (a bare name is short for `{name: ...}`);
    a pruned trial stops at an evaluation where it is worse than its peers (Optuna's pruners).
    `startup_trials` and `warmup_evals` are the median pruner's n_startup_trials and
    n_warmup_steps (steps are evaluations)."""

    name: Literal["none", "median", "hyperband"] = "median"
    startup_trials: Int = Field(5, ge=0)
    warmup_evals: Int = Field(0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        if data is None:
            return {"name": "none"}
        return {"name": data} if isinstance(data, str) else data


class SweepConfig(_Section):
    """`sweep`: the metric and goal, how many trials, the sampler, the pruner and the searched
    keys (dotted config keys such as `optimizer.lr`). `trials` defaults to 20, or to every
    combination with `sampler: grid`."""

    metric: str = "val_loss"
    goal: Literal["minimize", "maximize"] = "minimize"
    trials: Int | None = Field(None, ge=1)
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: SweepPruner = Field(default_factory=SweepPruner)
    parameters: dict[str, SweepParameter]

    @field_validator("pruner", mode="before")
    @classmethod
    def _pruner(cls, v: Any) -> Any:
        return {"name": "none"} if v is None or v is False else v

    @field_validator("parameters", mode="before")
    @classmethod
    def _non_empty(cls, v: Any) -> Any:
        if v is None or (isinstance(v, Mapping) and not v):
            raise _fail("empty search space: give at least one parameter, e.g. "
                        "optimizer.lr: {space: loguniform, lower: 1.0e-4, upper: 1.0e-1}")
        return v

    @model_validator(mode="after")
    def _grid_has_values(self) -> SweepConfig:
        if self.sampler == "grid":
            bad = [(f"parameters.{k}", "sampler: grid needs a list of values for every "
                                        "parameter (values: [...])")
                   for k, p in self.parameters.items()
                   if p.values is None and p.space != "choice"]
            if bad:
                raise _fail("", bad)
        return self

    def grid_size(self) -> int:
        """How many combinations the grid has (sampler: grid)."""
        size = 1
        for p in self.parameters.values():
            size *= len(p.values if p.values is not None else p.categories or [])
        return size

    def default_trials(self) -> int:
        """`trials`, else every grid combination (grid) or 20."""
        if self.trials is not None:
            return self.trials
        return self.grid_size() if self.sampler == "grid" else 20



class ExperimentConfig(_Section):
    """A whole experiment: the top-level keys and one model per section."""

    name: str = "experiment"
    seed: Int = Field(0, ge=0)
    mode: Literal["eager", "static"] = "static"
    device: str = "cpu"
    dtype: Literal["float32", "float64"] = "float32"
    # mixed precision (dlrun.optim.amp): compute dtype; masters and optimizer state stay `dtype`
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    # static mode on CUDA: capture the step once as a CUDA graph and replay it
    cuda_graphs: bool = False
    data: DataConfig
    model: ModelConfig
    loss: LossConfig = Field(default_factory=LossConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    sweep: SweepConfig | None = None  # read by `dlrun sweep` only; trials run without it

    @field_validator("data", "optimizer", "schedule", "train", "logging", "distributed",
                     mode="before")
    @classmethod
    def _empty_section(cls, v: Any) -> Any:
        return {} if v is None else v

    @model_validator(mode="after")
    def _precision_needs_float32(self) -> ExperimentConfig:
        if self.precision != "fp32" and self.dtype != "float32":
            raise _fail("", [("precision", f"{self.precision} keeps float32 master weights; it "
                                          f"needs dtype: float32, not {self.dtype}")])
        return self

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        key = v.strip().lower()
        if not _DEVICE.match(key):
            raise _fail(f"expected cpu, cuda, cuda:N or auto, got {_show(v)}")
        return key


# --------------------------------------------------------------------------- loading


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read a YAML experiment, apply `a.b.c=value` overrides and validate (ConfigError if bad)."""
    source = str(path)
    data = read_yaml(path)
    data = apply_overrides(data, overrides)
    return validate_config(data, source=source, overrides=overrides)


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
        raise ConfigError(_yaml_message(str(path), e)) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        raise ConfigError(f"{path}: empty config; expected keys such as name, data, model")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of keys (name, data, model, ...) at the top level, "
            f"got {_kind(data)}"
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
    `loss.label_smoothing=0.1` works. Unknown keys are left for validation to report.
    """
    out = copy.deepcopy(dict(data))
    for override in overrides:
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
                    f"--set {override}: {where} is {_show(child)}, not a section with keys"
                )
            node = child
        node[parts[-1]] = value
    return out


def validate_config(
    data: Mapping[str, Any], source: str = "config", overrides: Sequence[str] = ()
) -> ExperimentConfig:
    """Validate a config mapping; ConfigError with one `source: key.path: problem` line each.

    Problems at keys set by one of `overrides` name that override instead of `source`.
    """
    try:
        return ExperimentConfig.model_validate(dict(data))
    except ValidationError as e:
        set_paths = []
        for o in overrides:
            try:
                set_paths.append((parse_override(o)[0], o))
            except ConfigError:
                continue
        lines = []
        for err in e.errors():
            for loc, message in _explain(err):
                origin = source
                for parts, o in set_paths:
                    if tuple(map(str, loc[: len(parts)])) == parts:
                        origin = f"--set {o}"
                lines.append(f"{origin}: {_dotted(loc) or '(top level)'}: {message}")
        raise ConfigError("\n".join(dict.fromkeys(lines))) from None


def with_overrides(cfg: ExperimentConfig, overrides: Sequence[str]) -> ExperimentConfig:
    """`cfg` with `a.b=value` overrides applied and validated again (e.g. `mode=eager`)."""
    data = apply_overrides(config_to_dict(cfg), overrides)
    return validate_config(data, source="config", overrides=overrides)


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


def _yaml_message(source: str, e: yaml.MarkedYAMLError) -> str:
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


# --------------------------------------------------------------------------- error phrasing


def _explain(err: Mapping[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """Turn one pydantic error into `(loc, readable message)` pairs."""
    kind, loc, ctx = err["type"], tuple(err["loc"]), err.get("ctx") or {}
    given = err.get("input")
    if kind == "dlrun":
        if ctx.get("items"):
            return [(loc + (key,), msg) for key, msg in ctx["items"]]
        return [(loc, ctx["message"])]
    if kind == "invalid_key" or (loc and loc[-1] == "[key]"):
        loc = loc[:-1] if loc and loc[-1] == "[key]" else loc
        return [(loc, f"keys must be strings, got {_show(loc[-1] if loc else given)}")]
    info = _field_at(loc)
    if kind == "missing" and loc and isinstance(loc[-1], int):  # a tuple given too few items
        n, _ = _length_bounds(_field_at(loc[:-1]))
        return [(loc[:-1], f"expected a list of {n} items, got {_show(given)}")]
    if kind == "missing":
        return [(loc, "missing (required)")]
    if kind == "extra_forbidden":
        return [(loc, _unknown_key(loc))]
    if kind == "literal_error":
        choices = _literal_choices(info)
        listed = ", ".join(repr(c) for c in choices) if choices else ctx.get("expected", "")
        hint = _did_you_mean(given, choices) if isinstance(given, str) else ""
        return [(loc, f"expected one of {listed}, got {_show(given)}{hint}")]
    if kind in _BOUNDS:
        return [(loc, f"expected {_bounded(info, given)}, got {_show(given)}")]
    if kind in ("too_short", "too_long"):
        lo, hi = _length_bounds(info)
        want = f"{lo}" if lo == hi else f"{lo} to {hi}"
        return [(loc, f"expected a list of {want} items, got {_show(given)}")]
    phrase = _PHRASES.get(kind)
    if phrase is None:
        if kind in ("value_error", "assertion_error") and "error" in ctx:
            phrase = str(ctx["error"])
        else:
            msg = str(err.get("msg", kind))
            phrase = msg[:1].lower() + msg[1:]
    if kind in ("model_type", "dict_type", "model_attributes_type") and len(loc) <= 1:
        phrase = "expected a section (a mapping of keys)"
    return [(loc, f"{phrase}, got {_show(given)}")]


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


def _field_at(loc: tuple[Any, ...]) -> FieldInfo | None:
    """The FieldInfo (or element annotation, wrapped) that a pydantic error location points at."""
    current: Any = ExperimentConfig
    info: FieldInfo | None = None
    for part in loc:
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
    for m in info.metadata if info is not None else ():
        if isinstance(m, Gt):
            lo = ("(", m.gt)
        elif isinstance(m, Ge):
            lo = ("[", m.ge)
        elif isinstance(m, Lt):
            hi = (")", m.lt)
        elif isinstance(m, Le):
            hi = ("]", m.le)
    if lo and hi:
        return f"{noun} in {lo[0]}{_num(lo[1])}, {_num(hi[1])}{hi[0]}"
    if lo:
        return f"{noun} {'>' if lo[0] == '(' else '>='} {_num(lo[1])}"
    if hi:
        return f"{noun} {'<' if hi[0] == ')' else '<='} {_num(hi[1])}"
    return noun


def _length_bounds(info: FieldInfo | None) -> tuple[int | str, int | str]:
    tp = _unwrap(info.annotation) if info is not None else None
    if typing.get_origin(tp) is tuple and Ellipsis not in typing.get_args(tp):
        n = len(typing.get_args(tp))
        return n, n
    return "?", "?"


def _unknown_key(loc: tuple[Any, ...]) -> str:
    key = str(loc[-1])
    parent = _field_at(loc[:-1]) if loc[:-1] else None
    model = _unwrap(parent.annotation) if parent is not None else ExperimentConfig
    allowed = list(model.model_fields) if isinstance(model, type) else []
    hint = _did_you_mean(key, allowed)
    if not hint:
        # The key may belong to another section: `lr` at the top level -> optimizer.lr.
        elsewhere = [f"{s}.{key}" for s in SECTIONS if key in _section_fields(s)]
        if len(loc) == 1 and key in ExperimentConfig.model_fields:
            elsewhere = []
        if elsewhere:
            hint = f"; did you mean {' or '.join(repr(e) for e in elsewhere)}?"
        elif allowed:
            hint = f"; expected one of: {', '.join(allowed)}"
    return f"unknown key{hint}"


def _section_fields(section: str) -> list[str]:
    tp = _unwrap(ExperimentConfig.model_fields[section].annotation)
    return list(tp.model_fields)


def _options_of(dataset: str) -> list[str]:
    from dlrun.data.datasets import dataset_options

    return dataset_options(dataset)


def _takes_any_option(dataset: str) -> bool:
    import inspect

    from dlrun.data.datasets import DATASETS

    params = inspect.signature(DATASETS[dataset]).parameters.values()
    return any(p.kind is p.VAR_KEYWORD for p in params)


def _did_you_mean(word: str, choices: Iterable[Any]) -> str:
    names = [str(c) for c in choices]
    match = difflib.get_close_matches(str(word), names, n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) and out else (f".{part}" if out else str(part))
    return out


def _num(v: Any) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _show(v: Any) -> str:
    """A config value the way a user wrote it in YAML (short)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return _num(v) if isinstance(v, float) else str(v)
    text = repr(v) if isinstance(v, str) else json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(v: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(v), type(v).__name__
    )


__all__ = [
    "ExperimentConfig", "DataConfig", "ModelConfig", "LossConfig", "OptimizerConfig",
    "ScheduleConfig", "EarlyStopping", "TrainConfig", "LoggingConfig", "SweepConfig",
    "SweepParameter", "SweepPruner", "load_config", "read_yaml",
    "apply_overrides", "parse_override", "validate_config", "with_overrides", "config_to_dict",
    "dump_config", "config_hash",
]
