"""Where in the user's code something happened: the innermost frame outside dlrun's library
layers (engine, functional ops, nn layers, optimizers) — a user's model or a built-in model."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
_INTERNAL = tuple(str(p) for p in (_ROOT / "engine", _ROOT / "nn", _ROOT / "optim",
                                   _ROOT / "functional.py"))


def user_location() -> str:
    """'file.py:LINE' of the innermost caller outside dlrun's library layers."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_INTERNAL):
            return f"{_short(filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"


def _short(filename: str) -> str:
    try:
        return str(Path(filename).resolve().relative_to(Path.cwd()))
    except ValueError:
        return filename
