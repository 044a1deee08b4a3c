"""The import direction of the package (DESIGN.md §1-§3), checked on the source with `ast`.

- the engine (dlrun/engine/**) imports nothing from the layers above it, anywhere in a file;
- config/ (plain data) imports nothing from the runner;
- every module of dlrun/ has a layer (LAYERS) and imports only its own layer and those below;
- module-level imports between dlrun modules form no cycle;
- the composite Tensor methods are ordinary methods of the class in engine/tensor.py.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dlrun"

ABOVE_ENGINE = (
    "dlrun.nn",
    "dlrun.functional",
    "dlrun.runner",
    "dlrun.data",
    "dlrun.cli",
    "dlrun.models",
    "dlrun.optim",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under `node`, with whether it runs only when a function is called."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(child, True)
        else:
            yield from _walk(child, in_function)


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules an import statement names, relative imports resolved.

    `from a.b import c` names the module `a.b.c` when that is a module of the package, else `a.b`
    (c is then an attribute). Parent packages, whose `__init__` Python runs first, are not counted:
    `dlrun/__init__.py` is the public facade that imports everything.
    """
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        parts = package.split(".")
        parts = parts[: len(parts) - node.level + 1]
        base = ".".join([*parts, base] if base else parts)
    modules = _modules()
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


def _imports(module: str) -> Iterator[tuple[str, int, bool]]:
    """(imported module, line, at function level) for every import in `module`."""
    path = _modules()[module]
    tree = _tree(path)
    type_checking = {
        id(n)
        for stmt in ast.walk(tree)
        if isinstance(stmt, ast.If) and _is_type_checking(stmt.test)
        for body in stmt.body
        for n in ast.walk(body)
    }
    for node, in_function in _walk(tree, False):
        if id(node) in type_checking:
            continue  # never executed: only for type checkers
        for target in _targets(module, path, node):
            yield target, node.lineno, in_function


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _where(module: str, line: int) -> str:
    return f"{_modules()[module].relative_to(PACKAGE.parent)}:{line}"


# ----- the engine is the bottom layer ----------------------------------------------------------


def test_the_engine_imports_nothing_from_the_layers_above_it() -> None:
    offenders = [
        f"{_where(m, line)} imports {target}"
        for m in _modules()
        if _within(m, "dlrun.engine")
        for target, line, _ in _imports(m)
        if any(_within(target, above) for above in ABOVE_ENGINE)
    ]
    assert not offenders, "the engine must not import from above it:\n" + "\n".join(offenders)


def test_config_does_not_import_the_runner() -> None:
    offenders = [
        f"{_where(m, line)} imports {target}"
        for m in _modules()
        if _within(m, "dlrun.config")
        for target, line, _ in _imports(m)
        if _within(target, "dlrun.runner")
    ]
    assert not offenders, "config/ must not import the runner:\n" + "\n".join(offenders)


# ----- every module of dlrun/ has a layer and imports only its layer and those below ------------

# Bottom to top; a module's layer is that of the longest prefix listed. `dlrun` itself (the
# public facade, `import dlrun`) may be imported from anywhere above the engine.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("dlrun.errors", "dlrun.atomic", "dlrun.backend", "dlrun.config.messages",
     "dlrun.config.fields", "dlrun.registry"),
    ("dlrun.engine",),
    ("dlrun.functional", "dlrun.nn", "dlrun.optim", "dlrun.export"),
    ("dlrun.data", "dlrun.models", "dlrun.optimization", "dlrun.distributed"),
    ("dlrun.config",),
    ("dlrun.runner",),
    ("dlrun.render",),
    ("dlrun.cli", "dlrun.__main__"),
)


def _layer(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for i, names in enumerate(LAYERS):
        for prefix in names:
            if _within(module, prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), i)
    return None if best is None else best[1]


def test_every_module_has_a_layer() -> None:
    missing = [m for m in _modules() if m != "dlrun" and _layer(m) is None]
    assert not missing, f"place these modules in LAYERS: {missing}"


def test_every_module_imports_only_its_layer_and_below() -> None:
    offenders = [
        f"{_where(m, line)} ({LAYERS[_layer(m)][0]} layer) imports {target}"
        for m in _modules()
        if m != "dlrun"
        for target, line, _ in _imports(m)
        if target != "dlrun" and _within(target, "dlrun")
        and (_layer(target) or 0) > (_layer(m) or 0)
    ]
    assert not offenders, "imports from a higher layer:\n" + "\n".join(offenders)


def test_the_layer_of_a_module_is_its_longest_listed_prefix() -> None:
    assert _layer("dlrun.config.messages") == 0 and _layer("dlrun.config.schema") == 4
    assert _layer("dlrun.runner.sweep.driver") == 5 and _layer("dlrun.engine.static.lower") == 1


def test_the_layering_checks_see_relative_and_function_level_imports() -> None:
    tree = ast.parse("from ..functional import x\ndef f():\n    from . import mode\n")
    module = "dlrun.engine.tensor"
    path = _modules()[module]
    found = [(_targets(module, path, n), fn) for n, fn in _walk(tree, False)]
    assert found == [(["dlrun.functional"], False), (["dlrun.engine.mode"], True)]


# ----- no cycles through module-level imports --------------------------------------------------


def _module_level_graph() -> dict[str, dict[str, int]]:
    """module -> {imported dlrun module: line}, for imports that run when the module is imported."""
    modules = _modules()
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for m in modules:
        for target, line, in_function in _imports(m):
            if not in_function and target in modules and target != m:
                graph[m].setdefault(target, line)
    return graph


def _find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One cycle [a, b, ..., a] of the graph, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if start in state:
            continue
        path = [start]
        stack = [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_the_cycle_finder_reports_a_cycle() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {}}
    assert _find_cycle(graph) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b": 1}, "b": {}, "c": {"a": 1, "b": 2}}) is None


def test_module_level_imports_have_no_cycle() -> None:
    graph = _module_level_graph()
    cycle = _find_cycle(graph)
    if cycle is not None:
        steps = [
            f"  {a} ({_where(a, graph[a][b])}) imports {b}"
            for a, b in zip(cycle, cycle[1:], strict=False)
        ]
        pytest.fail("module-level import cycle:\n" + "\n".join(steps))


# ----- composite Tensor methods, defined on the class ------------------------------------------

COMPOSITE_METHODS = (
    "sum", "mean", "var", "std", "max", "min", "amax", "amin", "argmax", "argmin", "logsumexp",
    "softmax", "log_softmax", "pow", "clamp", "matmul", "reshape", "view", "flatten", "transpose",
    "t", "permute", "expand", "broadcast_to", "squeeze", "unsqueeze", "split", "chunk", "gather",
    "masked_fill", "__pow__", "__rpow__", "__matmul__", "__rmatmul__", "__getitem__", "T",
)  # fmt: skip


def test_tensor_defines_every_composite_method_in_its_class_body() -> None:
    import dlrun
    from dlrun.engine.tensor import Tensor

    assert dlrun.Tensor is Tensor
    missing = [name for name in COMPOSITE_METHODS if name not in vars(Tensor)]
    assert not missing, f"Tensor lacks {missing}"
    elsewhere = [name for name in COMPOSITE_METHODS if name != "T"
                 and getattr(Tensor, name).__module__ != "dlrun.engine.tensor"]
    assert not elsewhere, f"defined outside engine/tensor.py: {elsewhere}"


def test_nothing_sets_attributes_on_tensor_at_import_time() -> None:
    offenders = [
        f"{_where(m, node.lineno)}"
        for m, path in _modules().items()
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setattr"
        and node.args and getattr(node.args[0], "id", "") == "Tensor"
    ]
    assert not offenders, "monkey-patching Tensor:\n" + "\n".join(offenders)


def test_composite_methods_compute_what_numpy_does() -> None:
    import dlrun

    a = np.arange(12, dtype=np.float32).reshape(3, 4) / 4 - 1
    x = dlrun.tensor(a)
    close = np.testing.assert_allclose
    close(x.sum().numpy(), a.sum(), rtol=1e-6)
    close(x.mean(1, keepdim=True).numpy(), a.mean(1, keepdims=True), rtol=1e-6)
    close(x.var(0).numpy(), a.var(0, ddof=1), rtol=1e-5)
    close(x.std(dim=1, unbiased=False).numpy(), a.std(1), rtol=1e-5)
    values, indices = x.max(1)
    close(values.numpy(), a.max(1))
    np.testing.assert_array_equal(indices.numpy(), a.argmax(1))
    close(x.max().numpy(), a.max())
    np.testing.assert_array_equal(x.argmin(0).numpy(), a.argmin(0))
    e = np.exp(a - a.max(1, keepdims=True))
    close(x.softmax(1).numpy(), e / e.sum(1, keepdims=True), rtol=1e-5)
    close(x.logsumexp(1).numpy(), np.log(np.exp(a).sum(1)), rtol=1e-5)
    close((x**2).numpy(), a**2, rtol=1e-6)
    close((2.0**x).numpy(), 2.0**a, rtol=1e-6)
    close(x.clamp(min=-0.5, max=0.5).numpy(), np.clip(a, -0.5, 0.5))
    close((x @ x.T).numpy(), a @ a.T, rtol=1e-5)
    close((a.T @ x).numpy(), a.T @ a, rtol=1e-5)
    close(x.t().numpy(), a.T)
    close(x.reshape(4, 3).numpy(), a.reshape(4, 3))
    close(x.view(-1).numpy(), a.reshape(-1))
    close(x.unsqueeze(0).expand(2, 3, 4).numpy(), np.broadcast_to(a, (2, 3, 4)))
    close(x.permute(1, 0).flatten().numpy(), a.T.reshape(-1))
    close(x[1:, ::2].numpy(), a[1:, ::2])
    assert [c.shape for c in x.chunk(2, dim=1)] == [(3, 2), (3, 2)]
    idx = dlrun.tensor(np.array([[0], [2], [1]]))
    close(x.gather(1, idx).numpy(), np.take_along_axis(a, np.array([[0], [2], [1]]), 1))
    close(x.masked_fill(x > 0, 0.0).numpy(), np.where(a > 0, 0.0, a))


def test_composite_methods_keep_autograd() -> None:
    import dlrun

    x = dlrun.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    (x.reshape(3, 2).T @ x.reshape(3, 2)).sum().backward()
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    expected = 2 * a @ np.ones((2, 2), np.float32)  # d/dA sum(A^T A) = 2 A 1 1^T
    np.testing.assert_allclose(x.grad.numpy(), expected.reshape(2, 3), rtol=1e-6)
