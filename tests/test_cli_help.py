"""Help text written to be wrapped: each paragraph of a command's help is one line of source
(typer shows the later paragraphs' line breaks as they are), and every command shows an example."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from dlrun.cli import app


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if hasattr(group, "commands"):  # a group (typer brings its own click)
        for name, cmd in group.commands.items():
            yield path + (name,)
            yield from _commands(cmd, path + (name,))


COMMANDS = list(_commands(typer.main.get_command(app)))


def _help(path: tuple[str, ...]) -> str:
    cmd: Any = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd.help or ""


def test_every_command_is_checked() -> None:
    assert {"train", "eval", "compare", "graph", "info", "sweep", "runs"} <= {p[0] for p in
                                                                            COMMANDS}
    assert ("runs", "diff") in COMMANDS and ("runs", "show") in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_paragraphs_are_single_lines_with_an_example(path: tuple[str, ...]) -> None:
    paragraphs = [p.strip() for p in _help(path).strip().split("\n\n")]
    broken = [p for p in paragraphs if "\n" in p]
    assert not broken, f"hard line breaks inside: {broken}"
    examples = [p for p in paragraphs if p.startswith("Example: dlrun ")]
    assert len(examples) == 1 and examples[0].startswith(f"Example: dlrun {' '.join(path)}")


def test_the_example_shows_in_help_at_80_columns() -> None:
    result = CliRunner().invoke(app, ["runs", "diff", "--help"], terminal_width=80,
                                env={"COLUMNS": "80"})
    assert result.exit_code == 0
    lines = [line.strip() for line in result.output.splitlines()]
    assert any(line.startswith("Example: dlrun runs diff ") for line in lines), result.output
