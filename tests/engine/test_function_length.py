"""No function or method in dlrun/ is longer than MAX_LINES lines (def line to last line)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "dlrun"
MAX_LINES = 60


def _long_functions(folder: Path, limit: int) -> list[tuple[str, int, str, int]]:
    """(file, def line, qualified name, length) of every function longer than `limit` lines."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found.extend(
            (path.relative_to(ROOT).as_posix(), line, name, length)
            for line, name, length in _functions(tree, "")
            if length > limit
        )
    return found


def _functions(node: ast.AST, prefix: str) -> list[tuple[int, str, int]]:
    out = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}{child.name}"
            out.append((child.lineno, name, child.end_lineno - child.lineno + 1))
            out.extend(_functions(child, f"{name}.<locals>."))
        elif isinstance(child, ast.ClassDef):
            out.extend(_functions(child, f"{prefix}{child.name}."))
        else:
            out.extend(_functions(child, prefix))
    return out


def test_the_length_counts_from_def_to_the_last_line() -> None:
    tree = ast.parse("@decorator\ndef f(\n    x,\n):\n    return x\n\nclass C:\n    def g(self):\n"
                     "        def h():\n            pass\n        return h\n")
    assert _functions(tree, "") == [(2, "f", 4), (8, "C.g", 4), (9, "C.g.<locals>.h", 2)]


def test_no_function_is_longer_than_the_limit() -> None:
    offenders = _long_functions(PACKAGE, MAX_LINES)
    listing = "\n".join(f"  {f}:{line} {name} ({n} lines)" for f, line, name, n in offenders)
    assert not offenders, f"functions longer than {MAX_LINES} lines under dlrun/:\n{listing}"
