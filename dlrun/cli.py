"""The dlrun command line: a thin typer app; every command is one library call."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from dlrun import __version__

app = typer.Typer(
    help="dlrun: train deep-learning experiments on dlrun's own engine, eager or static.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


class _State:
    debug = False


state = _State()


def _version(value: bool) -> None:
    if value:
        console.print(f"dlrun {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Global options."""
    state.debug = debug


@app.command()
def info() -> None:
    """Show the engine's primitives and the available devices."""
    from dlrun.backend import cuda_available
    from dlrun.engine.prims import REGISTRY

    console.print(f"dlrun {__version__}: {len(REGISTRY)} primitives")
    console.print(f"CUDA available: {cuda_available()}")


def main() -> None:
    app()
