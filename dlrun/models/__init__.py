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

from collections.abc import Callable, Mapping
from typing import Any

from dlrun.errors import ConfigError
from dlrun.models import cnn, gpt, linear, mlp
from dlrun.models._meta import DataMeta
from dlrun.models.cnn import CNN, build_cnn
from dlrun.models.gpt import GPT, GPTConfig, build_gpt
from dlrun.models.linear import LinearModel, build_linear
from dlrun.models.mlp import build_mlp
from dlrun.models.rnn import LanguageModel, SequenceModel, build_recurrent, recurrent_keys
from dlrun.nn import Module
from dlrun.registry import Registry

Builder = Callable[[Mapping[str, Any], DataMeta, str], Module]

# The model families a config's `model.type` names: (section, data, key path) -> model.
REGISTRY: Registry[Builder] = Registry("model type")
REGISTRY.add("linear", build_linear, "one Linear layer: linear or softmax regression (`bias`)")
REGISTRY.add("mlp", build_mlp, "Linear layers with `hidden` sizes, `activation`, `dropout`")
REGISTRY.add("cnn", build_cnn, "conv blocks (`channels`, `kernel_size`, `padding`, `pool`, "
             "`batch_norm`), then `hidden` Linear layers, `dropout`")
for _kind in ("rnn", "lstm", "gru"):
    REGISTRY.add(_kind, build_recurrent, f"{_kind.upper()} layers (`hidden_size`, `num_layers`, "
                 "`dropout`, `embedding_dim` for tokens) and a Linear head")
del _kind
REGISTRY.add("gpt", build_gpt, "nanoGPT's decoder-only transformer, language models only "
             "(`n_layer`, `n_head`, `n_embd`, `block_size`, `dropout`, `bias`, `tie_weights`)")
_TOKEN_FAMILIES = ("rnn", "lstm", "gru")  # read token ids for any task
_LANGUAGE_MODELS = (*_TOKEN_FAMILIES, "gpt")  # model a language (gpt does only that)


def model_keys(kind: str) -> set[str]:
    """The keys a `model:` section of family `kind` takes (what its builder checks), so that
    config validation reports an unknown one with the file's other problems."""
    fixed = {"linear": linear.KEYS, "mlp": mlp.KEYS, "cnn": cnn.KEYS, "gpt": gpt.KEYS}
    return set(fixed[kind]) if kind in fixed else recurrent_keys(kind)


def build_model(cfg: Mapping[str, Any], meta: Mapping[str, Any], path: str = "model") -> Module:
    """Build the model that `cfg` (a config section) describes for data described by `meta`."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{path}: expected a mapping, got {type(cfg).__name__}")
    kind = cfg.get("type")
    if kind not in REGISTRY:
        what = "missing (required)" if kind is None else f"unknown model type {kind!r}"
        raise ConfigError(f"{path}.type: {what}; expected one of {', '.join(REGISTRY)}")
    data = DataMeta.parse(meta, path)
    if kind not in _LANGUAGE_MODELS and data.task == "language_model":
        raise ConfigError(f"{path}.type: {kind!r} cannot model language; use one of "
                          f"{', '.join(_LANGUAGE_MODELS)}")
    if kind not in _LANGUAGE_MODELS and data.vocab_size is not None:
        raise ConfigError(f"{path}.type: {kind!r} cannot read token ids; use one of "
                          f"{', '.join(_TOKEN_FAMILIES)}")
    return REGISTRY[kind](cfg, data, path)


__all__ = ["build_model", "model_keys", "REGISTRY", "DataMeta", "LinearModel", "CNN",
           "SequenceModel", "LanguageModel", "GPT", "GPTConfig"]
