"""Where in the user's code something happened: the first stack frame outside the dlrun package."""

from __future__ import annotations

import sys
from pathlib import Path

_PKG = str(Path(__file__).resolve().parent.parent)


def user_location() -> str:
    """'file.py:LINE' of the innermost caller outside dlrun (or '<unknown>')."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_PKG):
            return f"{filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"
