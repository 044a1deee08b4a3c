"""The benchmark: dlrun eager and static against the NumPy floor and PyTorch eager.

    python benchmarks/run.py [--workloads linreg mlp cnn lstm] [--steps 50] [--warmup 10]
                             [--rounds 5] [--out benchmarks/results] [--no-torch]
                             [--gap 0.2] [--in-process]

For each workload (configs/bench/<name>.yaml) every implementation runs training steps on the
same fixed batch (the config's first training batch): dlrun eager and dlrun static (the bench
config with `mode` overridden), the hand-written NumPy floor with reused buffers and with default
malloc (benchmarks/floor.py), and PyTorch eager when torch is installed (benchmarks/torch_ref.py;
the lstm workload also as a per-step op loop).

Each implementation lives in a worker process of its own (spawned: its own allocator state,
thread pools and imports, so none changes another's page faults or malloc costs; torch is only
imported by its workers). After the first call and `--warmup` steps each, the implementations
take turns in `--rounds` rounds of steps/rounds timed steps, the order rotating every round and
a `--gap` pause before each turn (the BLAS/OpenMP threads of the previous turn otherwise keep
spinning into the next one), so only one implementation runs at a time and the ratios are
measured under the same machine conditions.

Per implementation it reports the median, p10 and p90 of the per-step time, minor page faults per
timed step, the peak of memory traced by tracemalloc during one step (NumPy reports its buffers
to tracemalloc; PyTorch does not: null), and for dlrun static the trace + compile time of the
first call. Then it computes the benchmark's ratios, marks each target met or missed, writes
results.json and results.md into --out and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks import floor as floor_mod  # noqa: E402
from benchmarks import torch_ref  # noqa: E402

WORKLOADS = ("linreg", "mlp", "cnn", "lstm", "gpt")
NO_FLOOR = ("gpt",)  # workloads without a hand-written NumPy floor
CONFIG_DIR = ROOT / "configs" / "bench"
# implementation key -> column label
LABELS = {
    "dlrun_eager": "dlrun eager",
    "dlrun_static": "dlrun static",
    "floor_reused": "NumPy floor, buffers reused",
    "floor_malloc": "NumPy floor, default malloc",
    "torch_eager": "PyTorch eager",
    "torch_loop": "PyTorch eager, per-step op loop",
    "torch_compile": "PyTorch torch.compile",
    "base_eager": "dlrun eager, baseline tree",
    "base_static": "dlrun static, baseline tree",
}
BASELINE_ENV = "DLRUN_BENCH_BASELINE"  # the --baseline tree, inherited by the spawned workers
# "zero" steady-state page faults: fewer than one per 10 steps on average (a step that unmaps and
# re-faults its buffers takes at least one fault every step; rare background faults do not)
ZERO_FAULTS = 0.1
# warn in the table when other processes took more than this share of the CPUs during the run
BUSY_WARNING = 0.10


@dataclass
class Impl:
    """One implementation's measurements, gathered in the parent."""

    key: str
    client: Any = None
    info: dict[str, Any] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)
    faults: int = 0
    round_faults: list[int] = field(default_factory=list)
    round_medians: list[float] = field(default_factory=list)
    error: str | None = None


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _loss_value(out: Any) -> float | None:
    """The loss returned by a step as a float (dlrun/torch tensors, NumPy scalars, floats)."""
    try:
        if hasattr(out, "detach"):
            out = out.detach()
        if hasattr(out, "item"):
            return float(out.item())
        return float(out)
    except Exception:
        return None


def _to_numpy(a: Any) -> np.ndarray:
    if hasattr(a, "get"):  # a CuPy array
        a = a.get()
    return np.array(a, copy=True)


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


# --------------------------------------------------------------------------- the fixed batch


def fixed_batch(workload: str, config_dir: Path) -> tuple[np.ndarray, np.ndarray, float | None]:
    """The bench config's first training batch as NumPy arrays, and the median time to prepare
    a batch (loader iteration + batch_tensors, ms), timed apart from a step."""
    from dlrun.config import load_config
    from dlrun.runner.experiment import batch_tensors, build_experiment

    exp = build_experiment(load_config(config_dir / f"{workload}.yaml", ["mode=eager"]))
    xb, yb = next(iter(exp.train_loader))
    return _to_numpy(xb), _to_numpy(yb), _data_prep_ms(exp, batch_tensors)


def _data_prep_ms(exp: Any, batch_tensors: Callable, n: int = 20) -> float | None:
    times: list[float] = []
    try:
        while len(times) < n:
            before = len(times)
            it = iter(exp.train_loader)
            while len(times) < n:
                t0 = time.perf_counter()
                try:
                    xb, yb = next(it)
                except StopIteration:
                    break
                batch_tensors(exp, xb, yb)
                times.append(time.perf_counter() - t0)
            if len(times) == before:
                break
    except Exception:
        return None
    return statistics.median(times) * 1e3 if times else None


# --------------------------------------------------------------------------- implementations


def build_impl(key: str, workload: str, config_dir: Path, x: np.ndarray, y: np.ndarray
               ) -> tuple[Callable[[], Any], dict[str, Any], Any]:
    """(step, info, experiment or None) of one implementation on the fixed batch (x, y)."""
    info: dict[str, Any] = {}
    if key.startswith("base_"):
        if "dlrun" in sys.modules:
            raise RuntimeError("--baseline needs worker processes (not --in-process)")
        sys.path.insert(0, os.environ[BASELINE_ENV])  # this worker imports the other tree
        key = "dlrun_" + key.removeprefix("base_")
    if key.startswith("dlrun_"):
        import dlrun
        from dlrun.backend import synchronize
        from dlrun.config import load_config
        from dlrun.runner.experiment import batch_tensors, build_experiment

        info["dlrun_source"] = str(Path(dlrun.__file__).parent.parent)
        mode = key.removeprefix("dlrun_")
        cfg = load_config(config_dir / f"{workload}.yaml", [f"mode={mode}"])
        t0 = time.perf_counter()
        exp = build_experiment(cfg)
        info["build_s"] = time.perf_counter() - t0
        xt, yt = batch_tensors(exp, x.copy(), y.copy())
        fn, device = exp.train_step, exp.device

        def step() -> Any:
            out = fn(xt, yt)
            synchronize(device)
            return out

        return step, info, exp
    if key.startswith("floor_"):
        f = floor_mod.make_floor(workload, key.removeprefix("floor_"),
                                 dtype=x.dtype if x.dtype.kind == "f" else np.float32)
        xc, yc = x.copy(), y.copy()
        return (lambda: f.step(xc, yc)), info, None
    if key in ("torch_eager", "torch_loop", "torch_compile"):
        from benchmarks import torch_ref

        name = "lstm_loop" if key == "torch_loop" else workload
        info["torch_threads"] = torch_ref.num_threads()
        return torch_ref.make_step(name, x, y, compiled=key == "torch_compile"), info, None
    raise ValueError(f"unknown implementation {key!r}")


def _timed_steps(step: Callable[[], Any], n: int) -> tuple[list[float], int]:
    """n synchronous steps: their times and the minor page faults taken meanwhile."""
    perf = time.perf_counter
    ts = [0.0] * n  # preallocated: the bookkeeping allocates nothing per step
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(n):
        t0 = perf()
        step()
        ts[i] = perf() - t0
    return ts, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _peak_step_bytes(step: Callable[[], Any]) -> int:
    """Peak memory traced by tracemalloc during one step, above what was live before it."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        step()
        return int(tracemalloc.get_traced_memory()[1] - base)
    finally:
        tracemalloc.stop()


class Session:
    """One built implementation answering the harness's commands (in a worker process or, with
    --in-process, in the harness itself)."""

    def __init__(self, key: str, workload: str, config_dir: Path, x: np.ndarray,
                 y: np.ndarray) -> None:
        self.key = key
        self.step, self.info, self.exp = build_impl(key, workload, config_dir, x, y)

    def handle(self, cmd: str, arg: Any = None) -> Any:
        if cmd == "info":
            return self.info
        if cmd == "first":  # the first call (dlrun static: trace + compile + run)
            t0 = time.perf_counter()
            out = self.step()
            return {"first_call_s": time.perf_counter() - t0, "loss_first": _loss_value(out)}
        if cmd == "warmup":
            for _ in range(arg):
                self.step()
            return None
        if cmd == "run":
            return _timed_steps(self.step, arg)
        if cmd == "finish":
            out: dict[str, Any] = {"loss_last": _loss_value(self.step())}
            out["peak_step_bytes"] = (None if self.key.startswith("torch")
                                      else _peak_step_bytes(self.step))
            fn = getattr(self.exp, "train_step", None)
            traces = getattr(fn, "traces", None)
            if traces:
                out["compile_s"] = float(getattr(traces[0], "seconds", float("nan")))
                out["trace_count"] = int(getattr(fn, "trace_count", len(traces)))
            return out
        raise ValueError(f"unknown command {cmd!r}")


def _worker(conn: Any, key: str, workload: str, config_dir: str, x: np.ndarray,
            y: np.ndarray) -> None:
    """A worker process: build one implementation, then answer commands until 'finish'."""
    try:
        session = Session(key, workload, Path(config_dir), x, y)
    except BaseException as e:
        conn.send(("error", _error(e)))
        return
    conn.send(("ok", session.info))
    while True:
        try:
            cmd, arg = conn.recv()
        except EOFError:
            return
        try:
            conn.send(("ok", session.handle(cmd, arg)))
        except BaseException as e:
            conn.send(("error", _error(e)))
        if cmd == "finish":
            return


class LocalClient:
    def __init__(self, key: str, workload: str, config_dir: Path, x: np.ndarray,
                 y: np.ndarray) -> None:
        self.session = Session(key, workload, config_dir, x, y)

    def ready(self) -> Any:
        return self.session.info

    def call(self, cmd: str, arg: Any = None) -> Any:
        return self.session.handle(cmd, arg)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


class WorkerClient:
    """An implementation in its own process (spawned: its own allocator state, thread pools and
    imports, so the implementations do not change each other's memory behaviour); the harness
    sends it one command at a time, so only one implementation runs at any moment."""

    def __init__(self, key: str, workload: str, config_dir: Path, x: np.ndarray,
                 y: np.ndarray, timeout: float) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, key, workload, str(config_dir),
                                                      x, y), daemon=True)
        self.proc.start()
        child.close()
        self.timeout = timeout

    def _recv(self) -> Any:
        deadline = time.monotonic() + self.timeout
        while not self.conn.poll(0.05):
            if not self.proc.is_alive() and not self.conn.poll(0):
                raise RuntimeError(f"worker exited with code {self.proc.exitcode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer within {self.timeout:g} s")
        try:
            status, value = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"worker exited with code {self.proc.exitcode}") from None
        if status != "ok":
            raise RuntimeError(value)
        return value

    def ready(self) -> Any:
        return self._recv()

    def call(self, cmd: str, arg: Any = None) -> Any:
        self.conn.send((cmd, arg))
        return self._recv()

    def close(self) -> None:
        self.proc.join(timeout=10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


def _split(steps: int, rounds: int) -> list[int]:
    rounds = max(1, min(rounds, steps))
    return [steps // rounds + (1 if r < steps % rounds else 0) for r in range(rounds)]


def measure(impls: dict[str, Impl], steps: int, warmup: int, rounds: int,
            gap: float = 0.0) -> None:
    """First call and warm-up of each implementation, then `rounds` rounds in which each takes
    its turn for steps/rounds timed steps (order rotating), then one more step for the final
    loss and one under tracemalloc for the peak memory."""
    def live() -> list[Impl]:
        return [i for i in impls.values() if i.error is None]

    for impl in live():
        try:
            impl.info.update(impl.client.call("first"))
            if warmup > 1:
                impl.client.call("warmup", warmup - 1)
        except Exception as e:
            impl.error = _error(e)
    for r, n in enumerate(_split(steps, rounds)):
        order = live()
        k = r % len(order) if order else 0
        for impl in order[k:] + order[:k]:
            if gap > 0:
                time.sleep(gap)  # let the previous turn's spinning worker threads go idle
            try:
                ts, faults = impl.client.call("run", n)
            except Exception as e:
                impl.error = _error(e)
                continue
            impl.times.extend(ts)
            impl.faults += faults
            impl.round_faults.append(faults)
            impl.round_medians.append(statistics.median(ts) * 1e3)
    for impl in live():
        try:
            impl.info.update(impl.client.call("finish"))
        except Exception as e:
            impl.error = _error(e)


def _summary(impl: Impl) -> dict[str, Any]:
    out: dict[str, Any] = {"label": LABELS[impl.key]}
    if impl.error is not None:
        out["error"] = impl.error
    ts = np.array(impl.times) * 1e3
    if len(ts):
        out.update(median_ms=float(np.median(ts)), p10_ms=float(np.percentile(ts, 10)),
                   p90_ms=float(np.percentile(ts, 90)), steps=len(ts),
                   minor_faults_per_step=impl.faults / len(ts),
                   minor_faults_per_round=impl.round_faults,
                   round_median_ms=impl.round_medians, times_ms=[float(t) for t in ts])
    out.update(impl.info)
    return out


# --------------------------------------------------------------------------- ratios, targets


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    if not a or not b or "median_ms" not in a or "median_ms" not in b:
        return None
    return a["median_ms"] / b["median_ms"]


PAIRS = {
    "static_over_floor": ("dlrun_static", "floor_reused"),
    "static_over_torch": ("dlrun_static", "torch_eager"),
    "eager_over_static": ("dlrun_eager", "dlrun_static"),
    "eager_over_torch": ("dlrun_eager", "torch_eager"),
    "floor_malloc_over_reused": ("floor_malloc", "floor_reused"),
    "torch_over_floor": ("torch_eager", "floor_reused"),
    "static_over_torch_loop": ("dlrun_static", "torch_loop"),
    "static_over_torch_compile": ("dlrun_static", "torch_compile"),
    "static_over_base": ("dlrun_static", "base_static"),
    "eager_over_base": ("dlrun_eager", "base_eager"),
}


def ratios(impls: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Ratios of the medians (the targets are defined on these)."""
    return {name: _ratio(impls.get(a), impls.get(b)) for name, (a, b) in PAIRS.items()}


def paired_ratios(impls: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """The same ratios as the median over rounds of each round's ratio of medians: steadier
    when the machine's load changes during the run (only in results.json)."""
    out: dict[str, float | None] = {}
    for name, (a, b) in PAIRS.items():
        ra = (impls.get(a) or {}).get("round_median_ms") or []
        rb = (impls.get(b) or {}).get("round_median_ms") or []
        n = min(len(ra), len(rb))
        out[name] = float(np.median([ra[i] / rb[i] for i in range(n)])) if n else None
    return out


def _target(tid: str, workload: str, text: str, measured: float | None, op: str,
            bound: float, implied: bool = False) -> dict[str, Any]:
    if measured is None or not np.isfinite(measured):
        status = "n/a"
    else:
        ok = {"<=": measured <= bound, "<": measured < bound, ">=": measured >= bound,
              ">": measured > bound}[op]
        status = "met" if ok else "missed"
    return {"id": tid, "workload": workload, "target": text, "measured": measured,
            "bound": f"{op} {bound:g}", "status": status, "implied": implied}


def _peak_ratio(static: dict[str, Any], eager: dict[str, Any]) -> float | None:
    if static.get("peak_step_bytes") is None or not eager.get("peak_step_bytes"):
        return None
    return static["peak_step_bytes"] / eager["peak_step_bytes"]


def _gpt_targets(r: dict[str, Any], static: dict[str, Any], eager: dict[str, Any]
                 ) -> list[dict[str, Any]]:
    """The targets of the nanoGPT-preset workload."""
    return [
        _target("static_speedup", "gpt", "eager / static", r["eager_over_static"], ">=", 1.3),
        _target("static_vs_torch", "gpt", "static / PyTorch eager", r["static_over_torch"],
                "<=", 1.0),
        _target("compile_time", "gpt", "static trace + compile seconds",
                static.get("compile_s"), "<", 1.0),
        _target("static_peak", "gpt", "static peak step memory / eager",
                _peak_ratio(static, eager), "<=", 0.2),
    ]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    implied_torch = {"linreg": 1.0, "mlp": 1.0, "cnn": 1.4, "lstm": 2.3}
    for w, res in results.items():
        r, im = res["ratios"], res["impls"]
        static, eager = im.get("dlrun_static", {}), im.get("dlrun_eager", {})
        if w == "gpt":
            out += _gpt_targets(r, static, eager)
            continue
        out.append(_target("static_vs_floor", w, "static / NumPy floor (buffers reused)",
                           r["static_over_floor"], "<=", 1.15))
        if w in implied_torch:
            out.append(_target("static_vs_torch", w, "static / PyTorch eager (implied)",
                               r["static_over_torch"], "<=", implied_torch[w], implied=True))
        if w == "lstm":
            out.append(_target("static_vs_torch_loop", w,
                               "static / PyTorch op-loop LSTM (implied: far below)",
                               r["static_over_torch_loop"], "<", 1.0, implied=True))
        if w in ("linreg", "lstm"):
            out.append(_target("static_speedup", w, "eager / static", r["eager_over_static"],
                               ">=", 2.0))
        else:
            out.append(_target("static_speedup", w, "eager / static", r["eager_over_static"],
                               ">", 1.0))
        if w in ("linreg", "mlp", "cnn"):
            out.append(_target("eager_vs_torch", w, "eager / PyTorch eager",
                               r["eager_over_torch"], "<=", 2.5))
        out.append(_target("static_faults", w, "static minor page faults per step (zero)",
                           static.get("minor_faults_per_step"), "<", ZERO_FAULTS))
        peak_ratio = None
        if static.get("peak_step_bytes") is not None and eager.get("peak_step_bytes"):
            peak_ratio = static["peak_step_bytes"] / eager["peak_step_bytes"]
        out.append(_target("static_peak", w, "static peak step memory / eager", peak_ratio,
                           "<", 1.0))
        out.append(_target("compile_time", w, "static trace + compile seconds",
                           static.get("compile_s"), "<", 1.0))
    return out


# --------------------------------------------------------------------------- machine, output


def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def _cpu_sample() -> dict[str, float] | None:
    """System-wide busy and steal CPU seconds (/proc/stat), this process tree's CPU seconds and
    the wall clock, to tell afterwards how much of the machine other processes took."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    ticks = [float(v) for v in fields]
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0.0)  # idle + iowait
    steal = ticks[7] if len(ticks) > 7 else 0.0
    guest = sum(ticks[8:10]) if len(ticks) > 9 else 0.0  # already counted in user/nice
    busy = sum(ticks) - idle - steal - guest
    t = os.times()
    return {"busy": busy / hz, "steal": steal / hz, "wall": time.monotonic(),
            "own": t.user + t.system + t.children_user + t.children_system}


def cpu_contention(start: dict[str, float] | None, end: dict[str, float] | None
                   ) -> dict[str, float] | None:
    """Shares of the machine's CPU capacity during the run: used by other processes (busy time
    not ours) and stolen by the hypervisor. Both should be near 0 for a clean measurement."""
    if not start or not end:
        return None
    capacity = (end["wall"] - start["wall"]) * (os.cpu_count() or 1)
    if capacity <= 0:
        return None
    other = (end["busy"] - start["busy"]) - (end["own"] - start["own"])
    return {"other_processes": max(other, 0.0) / capacity,
            "steal": (end["steal"] - start["steal"]) / capacity}


def machine_info(with_torch: bool) -> dict[str, Any]:
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    blas = None
    try:
        cfg = np.show_config(mode="dicts")
        b = cfg["Build Dependencies"]["blas"]
        blas = f"{b.get('name')} {b.get('version')}"
    except Exception:
        pass
    dirty = _git("status", "--porcelain", "--", "dlrun")
    info = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model or platform.processor() or None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas,
        "torch": torch_ref.version() if with_torch else None,
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                  "MKL_NUM_THREADS") if k in os.environ},
        "load_avg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "dlrun_commit": _git("rev-parse", "--short", "HEAD"),
        "dlrun_uncommitted_changes": bool(dirty) if dirty is not None else None,
    }
    return info


def _ms(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if v < 10 else f"{v:.2f}" if v < 100 else f"{v:.1f}"


def _bytes(v: int | None) -> str:
    if v is None:
        return "–"
    if v < 1024 * 1024:
        return f"{v / 1024:.1f} KiB"
    return f"{v / 2 ** 20:.2f} MiB"


def _x(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}x"


def _num(v: float | None, fmt: str = "{:.2f}") -> str:
    return "–" if v is None else fmt.format(v)


def _contention_lines(c: dict[str, float] | None) -> list[str]:
    if not c:
        return []
    line = (f"Other processes used {c['other_processes']:.0%} of the machine's CPU capacity "
            f"during the run, the hypervisor stole {c['steal']:.0%}.")
    if c["other_processes"] + c["steal"] > BUSY_WARNING:
        line += (" **The machine was busy: multi-threaded implementations (PyTorch, BLAS "
                 "GEMMs) suffer most and the ratios are noisy; rerun on an idle machine.**")
    return [line, ""]


def to_markdown(res: dict[str, Any]) -> str:
    m, s = res["machine"], res["settings"]
    lines = [
        "# dlrun benchmark",
        "",
        f"`{res['command']}` — {res['timestamp']}",
        "",
        f"Machine: {m['cpu_model']}, {m['cpu_count']} CPUs ({m['cpus_usable']} usable), "
        f"Python {m['python']}, NumPy {m['numpy']} ({m['blas']}), "
        + (f"PyTorch {m['torch']} ({m['torch_threads']} threads)" if m["torch"]
           else "PyTorch not measured")
        + (f", thread env {m['thread_env']}" if m["thread_env"] else "")
        + f"; dlrun {m['dlrun_commit']}"
        + (" + uncommitted engine changes" if m["dlrun_uncommitted_changes"] else "") + ".",
        "",
        *_contention_lines(m.get("cpu_contention")),
        f"Per-step times: median / p10 / p90 over {s['steps']} steps after {s['warmup']} warm-up "
        f"steps, implementations interleaved in {s['rounds']} rounds on the same fixed batch; "
        "faults = minor page faults per timed step; peak = tracemalloc peak during one step "
        "(– for PyTorch, whose allocations tracemalloc does not see); compile = trace + "
        "compile of the first static call.",
        "",
        "| workload | implementation | median ms | p10 ms | p90 ms | faults/step | peak step "
        "memory | compile s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for w, wr in res["workloads"].items():
        for impl in wr["impls"].values():
            if "error" in impl and "median_ms" not in impl:
                lines.append(f"| {w} | {impl['label']} | error: {impl['error'][:80]} "
                             "| | | | | |")
                continue
            compile_s = impl.get("compile_s")
            retr = impl.get("trace_count", 1)
            cs = "" if compile_s is None else f"{compile_s:.3f}" + (
                f" ({retr} traces)" if retr != 1 else "")
            lines.append(
                f"| {w} | {impl['label']} | {_ms(impl.get('median_ms'))} | "
                f"{_ms(impl.get('p10_ms'))} | {_ms(impl.get('p90_ms'))} | "
                f"{_num(impl.get('minor_faults_per_step'), '{:.2f}')} | "
                f"{_bytes(impl.get('peak_step_bytes'))} | {cs} |")
    lines += ["", "Data preparation (loader batch + batch_tensors, median ms, not part of a "
              "step): " + ", ".join(f"{w} {_ms(wr.get('data_ms'))}"
                                    for w, wr in res["workloads"].items()) + ".",
              "", "## Ratios (medians)", "",
              "| workload | static / floor reused | static / PyTorch | eager / static | "
              "eager / PyTorch | PyTorch / floor reused | floor malloc / reused | "
              "static / PyTorch op loop | static / torch.compile |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for w, wr in res["workloads"].items():
        r = wr["ratios"]
        lines.append(f"| {w} | {_x(r['static_over_floor'])} | {_x(r['static_over_torch'])} | "
                     f"{_x(r['eager_over_static'])} | {_x(r['eager_over_torch'])} | "
                     f"{_x(r['torch_over_floor'])} | {_x(r['floor_malloc_over_reused'])} | "
                     f"{_x(r['static_over_torch_loop'])} | "
                     f"{_x(r['static_over_torch_compile'])} |")
    if any(wr["ratios"].get("static_over_base") for wr in res["workloads"].values()):
        lines += ["", "## Against the baseline tree (medians; in brackets paired by round)", "",
                  "| workload | static now / baseline | eager now / baseline |", "|---|---:|---:|"]
        for w, wr in res["workloads"].items():
            r, pr = wr["ratios"], wr["ratios_paired_by_round"]
            lines.append(f"| {w} | {_x(r['static_over_base'])} ({_x(pr['static_over_base'])}) | "
                         f"{_x(r['eager_over_base'])} ({_x(pr['eager_over_base'])}) |")
    lines += ["", "## Targets", "", "| target | workload | measured | bound | status |",
              "|---|---|---:|---:|---|"]
    for t in res["targets"]:
        v = t["measured"]
        shown = "–" if v is None else (f"{v:.3f}" if t["id"] in ("compile_time",
                                                                  "static_faults")
                                       else f"{v:.2f}x")
        status = {"met": "met", "missed": "**missed**", "n/a": "n/a"}[t["status"]]
        lines.append(f"| {t['target']} | {t['workload']} | {shown} | {t['bound']} | "
                     f"{status} |")
    c = res["summary"]
    lines += ["", f"{c['met']} met, {c['missed']} missed, {c['n/a']} not measured "
              f"(of {c['total']}; rows marked implied restate the floor target against "
              "PyTorch with the reference machine's ratios)."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    p.add_argument("--steps", type=int, default=50, help="timed steps per implementation")
    p.add_argument("--warmup", type=int, default=10,
                   help="untimed steps first, the first call included")
    p.add_argument("--rounds", type=int, default=5, help="interleaving rounds")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    p.add_argument("--in-process", action="store_true",
                   help="run every implementation in this process instead of one worker "
                        "process each (faster to start; they then share one allocator, which "
                        "changes page faults and malloc costs)")
    p.add_argument("--gap", type=float, default=0.2,
                   help="seconds of pause before each turn, so that the BLAS/OpenMP threads of "
                        "the implementation that ran before stop spinning (0 to disable)")
    p.add_argument("--config-dir", type=Path, default=CONFIG_DIR)
    p.add_argument("--baseline", type=Path, default=None,
                   help="another dlrun source tree (e.g. `git worktree add ../base HEAD~3`): "
                        "its eager and static steps join the same interleaved rounds, so the "
                        "before/after ratios come from one run")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds to wait for any one answer from a worker")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 1 or args.rounds < 1:
        p.error("--steps, --warmup and --rounds must be >= 1")
    return args


def impl_keys(workload: str, with_torch: bool, baseline: bool = False) -> list[str]:
    keys = ["dlrun_eager", "dlrun_static"]
    if workload not in NO_FLOOR:
        keys += ["floor_reused", "floor_malloc"]
    if baseline:
        keys += ["base_eager", "base_static"]
    if with_torch:
        keys.append("torch_eager")
        if workload == "lstm":
            keys.append("torch_loop")
        if workload == "gpt":
            keys.append("torch_compile")
    return keys


def run_workload(workload: str, args: argparse.Namespace, with_torch: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    batch_error = None
    try:
        x, y, data_ms = fixed_batch(workload, args.config_dir)
    except Exception as e:  # dlrun broken mid-change: still measure the references
        batch_error, data_ms = _error(e), None
        _log(f"[{workload}] could not take the batch from dlrun ({batch_error}); using the "
             "floor's synthetic batch of the same shapes")
        f = floor_mod.make_floor(workload)
        x, y = f.make_batch(np.random.default_rng(0))
        if workload == "linreg":
            y = y.reshape(-1, 1)
    impls = {k: Impl(k) for k in impl_keys(workload, with_torch, args.baseline is not None)}
    where = "this process" if args.in_process else "one worker process each"
    _log(f"[{workload}] starting {', '.join(impls)} ({where})")
    for impl in impls.values():  # workers start (and import) in parallel
        try:
            impl.client = (LocalClient(impl.key, workload, args.config_dir, x, y)
                           if args.in_process else
                           WorkerClient(impl.key, workload, args.config_dir, x, y,
                                        args.timeout))
        except Exception as e:
            impl.error = _error(e)
    for impl in impls.values():
        if impl.error is None:
            try:
                impl.info.update(impl.client.ready())
            except Exception as e:
                impl.error = _error(e)
    _log(f"[{workload}] timing {args.steps} steps each after {args.warmup} warm-up steps, "
         f"{len(_split(args.steps, args.rounds))} rounds")
    try:
        measure(impls, args.steps, args.warmup, args.rounds, args.gap)
    finally:
        for impl in impls.values():
            if impl.client is not None:
                impl.client.close()
    summaries = {k: _summary(v) for k, v in impls.items()}
    for k, v in summaries.items():
        if "error" in v:
            _log(f"[{workload}] {k}: {v['error']}")
    _log(f"[{workload}] done in {time.perf_counter() - t0:.1f} s")
    batch = {"x": [list(x.shape), str(x.dtype)], "y": [list(y.shape), str(y.dtype)],
             "source": "dlrun loader" if batch_error is None else "floor.make_batch"}
    if batch_error is not None:
        batch["dlrun_error"] = batch_error
    return {"batch": batch, "data_ms": data_ms, "impls": summaries, "ratios": ratios(summaries),
            "ratios_paired_by_round": paired_ratios(summaries)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.baseline is not None:
        os.environ[BASELINE_ENV] = str(args.baseline.resolve())
    with_torch = not args.no_torch and (torch_ref.available() if args.in_process
                                        else torch_ref.installed())
    shown = sys.argv[1:] if argv is None else list(argv)
    res: dict[str, Any] = {
        "command": " ".join(["python benchmarks/run.py", *shown]),
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "settings": {"steps": args.steps, "warmup": args.warmup,
                     "rounds": len(_split(args.steps, args.rounds)),
                     "workloads": list(args.workloads), "torch": with_torch,
                     "in_process": args.in_process, "zero_faults_threshold": ZERO_FAULTS},
        "machine": machine_info(with_torch),
        "workloads": {},
    }
    start = _cpu_sample()
    for w in args.workloads:
        res["workloads"][w] = run_workload(w, args, with_torch)
    res["machine"]["cpu_contention"] = cpu_contention(start, _cpu_sample())
    res["machine"]["load_avg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    threads = [i.get("torch_threads") for wr in res["workloads"].values()
               for i in wr["impls"].values() if i.get("torch_threads") is not None]
    res["machine"]["torch_threads"] = threads[0] if threads else None
    res["targets"] = targets(res["workloads"])
    counts = {s: sum(t["status"] == s for t in res["targets"]) for s in ("met", "missed", "n/a")}
    res["summary"] = {**counts, "total": len(res["targets"])}
    md = to_markdown(res)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    (args.out / "results.md").write_text(md)
    print(md)
    return res


if __name__ == "__main__":
    main()
