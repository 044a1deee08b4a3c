"""`fused`: a chain of elementwise primitives run as one op (made by passes/fuse.py).

Its `program` attribute is a tuple of steps `(op, refs, attrs)`: `refs` index the chain's external
inputs, -1 meaning the running result. On NumPy the chain is one generated straight-line function
calling each step's bound forward in place over a scratch buffer (every step but the last; the
last writes `out`, so `out` may alias any input); on CuPy it is one generated elementwise kernel
composed from the steps' CUDA expressions; with Numba, on NumPy too, one native kernel
composed from the steps' `cpu_expr` (static/cpu_kernels.py). The static plan and the reference
interpreter both run the chain through this primitive, so the reference checks what production
runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from dlrun.engine.prims.registry import REGISTRY, Aval, Kind, primitive, program_avals
from dlrun.engine.prims.strides import like_elementwise
from dlrun.engine.static import cpu_kernels, row_kernels

Program = tuple[tuple[str, tuple[int, ...], tuple[tuple[str, Any], ...]], ...]


def _fused_rule(*xs: Any, program: Program, **_: Any) -> tuple[tuple[int, ...], np.dtype]:
    """The steps' own shape rules, applied one after another (chains and row groups alike)."""
    result = program_avals(program, xs)[-1][1]
    return result.shape, result.dtype


@primitive("fused", Kind.FUSED, _fused_rule, differentiable=False, in_place=True,
           layout=like_elementwise)
def fused(xp, *ext, program, out=None):
    """The chain on fresh scratch (interpreters; plans call the specialized form)."""
    return _chain(xp, program, len(ext), persistent=False)(*ext, out=out)


@fused.defspecialize
def _fused_specialize(xp: Any, avals: Any, *, program: Program) -> Callable[..., Any]:
    n = len(avals) if avals is not None else 1 + max(max(refs, default=-1)
                                                     for _, refs, _ in program)
    if xp.__name__ != "numpy":
        return cuda_chain(xp, program, n)
    numpy_chain = _chain(xp, program, n, persistent=True)
    if avals is None or not _as_kernel(program, program_avals(program, avals)[-1][1]):
        return numpy_chain
    return cpu_kernels.chain_kernel(program, avals, numpy_chain) or numpy_chain


def _as_kernel(program: Program, result: Aval) -> bool:
    """Whether a NumPy plan runs the chain as a CPU kernel: Numba is there and the chain does
    enough work to pay for a kernel call (a few NumPy calls on a small array cost less). The two
    compute the same bits, so this only decides speed."""
    work = math.prod(result.shape) * len(program)
    return cpu_kernels.available() and work >= cpu_kernels.MIN_KERNEL_WORK


def chain_calls(program: Program, args: list[str], out: str | None, scratch: str,
                prefix: str) -> list[str]:
    """The chain as straight-line source: step k calls `{prefix}_{k}` (its bound forward); every
    step but the last writes `scratch`, the last — an expression, returned last — writes `out`.
    The one definition of how a chain runs: the standalone stepper and plans (which inline it,
    see `Primitive.inline`) are both made of these lines."""
    calls = []
    for k, (_, refs, _) in enumerate(program):
        call_args = ", ".join(scratch if r < 0 else args[r] for r in refs)
        target = (out if k == len(program) - 1 else scratch) or "None"
        calls.append(f"{prefix}_{k}({call_args}, out={target})")
    return calls


def _bound_steps(xp: Any, program: Program, prefix: str) -> dict[str, Any]:
    return {f"{prefix}_{k}": REGISTRY[op].bound(xp, dict(attrs))
            for k, (op, _, attrs) in enumerate(program)}


def _chain(xp: Any, program: Program, n_ext: int, persistent: bool) -> Callable[..., Any]:
    """A generated function running the steps: scratch buffer kept across calls if persistent."""
    args = [f"e{k}" for k in range(n_ext)]
    env: dict[str, Any] = {"box": [None], "new_scratch": _scratch_maker(xp, program),
                           "keep": persistent, **_bound_steps(xp, program, "f")}
    *steps, last = chain_calls(program, args, "out", "s", "f")
    lines = [f"def chain({', '.join(args)}, out=None):", "    s = box[0]", "    if s is None:",
             f"        s = new_scratch(out, {', '.join(args)})",
             "        if keep:", "            box[0] = s",
             *[f"    {call}" for call in steps], f"    return {last}"]
    code = compile("\n".join(lines) + "\n", f"<dlrun fused chain {len(program)}>", "exec")
    exec(code, env)  # noqa: S102  (our own generated straight-line code)
    return env["chain"]


@fused.definline
def _fused_inline(xp: Any, prefix: str, args: list[str], out: str | None,
                  new_buffer: Callable[[], Any], result: Any, *, program: Program
                  ) -> tuple[list[str], str, dict[str, Any]] | None:
    """The chain's lines for a NumPy plan, its scratch laid out like the chain's result (on
    CuPy, or with CPU kernels when the chain is large enough to pay for a kernel call, the chain
    is one kernel: no lines, the plan calls it)."""
    if xp.__name__ != "numpy" or _as_kernel(program, result):
        return None
    env = _bound_steps(xp, program, prefix)
    env[f"{prefix}_s"] = new_buffer() if len(program) > 1 else None
    *steps, last = chain_calls(program, args, out, f"{prefix}_s", prefix)
    return steps, last, env


def _scratch_maker(xp: Any, program: Program) -> Callable[..., Any]:
    """The scratch buffer: laid out like `out` when given, else C-ordered of the chain's shape."""

    def new_scratch(out: Any, *ext: Any) -> Any:
        if out is not None:
            return xp.empty_like(out)
        shape, dtype = _fused_rule(*ext, program=program)
        return xp.empty(shape, dtype=dtype)

    return new_scratch


def cuda_kernel_source(program: Program, n_inputs: int) -> tuple[str, str, str]:
    """(in_params, out_params, body) for cupy.ElementwiseKernel: the steps' CUDA expressions
    composed into one."""
    expr = ""
    for op, refs, attrs in program:
        names = [f"({expr})" if r < 0 else f"in{r}" for r in refs]
        expr = REGISTRY[op].cuda_code(names, dict(attrs))
    in_params = ", ".join(f"T{k} in{k}" for k in range(n_inputs))
    return in_params, "O out", f"out = (O)({expr})"


def cuda_chain(cupy: Any, program: Program, n_inputs: int) -> Callable[..., Any]:
    """The chain as one CuPy elementwise kernel: one launch, one pass over memory."""
    in_params, out_params, body = cuda_kernel_source(program, n_inputs)
    kernel = cupy.ElementwiseKernel(in_params, out_params, body, "dlrun_fused")

    def run(*ext: Any, out: Any = None) -> Any:
        if out is None:
            shape, dtype = _fused_rule(*ext, program=program)
            out = cupy.empty(shape, dtype=dtype)
        return kernel(*ext, out)

    return run


# ----- fused_rows: elementwise steps and last-axis reductions over rows (passes/fuse_rows.py) --


def _run_rows(xp: Any, ext: tuple[Any, ...], program: Program) -> Any:
    """The group step by step, each with its primitive's forward (a ref -k: k steps back)."""
    values: list[Any] = []
    for op, refs, attrs in program:
        ins = [ext[r] if r >= 0 else values[r] for r in refs]
        values.append(REGISTRY[op].forward(xp, *ins, **dict(attrs)))
    return values[-1]


@primitive("fused_rows", Kind.FUSED, _fused_rule, differentiable=False, in_place=False)
def fused_rows(xp, *ext, program, width, out=None):
    """Row groups on fresh arrays, one step at a time (interpreters; NumPy plans with Numba
    call the specialized row kernel, static/row_kernels.py)."""
    result = _run_rows(xp, ext, program)
    if out is None:
        return result
    xp.copyto(out, result)
    return out


@fused_rows.defspecialize
def _rows_specialize(xp: Any, avals: Any, *, program: Program, width: int) -> Callable[..., Any]:
    def plain(*ext: Any, out: Any = None) -> Any:
        return fused_rows.forward(xp, *ext, program=program, width=width, out=out)

    if xp.__name__ != "numpy":
        return plain
    return row_kernels.rows_kernel(program, avals, width, plain) or plain
