"""The experiment schema: one frozen pydantic model per config section, `ExperimentConfig` over
them. Sections given as `null` take their defaults; `loss: mse` is short for `{name: mse}`;
`train.early_stopping: true` enables it with defaults, `null`/`false` disables."""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import (
    AliasChoices,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from dlrun.config.fields import Float, Int, Section
from dlrun.config.messages import did_you_mean, fail, show
from dlrun.models import ModelConfig  # the families' sections, chosen by `type`
from dlrun.optim.hyperparameters import HyperparameterError, hyperparameters
from dlrun.optim.hyperparameters import check as check_hyperparameters
from dlrun.optimization import LOSSES, OPTIMIZERS, SCHEDULES
from dlrun.registry import Registry

# --------------------------------------------------------------------------- field types


_DEVICE = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


# --------------------------------------------------------------------------- the schema


class DataConfig(Section):
    """`data`: which dataset, where its files are, the validation split and builder options."""

    name: str
    root: str | None = None
    val_fraction: Float = Field(0.1, ge=0, lt=1)
    options: dict[str, Any] = Field(default_factory=dict)
    prefetch: Int = Field(2, ge=0)  # batches a background thread gathers ahead; 0: none

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        from dlrun.data.datasets import available_datasets

        names = available_datasets()
        key = v.strip().lower().replace("-", "_")
        if key not in names:
            raise fail(f"unknown dataset {v!r}{did_you_mean(key, names)} "
                        f"(available: {', '.join(names)})")
        return key

    @field_validator("root")
    @classmethod
    def _root_used(cls, v: str | None, info: ValidationInfo) -> str | None:
        name = info.data.get("name")
        if v is not None and name is not None and "root" not in _options_of(name):
            hint = "; give its file as data.options.path" if "path" in _options_of(name) else ""
            raise fail(f"dataset {name!r} reads no files from a root folder{hint}")
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
                                      f"{did_you_mean(key, allowed)} (options: {listed})"))
        if problems:
            raise fail("unknown options", problems)
        return v


class LossConfig(Section):
    """`loss`: the loss function (None: chosen from the task) and its options."""

    name: Literal[LOSSES.names()] | None = None  # type: ignore[valid-type]
    label_smoothing: Float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        if data is None:
            return {}
        if isinstance(data, str):
            return {"name": data}
        if not isinstance(data, Mapping):
            raise fail(f"expected a loss name or a mapping, got {show(data)}")
        return data


class _OptimizerSection(Section):
    """`optimizer`: the optimizer in `name` and its hyper-parameters.

    The keys besides `name`, `lr`, `weight_decay` and `decay` are the keyword arguments of the
    optimizers' constructors (their defaults and bounds; None where two optimizers' defaults
    differ, meaning the chosen one's own), see `optimizer_section`. `decay` says which
    parameters `weight_decay` applies to: `all`, or `matrices`: those with at least 2
    dimensions (weight matrices, embeddings, conv kernels) while biases and norm scales are not
    decayed, nanoGPT's configure_optimizers (two parameter groups).
    """

    name: str = "adam"  # one of the registry's optimizers (a Literal in the built model)
    registry: ClassVar[Registry[Any]] = OPTIMIZERS
    lr: Float = Field(1e-3, gt=0)
    weight_decay: Float = Field(0.0, ge=0)
    decay: Literal["all", "matrices"] = "all"

    @model_validator(mode="after")
    def _optimizer_accepts(self) -> _OptimizerSection:
        try:
            check_hyperparameters(self.registry[self.name], self.hyperparameters())
        except HyperparameterError as e:
            raise fail("", [(e.key, e.problem)]) from None
        return self

    def hyperparameters(self) -> dict[str, Any]:
        """The chosen optimizer's keyword arguments (None: its own default)."""
        out = {}
        for key in hyperparameters(self.registry[self.name]):
            value = getattr(self, key, None)
            if value is not None:
                out[key] = tuple(value) if isinstance(value, list) else value
        return out


def _config_type(annotation: Any) -> Any:
    """A constructor's annotation as a config field type: float -> Float, int -> Int (no bools
    read as numbers), inside Annotated bounds and tuples too."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return typing.Annotated[(_config_type(args[0]), *args[1:])]
    if origin is tuple:
        return tuple[tuple(_config_type(a) for a in args)]
    return {float: Float, int: Int}.get(annotation, annotation)


def optimizer_section(registry: Registry[Any]) -> type[_OptimizerSection]:
    """The `optimizer` section's model: `name` one of the registry's optimizers, and every
    keyword their constructors take (lr, weight_decay: the config's own defaults)."""
    fields: dict[str, Any] = {"name": (Literal[registry.names()], "adam")}
    for name in registry:
        for h in hyperparameters(registry[name]).values():
            if h.name in _OptimizerSection.model_fields:
                continue
            kind = _config_type(h.annotation)
            if h.name in fields and fields[h.name][1] != h.default:
                fields[h.name] = (kind | None, None)
            else:
                fields.setdefault(h.name, (kind, h.default))
    model = create_model("OptimizerConfig", __base__=_OptimizerSection,
                         __doc__=_OptimizerSection.__doc__, __module__=__name__, **fields)
    model.registry = registry
    return model


OptimizerConfig = optimizer_section(OPTIMIZERS)


class ScheduleConfig(Section):
    """`schedule`: the learning-rate schedule, stepped per epoch or per step, after warm-up.

    Warm-up is nanoGPT's: lr * (k + 1) / (warmup_steps + 1) at step (or epoch) k. `cosine`
    then decays to `min_lr` (alias `eta_min`) at `decay_steps` (warm-up included, nanoGPT's
    lr_decay_iters; or `t_max` steps after the warm-up; default: the end of training) and
    holds `min_lr` after. `min_lr` is also the floor of `plateau`.
    """

    name: Literal[SCHEDULES.names()] = "constant"  # type: ignore[valid-type]
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
            raise fail(f"expected increasing integers >= 1, got {show(v)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _one_floor(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "min_lr" in data and "eta_min" in data:
            raise fail("", [("eta_min", "is another name for min_lr; give one of them")])
        return data

    @model_validator(mode="after")
    def _multistep_needs_milestones(self) -> ScheduleConfig:
        if self.name == "multistep" and not self.milestones:
            raise fail("", [("milestones", "the multistep schedule needs at least one milestone")])
        if self.t_max is not None and self.decay_steps is not None:
            raise fail("", [("decay_steps", "give decay_steps (counted from step 0) or t_max "
                                             "(counted after the warm-up), not both")])
        if self.decay_steps is not None and self.decay_steps <= self.warmup_steps:
            raise fail("", [("decay_steps", f"must be greater than warmup_steps "
                                             f"({self.warmup_steps}), got {self.decay_steps}")])
        return self


class EarlyStopping(Section):
    """`train.early_stopping`: stop when `metric` has not improved for `patience` evaluations."""

    metric: str = "val_loss"
    patience: Int = Field(5, ge=1)
    mode: Literal["min", "max"] = "min"
    min_delta: Float = Field(0.0, ge=0)


class TrainConfig(Section):
    """`train`: length, batching, clipping, evaluation, early stopping and checkpoint frequency.

    `sampling`: `permutation` (every sample once per epoch, shuffled when `shuffle`) or
    `random` (every step draws `batch_size` samples with replacement, nanoGPT's get_batch; an
    epoch is then len(train) // batch_size steps).

    `accumulate`: K micro-batches of `batch_size` per optimizer step (gradient accumulation, as
    Lightning's accumulate_grad_batches): a step sees K x batch_size samples, and steps, epochs,
    schedules, logging and checkpoints count optimizer steps.
    """

    epochs: Int = Field(1, ge=1)
    max_steps: Int | None = Field(None, ge=1)
    batch_size: Int = Field(64, ge=1)
    accumulate: Int = Field(1, ge=1)
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
            raise fail("", [("shuffle", "false contradicts sampling: random (random batches "
                                         "at every step); remove one of them")])
        return self

    @property
    def step_batch_size(self) -> int:
        """The samples of one optimizer step: accumulate x batch_size (global, over ranks)."""
        return self.accumulate * self.batch_size

    @field_validator("early_stopping", mode="before")
    @classmethod
    def _switch(cls, v: Any) -> Any:
        if v is True:
            return {}
        return None if v is False else v


class LoggingConfig(Section):
    """`logging`: where runs go, how often steps are logged, whether plots and TensorBoard
    event files (the optional tensorboardX) are written."""

    dir: str = "runs"
    log_every: Int = Field(50, ge=1)
    plots: bool = True
    tensorboard: bool = False


class DistributedConfig(Section):
    """`distributed`: how the workers of `dlrun train --nproc N` (or of an `mpiexec` launch)
    sum their gradients: `auto` is NCCL on CUDA devices and MPI on CPUs."""

    backend: Literal["auto", "mpi", "nccl"] = "auto"
    # gradients travel in buckets of this many MiB, each all-reduced while the backward pass
    # still runs (as DDP's bucket_cap_mb); 0: one buffer, one blocking all-reduce
    bucket_mb: Float = Field(25.0, ge=0)


SECTIONS = ("data", "model", "loss", "optimizer", "schedule", "train", "logging", "distributed")

# --------------------------------------------------------------------------- sweep (dlrun sweep)
# The `sweep:` section: what `dlrun sweep` searches. Checked here: its own keys and ranges.
# Checked by dlrun.runner.sweep.space before any trial: that each parameter names a real config
# key and that the task logs the metric (both need the rest of the config and the dataset).


class SweepParameter(Section):
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
            raise fail("", [("space", "missing: give space (uniform, loguniform, int, choice) "
                                       "or a list of values")])
        if self.space in ("uniform", "loguniform", "int"):
            self._check_range()
        if self.space == "choice" and not self.categories:
            raise fail("", [("categories", "the choice space needs a non-empty list")])
        if self.categories is not None and self.space != "choice":
            raise fail("", [("categories", "only for space: choice")])
        if self.values is not None and not self.values:
            raise fail("", [("values", "expected a non-empty list")])
        return self

    def _check_range(self) -> None:
        if self.lower is None or self.upper is None:
            missing = "lower" if self.lower is None else "upper"
            raise fail("", [(missing, f"missing: the {self.space} space needs lower and upper")])
        if self.lower >= self.upper:
            raise fail("", [("upper", f"must be greater than lower ({show(self.lower)}), "
                                       f"got {show(self.upper)}")])
        if (self.space == "loguniform" or self.log) and self.lower <= 0:
            raise fail("", [("lower", f"a log scale needs lower > 0, got {show(self.lower)}")])
        if self.space == "int" and not (self.lower.is_integer() and self.upper.is_integer()):
            raise fail("", [("lower", "the int space needs integer lower and upper")])
        if self.step is not None and (self.space == "loguniform" or self.log):
            raise fail("", [("step", "cannot be combined with a log scale")])


class SweepPruner(Section):
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


class SweepConfig(Section):
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
            raise fail("empty search space: give at least one parameter, e.g. "
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
                raise fail("", bad)
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



class ExperimentConfig(Section):
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
            raise fail("", [("precision", f"{self.precision} keeps float32 master weights; it "
                                          f"needs dtype: float32, not {self.dtype}")])
        return self

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        key = v.strip().lower()
        if not _DEVICE.match(key):
            raise fail(f"expected cpu, cuda, cuda:N or auto, got {show(v)}")
        return key




def _options_of(dataset: str) -> list[str]:
    from dlrun.data.datasets import dataset_options

    return dataset_options(dataset)


def _takes_any_option(dataset: str) -> bool:
    import inspect

    from dlrun.data.datasets import DATASETS

    params = inspect.signature(DATASETS[dataset]).parameters.values()
    return any(p.kind is p.VAR_KEYWORD for p in params)
