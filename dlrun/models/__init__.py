"""Models built from a config section: `build_model(cfg, meta)` picks the family by cfg['type'].

Families: linear, mlp, cnn, rnn, lstm, gru, gpt (language models only). `meta` describes the
data: `input_shape` (per sample), `task` ('classification' | 'regression' | 'language_model'),
`num_classes` (classification), `output_dim` (regression, default 1), `vocab_size` (token
inputs). Every builder validates its section and raises `dlrun.errors.ConfigError` naming the
key path (`model.hidden: ...`).

>>> from dlrun.models import build_model
>>> model = build_model({"type": "mlp", "hidden": [32]},
...                     {"input_shape": (1, 28, 28), "num_classes": 10})
>>> model.num_parameters()
25450
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Union

from pydantic import Field, ValidationError, create_model

from dlrun.config.messages import dotted, explain
from dlrun.errors import ConfigError
from dlrun.models._meta import DataMeta
from dlrun.models.cnn import CNN, CNNSection
from dlrun.models.gpt import GPT, GPTConfig, GPTSection
from dlrun.models.linear import LinearModel, LinearSection
from dlrun.models.mlp import MLPSection
from dlrun.models.rnn import LanguageModel, RecurrentSection, RNNSection, SequenceModel
from dlrun.models.section import ModelSection
from dlrun.nn import Module
from dlrun.registry import Registry

# The model families a config's `model.type` names, each with its section (keys and builder).
REGISTRY: Registry[type[ModelSection]] = Registry("model type")
REGISTRY.add("linear", LinearSection, "one Linear layer: linear or softmax regression (`bias`)")
REGISTRY.add("mlp", MLPSection, "Linear layers with `hidden` sizes, `activation`, `dropout`")
REGISTRY.add("cnn", CNNSection, "conv blocks (`channels`, `kernel_size`, `padding`, `pool`, "
             "`batch_norm`), then `hidden` Linear layers, `dropout`")
for _kind, _section in (("rnn", RNNSection), ("lstm", RecurrentSection),
                        ("gru", RecurrentSection)):
    REGISTRY.add(_kind, _section, f"{_kind.upper()} layers (`hidden_size`, `num_layers`, "
                 "`dropout`, `embedding_dim` for tokens) and a Linear head")
del _kind, _section
REGISTRY.add("gpt", GPTSection, "nanoGPT's decoder-only transformer, language models only "
             "(`n_layer`, `n_head`, `n_embd`, `block_size`, `dropout`, `bias`, `tie_weights`)")
_TOKEN_FAMILIES = ("rnn", "lstm", "gru")  # read token ids for any task
_LANGUAGE_MODELS = (*_TOKEN_FAMILIES, "gpt")  # model a language (gpt does only that)

# The `model` section: one family's section, chosen by `type` (a discriminated union).
ModelConfig = Annotated[Union[tuple(dict.fromkeys(REGISTRY[k] for k in REGISTRY))],  # noqa: UP007
                        Field(discriminator="type")]
_ROOT = create_model("Model", model=(ModelConfig, ...))


def parse_model_section(cfg: Mapping[str, Any], path: str = "model") -> ModelSection:
    """Validate a model section given as a mapping; ConfigError with a line per problem."""
    try:
        return _ROOT.model_validate({"model": dict(cfg)}).model
    except ValidationError as e:
        lines = [f"{path}{dotted(loc)[len('model'):]}: {message}" for err in e.errors()
                 for loc, message in explain(err, _ROOT, ())]
        raise ConfigError("\n".join(dict.fromkeys(lines))) from None


def build_model(cfg: Mapping[str, Any] | ModelSection, meta: Mapping[str, Any],
                path: str = "model") -> Module:
    """Build the model that `cfg` (a config section) describes for data described by `meta`."""
    if not isinstance(cfg, ModelSection | Mapping):
        raise ConfigError(f"{path}: expected a mapping, got {type(cfg).__name__}")
    section = cfg if isinstance(cfg, ModelSection) else parse_model_section(cfg, path)
    kind = section.type
    data = DataMeta.parse(meta, path)
    if kind not in _LANGUAGE_MODELS and data.task == "language_model":
        raise ConfigError(f"{path}.type: {kind!r} cannot model language; use one of "
                          f"{', '.join(_LANGUAGE_MODELS)}")
    if kind not in _LANGUAGE_MODELS and data.vocab_size is not None:
        raise ConfigError(f"{path}.type: {kind!r} cannot read token ids; use one of "
                          f"{', '.join(_TOKEN_FAMILIES)}")
    return section.build(data, path)


__all__ = ["build_model", "parse_model_section", "REGISTRY", "ModelConfig", "ModelSection",
           "DataMeta", "LinearModel", "CNN", "SequenceModel", "LanguageModel", "GPT", "GPTConfig"]
