"""The README says what the code does: its config block is a valid config, each commented key in
it can be uncommented as shown, and its tables of names are the registries' own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from dlrun.config import validate_config
from dlrun.data.datasets import DATASETS
from dlrun.errors import ConfigError
from dlrun.models import REGISTRY as MODELS
from dlrun.optimization import LOSSES, OPTIMIZERS, SCHEDULES
from dlrun.registry import Registry

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _config_block() -> list[str]:
    start = README.index("## The config")
    body = README[README.index("```yaml\n", start) + 8:]
    return body[:body.index("```\n")].splitlines()


def test_the_config_block_is_a_valid_config() -> None:
    validate_config(yaml.safe_load("\n".join(_config_block())), "README")


def test_every_commented_key_can_be_uncommented_as_shown() -> None:
    lines = _config_block()
    commented = [(i, m) for i, line in enumerate(lines)
                 if (m := re.match(r"^(\s*)# (\w+): ", line)) and m.group(2) != "sweep"]
    assert len(commented) >= 5
    for i, m in commented:
        indent = m.group(1)
        uncommented = [*lines[:i], indent + lines[i][len(indent) + 2:], *lines[i + 1:]]
        validate_config(yaml.safe_load("\n".join(uncommented)), f"README line {i}")


@pytest.mark.parametrize("registry, heading", [
    (MODELS, "model.type"), (DATASETS, "data.name"), (OPTIMIZERS, "optimizer.name"),
    (SCHEDULES, "schedule.name"), (LOSSES, "loss.name")], ids=lambda x: getattr(x, "concept", x))
def test_the_tables_of_names_come_from_the_registries(registry: Registry, heading: str) -> None:
    assert registry.markdown(heading) in README


def test_the_config_accepts_exactly_the_registered_names() -> None:
    base = {"data": {"name": "blobs"}, "model": {"type": "mlp"}}
    for name in OPTIMIZERS:
        assert validate_config({**base, "optimizer": {"name": name}}).optimizer.name == name
    for name in SCHEDULES:
        schedule = {"name": name, "milestones": [2]}
        assert validate_config({**base, "schedule": schedule}).schedule.name == name
    with pytest.raises(ConfigError, match="'adam', 'adamw', 'rmsprop', 'sgd', got 'adamv'; did "
                                          "you mean 'adam'"):
        validate_config({**base, "optimizer": {"name": "adamv"}})
