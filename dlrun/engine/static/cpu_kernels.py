"""Native CPU kernels for fused chains: the chain's steps rendered as one Numba loop nest.

A fused chain (prims/fused.py) is one description of elementwise steps; on CuPy it is rendered
from the steps' `cuda_expr` into one ElementwiseKernel, here from their `cpu_expr` into one
Python loop nest that Numba compiles to machine code: one pass over memory instead of one NumPy
call (and one pass) per step. The loop nest is specialized to the broadcast pattern of the
inputs (a (1, N) bias is indexed [0, j], a 0-d constant read once) and their dtypes.

Kernels are cached on disk (`kernel_cache_dir()`): the source goes to a file named by the hash
of its text, and Numba caches the machine code beside it, keyed by that file, the argument types
and the CPU. A later process (an MPI rank, a sweep trial, the next run) loads them instead of
compiling. A source file that does not hold exactly the expected text is rewritten before it is
imported, a cache entry Numba cannot load is deleted and rebuilt, and files are replaced
atomically, so processes compiling the same kernel at once do not corrupt each other's.

Without Numba (or with DLRUN_CPU_KERNELS=0) `chain_kernel` returns None and the chain runs as
NumPy calls, as it always did; a chain that fails to render or compile does too, with one
warning naming the primitive and the user's source line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.engine.native import available, numba_module
from dlrun.engine.prims.registry import REGISTRY, Aval, program_avals

log = logging.getLogger("dlrun.kernels")

# Elements times steps below which a chain stays NumPy calls: a kernel call costs about 1.5 us,
# a NumPy call on a small array about 0.5 us (both compute the same bits).
MIN_KERNEL_WORK = 8192
FORMAT = 1  # bump when the rendering changes: the source hash then changes too
_DTYPES = {"float32", "float64", "int32", "int64", "bool"}
_FLOAT_LITERAL = re.compile(r"(?<![\w.])(\d+\.\d+)(?![\w.])")


@dataclass
class KernelStats:
    """What the kernels of this process cost and came from (reported by `dlrun compare`)."""

    compiled: int = 0  # compiled now (cold)
    loaded: int = 0  # machine code loaded from the disk cache (warm)
    reused: int = 0  # already made in this process
    fallbacks: list[str] = field(default_factory=list)  # chains left to NumPy, and why
    seconds: float = 0.0  # spent making kernels (compiling or loading)

    def as_dict(self) -> dict[str, Any]:
        return {"compiled": self.compiled, "loaded": self.loaded, "reused": self.reused,
                "fallbacks": len(self.fallbacks), "seconds": round(self.seconds, 3)}

    def since(self, before: dict[str, Any]) -> dict[str, Any]:
        """What happened after `before` (an earlier `as_dict()`), with how kernels run."""
        now = self.as_dict()
        delta = {k: (round(now[k] - before[k], 3) if k == "seconds" else now[k] - before[k])
                 for k in now}
        return {"backend": "numba" if available() else "numpy", **delta}


STATS = KernelStats()
# The user source line of the node being lowered (static/lower.py sets it), for warnings.
ORIGIN: ContextVar[str] = ContextVar("dlrun_kernel_origin", default="")
_MADE: dict[tuple[str, tuple[Any, ...]], Callable[..., Any]] = {}


class KernelUnsupported(ValueError):
    """A chain that cannot become a CPU kernel (a step without cpu_expr, an unsupported dtype)."""


def kernel_cache_dir() -> Path:
    """$DLRUN_KERNEL_CACHE, else $XDG_CACHE_HOME/dlrun/kernels (~/.cache/dlrun/kernels)."""
    env = os.environ.get("DLRUN_KERNEL_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "dlrun" / "kernels"


def describe() -> str:
    """One line for `dlrun info`: which kernels fused chains use."""
    numba = numba_module()
    if numba is None:
        return ("off (DLRUN_CPU_KERNELS=0)" if os.environ.get("DLRUN_CPU_KERNELS") == "0"
                else "NumPy calls (Numba not installed: pip install 'dlrun[cpu-kernels]')")
    return f"Numba {numba.__version__} kernels, cached in {kernel_cache_dir()}"


# ----- rendering -------------------------------------------------------------------------------


def _literal(value: Any, dtype: np.dtype) -> str:
    """An attribute value as kernel source (floats typed like the data they meet)."""
    if isinstance(value, np.dtype | type):
        name = np.dtype(value).name
        if name not in _DTYPES:
            raise KernelUnsupported(f"dtype {name}")
        return f"np.{'bool_' if name == 'bool' else name}"
    if isinstance(value, bool | np.bool_):
        return repr(bool(value))
    if isinstance(value, float | np.floating):
        return f"np.{dtype.name}({float(value)!r})" if dtype.kind == "f" else repr(float(value))
    return repr(value)


def _step_expr(op: str, args: list[str], attrs: dict[str, Any], dtype: np.dtype) -> str:
    """One step as an expression: its cpu_expr over `args`, float literals typed as `dtype`."""
    prim = REGISTRY[op]
    if prim.cpu_expr is None:
        raise KernelUnsupported(f"primitive {op!r} declares no cpu_expr")
    template = prim.cpu_expr
    if dtype.kind == "f":
        template = _FLOAT_LITERAL.sub(lambda m: f"np.{dtype.name}({m.group(1)})", template)
    return template.format(*args, **{k: _literal(v, dtype) for k, v in attrs.items()})


def _index(shape: tuple[int, ...], out_shape: tuple[int, ...],
           names: list[str] | None = None) -> str:
    """The subscript reading a value of `shape` broadcast to `out_shape` at the loop variables
    `names` (i0, i1, ... by default), one per dimension of out_shape."""
    if not shape:
        return "()"
    names = names or [f"i{d}" for d in range(len(out_shape))]
    lead = len(out_shape) - len(shape)
    parts = ["0" if n == 1 else names[lead + k] for k, n in enumerate(shape)]
    return ", ".join(parts)


def _computing_dtype(ins: list[Aval], out: Aval) -> np.dtype:
    """The dtype a step's float literals take: its result's, else its first float input's."""
    if out.dtype.kind == "f":
        return out.dtype
    return next((a.dtype for a in ins if a.dtype.kind == "f"), out.dtype)


def render(program: tuple[Any, ...], avals: tuple[Any, ...],
           alias: int | None = None) -> tuple[str, Aval]:
    """The kernel's source (`def kernel(e0, ..., out)`) and its result's aval (`alias`: the
    input that is `out` itself, see _loop_nest)."""
    ext = [Aval(a.shape, a.dtype) for a in avals]
    steps = program_avals(program, tuple(ext))
    for a in [*ext, *(out for _, out in steps)]:
        if a.dtype.name not in _DTYPES:
            raise KernelUnsupported(f"dtype {a.dtype.name}")
    body = []
    for k, ((op, refs, attrs), (ins, out)) in enumerate(zip(program, steps, strict=True)):
        args = [f"s{k + r}" if r < 0 else f"x{r}" for r in refs]
        body.append(f"s{k} = {_step_expr(op, args, dict(attrs), _computing_dtype(ins, out))}")
    result = steps[-1][1]
    return _loop_nest(ext, result, body, alias), result


def _loop_nest(ext: list[Aval], out: Aval, body: list[str], alias: int | None = None) -> str:
    """`body` inside one loop per output dimension, inputs loaded at the innermost level.

    `alias`: the input that is `out` itself (the memory plan computes a chain in place); it is
    read through `out`, so LLVM sees one array read and written at the same index and still
    vectorizes (two names for one array fail its runtime overlap check: measured 6x slower)."""
    nd = len(out.shape)
    args = ", ".join([f"e{r}" for r in range(len(ext))] + ["out"])
    lines = [f"def kernel({args}):"]
    lines += [f"    x{r} = item(e{r})" for r, a in enumerate(ext) if not a.shape]
    for d in range(nd):
        lines.append(f"{'    ' * (d + 1)}for i{d} in range(out.shape[{d}]):")
    pad = "    " * (nd + 1)
    lines += [f"{pad}x{r} = {'out' if r == alias else f'e{r}'}[{_index(a.shape, out.shape)}]"
              for r, a in enumerate(ext) if a.shape]
    lines += [pad + b for b in body]
    lines.append(f"{pad}out[{', '.join(f'i{d}' for d in range(nd)) or '()'}] = s{len(body) - 1}")
    return "\n".join(lines) + "\n"


# ----- compiling and the disk cache ------------------------------------------------------------

_HEADER = ('"""A dlrun kernel generated from a fused chain (dlrun/engine/static/cpu_kernels.py)."""'
           "\nimport math\n\nimport numpy as np\nfrom numba import njit\n\n"
           "from dlrun.engine.vecmath import (  # noqa: F401\n"
           "    erf, exp, item, log, pow, sqrt, tanh)\n\n\n"
           '@njit(cache=True, nogil=True, error_model="numpy")\n')


def module_source(kernel_source: str) -> tuple[str, str]:
    """(module text, its name): the kernel with its imports; named by the hash of the text."""
    numba = numba_module()
    text = _HEADER + kernel_source
    key = f"{FORMAT}\n{getattr(numba, '__version__', '')}\n{text}"
    return text, "k" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _write_source(path: Path, text: str) -> None:
    """Put `text` at `path` unless it holds exactly that already (atomic replace)."""
    try:
        if path.read_text() == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _purge(path: Path) -> None:
    """Delete Numba's cache entries for the kernel file `path` (they failed to load)."""
    for f in (path.parent / "__pycache__").glob(f"{path.stem}.*"):
        f.unlink(missing_ok=True)


def _import(path: Path, name: str) -> Any:
    """The kernel file as a module in sys.modules (Numba's cached code refers to it by name)."""
    module_name = f"dlrun_kernel_{name}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[module_name] = module
    return module.kernel


def _signature(avals: list[Any], out: Aval) -> tuple[Any, ...]:
    """Numba argument types for C-contiguous inputs and output (what plans pass)."""
    from numba import from_dtype, types

    return tuple(types.Array(from_dtype(a.dtype), len(a.shape), "C")
                 for a in [*avals, out])


def _compile(kernel_source: str, avals: list[Any], out: Aval) -> Callable[..., Any]:
    """The compiled dispatcher: loaded from the disk cache when it holds this kernel."""
    text, name = module_source(kernel_source)
    path = kernel_cache_dir() / f"{name}.py"
    _write_source(path, text)
    sig = _signature(avals, out)
    for attempt in (0, 1):
        try:
            dispatcher = _import(path, name)
            if tuple(sig) in dispatcher.overloads:  # made earlier in this process
                STATS.reused += 1
                return dispatcher
            dispatcher.compile(sig)
        except Exception:
            if attempt:
                raise
            _purge(path)  # a corrupt or foreign entry: delete it and build it again
            continue
        hits = sum(dispatcher.stats.cache_hits.values())
        if hits:
            STATS.loaded += 1
        else:
            STATS.compiled += 1
        return dispatcher
    raise AssertionError("unreachable")


def chain_kernel(program: tuple[Any, ...], avals: tuple[Any, ...] | None,
                 fallback: Callable[..., Any]) -> Callable[..., Any] | None:
    """`fn(*inputs, out=None)` running the chain as one native kernel, or None to keep NumPy
    (no Numba, unknown input avals, or a chain that does not render or compile). `fallback`
    (the NumPy chain) takes over for good if the kernel ever fails on its arguments. A call
    whose `out` is one of its inputs runs a variant reading that input through `out`."""

    def variant(k: int) -> Callable[..., Any] | None:
        try:
            return _made(*render(program, avals, alias=k), avals)
        except Exception:  # the plain kernel computes the same, only slower
            return None

    return make_kernel(lambda: render(program, avals), program, avals, fallback, variant)


def make_kernel(render_fn: Callable[[], tuple[str, Aval]], program: tuple[Any, ...],
                avals: tuple[Any, ...] | None, fallback: Callable[..., Any],
                variant: Callable[[int], Any] | None = None) -> Callable[..., Any] | None:
    """The kernel `render_fn` writes, compiled (or found) and wrapped as fn(*inputs, out=None);
    None when there is no Numba or it fails (see chain_kernel)."""
    if avals is None or not available():
        return None
    try:
        source, out = render_fn()
        kernel = _made(source, out, avals)
    except Exception as e:  # never crash a run over a kernel: the NumPy chain computes the same
        _fall_back(program, e)
        return None
    return _runner(kernel, out, program, fallback, variant)


def _made(source: str, out: Aval, avals: tuple[Any, ...]) -> Callable[..., Any]:
    """The compiled kernel for `source`: made once per process (STATS counts the time)."""
    start = time.perf_counter()
    try:
        key = (source, tuple((len(a.shape), np.dtype(a.dtype).str) for a in avals))
        kernel = _MADE.get(key)
        if kernel is None:
            kernel = _MADE[key] = _compile(source, list(avals), out)
        else:
            STATS.reused += 1
        return kernel
    finally:
        STATS.seconds += time.perf_counter() - start


def _fall_back(program: tuple[Any, ...], error: Exception) -> None:
    ops = "·".join(step[0] for step in program)
    where = ORIGIN.get()
    culprit = str(error).splitlines()[0] if str(error) else type(error).__name__
    message = (f"fused {ops}{f' (created at {where})' if where else ''} runs as NumPy "
               f"calls: no CPU kernel ({culprit})")
    STATS.fallbacks.append(message)
    log.warning(message)


def _runner(kernel: Callable[..., Any], out_aval: Aval, program: tuple[Any, ...],
            fallback: Callable[..., Any],
            variant: Callable[[int], Any] | None = None) -> Callable[..., Any]:
    """fn(*inputs, out=None) calling the kernel; on arguments it cannot take (an input laid out
    as no compiled kernel expects and Numba cannot compile for) the NumPy chain, for good."""
    shape, dtype = out_aval.shape, out_aval.dtype
    empty = np.empty
    box = [kernel]
    in_place: dict[int, Any] = {}  # input k -> the variant that reads it through out

    def pick(ext: tuple[Any, ...], out: Any) -> Any:
        for k, e in enumerate(ext):
            if e is out and variant is not None:
                if k not in in_place:
                    in_place[k] = variant(k) or box[0]
                return in_place[k]
        return box[0]

    def run(*ext: Any, out: Any = None) -> Any:
        if out is None:
            out = empty(shape, dtype)
        if box[0] is None:
            return fallback(*ext, out=out)
        try:
            pick(ext, out)(*ext, out)  # a type mismatch raises before anything is written
        except Exception as e:
            box[0] = None
            _fall_back(program, e)
            return fallback(*ext, out=out)
        return out

    return run
