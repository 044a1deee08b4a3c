"""What the data tells a model builder: input shape, task, number of outputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dlrun.errors import ConfigError

TASKS = ("classification", "regression", "language_model")


@dataclass(frozen=True)
class DataMeta:
    """Validated `meta`: per-sample input shape, task, output width, vocabulary size."""

    input_shape: tuple[int, ...]
    task: str
    out_features: int
    vocab_size: int | None

    @classmethod
    def parse(cls, meta: Mapping[str, Any], path: str) -> DataMeta:
        def bad(msg: str) -> ConfigError:
            return ConfigError(f"{path}: the dataset description {msg}")

        shape = meta.get("input_shape")
        if not isinstance(shape, list | tuple) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape
        ):
            raise bad(f"has no valid input_shape (a tuple of positive ints), got {shape!r}")
        task = meta.get("task", "classification")
        if task not in TASKS:
            raise bad(f"has task {task!r}; expected one of {', '.join(TASKS)}")
        vocab = meta.get("vocab_size")
        if vocab is not None and (not isinstance(vocab, int) or vocab <= 0):
            raise bad(f"has an invalid vocab_size {vocab!r}")
        if task == "classification":
            out = meta.get("num_classes")
            if not isinstance(out, int) or isinstance(out, bool) or out < 1:
                raise bad(f"gives no valid num_classes for a classification task, got {out!r}")
        elif task == "regression":
            out = meta.get("output_dim", 1)
            if not isinstance(out, int) or isinstance(out, bool) or out < 1:
                raise bad(f"gives an invalid output_dim {out!r}")
        else:
            if vocab is None:
                raise bad("gives no vocab_size for a language_model task")
            out = vocab
        return cls(tuple(int(s) for s in shape), task, int(out), vocab)
