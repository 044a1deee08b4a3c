"""The command line: help works through the console script and `python -m dlrun`."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from dlrun.cli import app


def test_help_lists_the_app() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "dlrun" in result.output


def test_python_m_dlrun_help() -> None:
    out = subprocess.run([sys.executable, "-m", "dlrun", "--help"], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and "dlrun 0.1.0" in result.output
