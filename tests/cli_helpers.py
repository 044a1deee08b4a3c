"""Shared CLI assertions: a failing command ends in exactly one `error:` line and exit 1."""

from __future__ import annotations

from typer.testing import CliRunner

from dlrun.cli import app


def assert_cli_fails(args: list[str], *needles: str) -> str:
    """Run `dlrun ARGS`: exit 1, no traceback, one error line; every needle in the output."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)
    return result.output
