"""Row kernels: a `fused_rows` group (passes/fuse_rows.py) rendered as one Numba loop nest.

For every row (a loop per lead dimension) the kernel runs a few passes over the row's N
elements while they sit in cache: one pass per level of reductions (a sum or max whose input
needs an earlier reduction's result waits for the next pass), then one pass writing the output.
Row values are recomputed in each pass that needs them rather than stored; row scalars (the
reductions' results and the elementwise work on them) are computed once per row between passes.
Sums accumulate in float64 lanes in the one fixed order the `sum` primitive also uses
(engine/native.py), so a group computes what its ops compute one by one. Compiling, the disk
cache and the fallback to the group's NumPy forward are cpu_kernels.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dlrun.engine.native import LANES
from dlrun.engine.prims.registry import REGISTRY, Aval, program_avals
from dlrun.engine.static.cpu_kernels import (
    _DTYPES,
    KernelUnsupported,
    _computing_dtype,
    _index,
    _step_expr,
    make_kernel,
)


class _Rows:
    """The group's steps with their avals, kinds (row value or row scalar) and pass levels."""

    def __init__(self, program: tuple[Any, ...], avals: tuple[Any, ...], width: int) -> None:
        self.program, self.width = program, width
        self.ext = [Aval(a.shape, a.dtype) for a in avals]
        self.avals = [out for _, out in program_avals(program, tuple(self.ext))]
        for a in (*self.ext, *self.avals):
            if a.dtype.name not in _DTYPES:
                raise KernelUnsupported(f"dtype {a.dtype.name}")
        self.level: list[int] = []  # a reduction's pass waits for the passes its input needs
        for op, refs, _ in program:
            deps = [self.level[r] for r in refs if r < 0]
            self.level.append(max(deps, default=0) + (REGISTRY[op].row_reduce is not None))
        last = len(program) - 1
        self.lead = self.avals[last].shape[:len(self.avals[last].shape) - self._tail(last)]

    def value(self, j: int, ref: int) -> Aval:
        """What step j's input `ref` is (refs -k: the step k places back)."""
        return self.ext[ref] if ref >= 0 else self.avals[j + ref]

    def _tail(self, j: int) -> int:
        """1 when step j's shape ends with the row axis (width or a kept 1), else 0."""
        op = self.program[j][0]
        prim = REGISTRY[op]
        if prim.row_reduce is not None:
            return 1 if dict(self.program[j][2]).get("keepdims") else 0
        if prim.same_order:
            return 1 if len(self.avals[j].shape) > len(self.value(j, self.program[j][1][0]).shape) \
                else 0
        return 1

    def is_row(self, j: int) -> bool:
        prim = REGISTRY[self.program[j][0]]
        return (prim.row_reduce is None and not prim.same_order
                and self.avals[j].shape[-1] == self.width)

    def needed(self, j: int, seen: set[int]) -> None:
        """Add the row-value steps that step j's value needs inside a pass."""
        if not self.is_row(j) or j in seen:
            return
        seen.add(j)
        for r in self.program[j][1]:
            if r < 0:
                self.needed(j + r, seen)


def _expr(rows: _Rows, j: int, names: list[str]) -> str:
    """Step j's expression, externals read at the loop variables `names`."""
    op, refs, attrs = rows.program[j]
    out = rows.avals[j]
    shape = out.shape if rows.is_row(j) else (*rows.lead, 1)
    args = []
    for r in refs:
        if r < 0:
            args.append(f"t{j + r}")
            continue
        ext = rows.ext[r]
        aliased = REGISTRY[op].same_order and len(ext.shape) == len(rows.lead)
        ext_shape = (*ext.shape, 1) if aliased else ext.shape  # a lead-shaped row scalar
        args.append(f"e{r}[{_index(ext_shape, shape, names)}]" if ext_shape else f"item(e{r})")
    if REGISTRY[op].same_order:
        return args[0]
    ins = [rows.value(j, r) for r in refs]
    return _step_expr(op, args, dict(attrs), _computing_dtype(ins, out))


def render_rows(program: tuple[Any, ...], avals: tuple[Any, ...],
                width: int) -> tuple[str, Aval]:
    """The kernel's source (`def kernel(e0, ..., out)`) and its result's aval."""
    rows = _Rows(program, avals, width)
    nl = len(rows.lead)
    lead_names = [f"i{d}" for d in range(nl)]
    names = [*lead_names, "j"]
    args = ", ".join([f"e{r}" for r in range(len(rows.ext))] + ["out"])
    wide = next(r for r, a in enumerate(rows.ext) if a.shape and a.shape[-1] == width)
    lines = [f"def kernel({args}):", f"    n = e{wide}.shape[-1]  # the row width",
             f"    full = n - n % {LANES}"]
    lines += [f"{'    ' * (d + 1)}for i{d} in range(out.shape[{d}]):" for d in range(nl)]
    pad = "    " * (nl + 1)
    last = len(program) - 1
    for level in range(max(rows.level) + 1):
        lines += _pass_lines(rows, level, names, pad)
        lines += [f"{pad}t{j} = {_scalar_expr(rows, j, names)}" for j in range(len(program))
                  if rows.level[j] == level and not rows.is_row(j)]
    if rows.is_row(last):
        seen: set[int] = set()
        rows.needed(last, seen)
        lines.append(f"{pad}for j in range(n):")
        lines += [f"{pad}    t{k} = {_expr(rows, k, names)}" for k in sorted(seen)]
        lines.append(f"{pad}    out[{', '.join(names)}] = t{last}")
    else:
        index = lead_names + (["0"] if len(rows.avals[last].shape) > nl else [])
        lines.append(f"{pad}out[{', '.join(index) or '()'}] = t{last}")
    return "\n".join(lines) + "\n", rows.avals[last]


def _scalar_expr(rows: _Rows, j: int, names: list[str]) -> str:
    """A row scalar: a reduction's accumulator in the step's dtype, or an elementwise step."""
    if REGISTRY[rows.program[j][0]].row_reduce is not None:
        return f"np.{rows.avals[j].dtype.name}(a{j})"
    return _expr(rows, j, names)


def _pass_lines(rows: _Rows, level: int, names: list[str], pad: str) -> list[str]:
    """The pass over a row that accumulates the reductions of `level` (none at level 0): the
    element j goes to lane j % 8, the lanes are combined pairwise, then the tail in order (the
    order of vecmath.row_sum, so a sum here equals the same sum run alone, in either mode)."""
    reductions = [j for j, (op, _, _) in enumerate(rows.program)
                  if REGISTRY[op].row_reduce is not None and rows.level[j] == level]
    if not reductions:
        return []
    seen: set[int] = set()
    for j in reductions:
        src = rows.program[j][1][0]
        if src < 0:
            rows.needed(j + src, seen)
    body = [f"t{k} = {_expr(rows, k, names)}" for k in sorted(seen)]
    lanes = LANES
    lines = [f"{pad}a{j}_{u} = {_reduce(rows, j)[0]}" for j in reductions for u in range(lanes)]
    lines.append(f"{pad}for jb in range(0, full, {lanes}):")
    for u in range(lanes):
        lines.append(f"{pad}    j = jb + {u}")
        lines += [f"{pad}    {b}" for b in body]
        lines += [f"{pad}    a{j}_{u} = {_update(rows, j, f'a{j}_{u}', names)}" for j in reductions]
    for j in reductions:
        lines.append(f"{pad}a{j} = {_combine(rows, j, [f'a{j}_{u}' for u in range(lanes)])}")
    lines.append(f"{pad}for j in range(full, n):")
    lines += [f"{pad}    {b}" for b in body]
    lines += [f"{pad}    a{j} = {_update(rows, j, f'a{j}', names)}" for j in reductions]
    return lines


def _reduce(rows: _Rows, j: int) -> tuple[str, str]:
    return REGISTRY[rows.program[j][0]].row_reduce


def _update(rows: _Rows, j: int, acc: str, names: list[str]) -> str:
    """The reduction's update of `acc` with the element at j."""
    src = rows.program[j][1][0]
    elem = f"t{j + src}" if src < 0 else f"e{src}[{', '.join(names)}]"
    return _reduce(rows, j)[1].format(elem, acc=acc)


def _combine(rows: _Rows, j: int, parts: list[str]) -> str:
    """The lanes combined pairwise: ((0+1)+(2+3))+((4+5)+(6+7))."""
    while len(parts) > 1:
        parts = [_reduce(rows, j)[1].format(b, acc=a) for a, b in zip(parts[::2], parts[1::2],
                                                                      strict=True)]
    return parts[0]


def rows_kernel(program: tuple[Any, ...], avals: tuple[Any, ...] | None, width: int,
                fallback: Callable[..., Any]) -> Callable[..., Any] | None:
    """fn(*inputs, out=None) running the group as one row kernel, or None to keep NumPy."""
    return make_kernel(lambda: render_rows(program, avals, width), program, avals, fallback)
