"""`make gpu-check`: the one prepared script proving the CUDA path on a lent GPU, in < 8 minutes.

    python benchmarks/gpu_check.py [--device cuda] [--quick] [--out DIR] [--budget 450]

Parts, each in a subprocess with its own timeout, all under one overall budget:
1. `pytest -m gpu` (every primitive on CuPy against NumPy, models, CUDA graphs, mixed precision);
2. per workload (configs/bench/*.yaml): dlrun eager, static and static + CUDA graph, PyTorch
   eager and torch.compile on the same shapes: device ms/step (CUDA events), launch calls,
   kernels and host syncs per step (torch.profiler/CUPTI), peak device memory;
3. `dlrun compare --device D [--cuda-graphs]` on every bench config (eager == static on the
   device; on a GPU also launches and device time per step, with and without a CUDA graph).
Writes results.json and results.md into $OUT (or ./gpu-check-out). `--device cpu --quick` runs
the same plumbing on a CPU machine (tests/benchmarks/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# module the GPU machine may lack -> the wheels that provide it and what it needs (no numpy:
# the machine's own, which its CuPy and PyTorch were built against, must stay in charge)
WHEELS = {
    "pydantic": ["pydantic", "pydantic-core", "annotated-types", "typing-extensions",
                 "typing-inspection"],
    "scipy": ["scipy"],
    "ml_dtypes": ["ml-dtypes"],
    "pytest": ["pytest", "iniconfig", "pluggy", "packaging", "pygments"],
}
WORKLOADS = ("linreg", "mlp", "cnn", "lstm", "gpt")
IMPLS = ("dlrun_eager", "dlrun_static", "dlrun_static_graph", "torch_eager", "torch_compile")


def missing_wheels(importable: Any = None) -> list[str]:
    """The wheels to install: those of every module in WHEELS that does not import here."""
    import importlib.util

    importable = importable or (lambda m: importlib.util.find_spec(m) is not None)
    return [w for mod, wheels in WHEELS.items() if not importable(mod) for w in wheels]


def install(wheel_dir: Path, target: Path) -> int:
    """pip install the missing wheels from wheel_dir (no index: the GPU machine is offline)
    into target, which `make gpu-check` puts first on PYTHONPATH."""
    wheels = missing_wheels()
    if not wheels:
        return 0
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
           "--find-links", str(wheel_dir), "--target", str(target), *wheels]
    print("installing:", " ".join(wheels), flush=True)
    return subprocess.run(cmd).returncode


def _run(cmd: list[str], timeout: float, log: Path) -> dict[str, Any]:
    """Run a part; its output goes to `log` (kept in $OUT even when the part is killed)."""
    t0 = time.monotonic()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    with log.open("w") as f:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env,
                                timeout=max(timeout, 1)).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    text = log.read_text(errors="replace")
    return {"rc": rc, "seconds": round(time.monotonic() - t0, 1), "tail": text[-1500:],
            "log": log.name}


def _steps(quick: bool) -> tuple[int, int]:
    return (2, 3) if quick else (5, 20)  # (warm-up, measured)


def _dlrun_step(workload: str, device: str, mode: str, graphs: bool) -> tuple[Any, Any]:
    """A no-argument training step of the bench config, and the experiment."""
    from dlrun.config import load_config
    from dlrun.runner.experiment import batch_tensors, build_experiment

    cfg = load_config(ROOT / "configs" / "bench" / f"{workload}.yaml",
                      [f"mode={mode}", f"device={device}", f"cuda_graphs={str(graphs).lower()}"])
    exp = build_experiment(cfg)
    xb, yb = next(iter(exp.train_loader))
    x, y = batch_tensors(exp, xb.copy(), yb.copy())
    return (lambda: exp.train_step(x, y)), exp


def _measure_one(step: Any, device: str, quick: bool, torch_side: bool) -> dict[str, Any]:
    """Warm up, then time (CUDA events on the GPU, wall clock on the CPU), count and peak."""
    from dlrun.runner.commands import cuda_measure as cm

    warm, n = _steps(quick)
    for _ in range(warm):
        step()
    if device == "cpu":
        return {"ms_per_step": cm.wall_time_ms(step, n, lambda: None)}
    import cupy

    if torch_side:
        import torch

        sync = torch.cuda.synchronize
        ms = cm.wall_time_ms(step, 1, sync)  # the cache warm; events below are the figure
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            step()
        end.record()
        end.synchronize()
        ms = start.elapsed_time(end) / n
        peak = cm.torch_peak_bytes(step)
    else:
        sync = cupy.cuda.Device().synchronize
        ms = cm.event_time_ms(step, n, cupy)
        peak = cm.cupy_peak_bytes(step, cupy)
    out = {"ms_per_step": ms, "wall_ms_per_step": cm.wall_time_ms(step, n, sync),
           "peak_bytes": peak}
    out.update(cm.profile_counts(step, 5, sync) or {})
    return out


def measure(workload: str, device: str, quick: bool) -> dict[str, Any]:
    """Every implementation of one workload; an implementation that fails says why."""
    res: dict[str, Any] = {}
    for impl in IMPLS:
        if impl == "dlrun_static_graph" and device == "cpu":
            continue
        if impl == "torch_compile" and quick:
            continue
        try:
            if impl.startswith("dlrun"):
                mode = "eager" if impl == "dlrun_eager" else "static"
                step, exp = _dlrun_step(workload, device, mode, impl.endswith("graph"))
                res[impl] = _measure_one(step, device, quick, torch_side=False)
                if impl.endswith("graph"):
                    entry = exp.train_step.last
                    res[impl]["graph"] = entry.cuda_graph is not None
                    res[impl]["graph_blocker"] = entry.graph_blocker
                continue
            from benchmarks import torch_ref

            _, exp = _dlrun_step(workload, "cpu", "eager", False)
            xb, yb = next(iter(exp.train_loader))
            step = torch_ref.make_step(workload, xb, yb, compiled=impl == "torch_compile",
                                       device=device)
            res[impl] = _measure_one(step, device, quick, torch_side=True)
        except Exception as e:  # reported in the table, the other implementations go on
            res[impl] = {"error": f"{type(e).__name__}: {e}"[:400]}
    return res


def _env(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"python": platform.python_version(), "device": device}
    for mod in ("numpy", "cupy", "torch", "ml_dtypes", "pydantic"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001 - any import failure is a finding
            info[mod] = f"unavailable ({type(e).__name__})"
    if device != "cpu":
        try:
            import cupy

            props = cupy.cuda.runtime.getDeviceProperties(0)
            info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) \
                else props["name"]
            info["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        except Exception as e:  # noqa: BLE001
            info["gpu"] = f"unavailable ({e})"
    return info


def markdown(results: dict[str, Any]) -> str:
    """The table: per workload and implementation, time, launches, syncs, peak memory."""
    env = results["env"]
    lines = [f"# gpu-check on {env.get('gpu', env['device'])}", "",
             f"python {env['python']}, cupy {env.get('cupy')}, torch {env.get('torch')}", "",
             f"pytest -m gpu: rc {results['pytest'].get('rc')} "
             f"({results['pytest'].get('seconds')} s)", "",
             "| workload | implementation | device ms/step | launch calls/step | kernels/step "
             "| host syncs/step | peak MB |", "|---|---|---:|---:|---:|---:|---:|"]

    def f(v: Any, fmt: str) -> str:
        return "–" if v is None else format(v, fmt)

    for w, impls in results["measure"].items():
        for impl, r in impls.items() if isinstance(impls, dict) else []:
            if "error" in r:
                lines.append(f"| {w} | {impl} | error: {r['error'][:80]} | | | | |")
                continue
            peak = r.get("peak_bytes")
            lines.append(
                f"| {w} | {impl} | {f(r.get('ms_per_step'), '.3f')} | "
                f"{f(r.get('launch_calls'), '.1f')} | {f(r.get('kernels'), '.1f')} | "
                f"{f(r.get('syncs'), '.2f')} | {f(peak and peak / 1e6, '.1f')} |")
    lines += ["", "| compare | rc | agree | speedup |", "|---|---|---|---:|"]
    for w, c in results["compare"].items():
        rep = c.get("report") or {}
        lines.append(f"| {w} | {c.get('rc')} | {rep.get('agree', '–')} | "
                     f"{f(rep.get('speedup'), '.2f')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="few steps, no torch.compile")
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu-check-out")
    ap.add_argument("--budget", type=float, default=450.0, help="overall seconds")
    ap.add_argument("--workloads", nargs="*", default=list(WORKLOADS))
    ap.add_argument("--skip-pytest", action="store_true")
    ap.add_argument("--install", nargs=2, metavar=("WHEEL_DIR", "TARGET"),
                    help="install the missing wheels, then exit")
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one workload, JSON out
    args = ap.parse_args(argv)
    if args.install:
        return install(Path(args.install[0]), Path(args.install[1]))
    if args.measure:
        print(json.dumps(measure(args.measure, args.device, args.quick)))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget
    left = lambda cap: min(cap, deadline - time.monotonic())  # noqa: E731
    py = sys.executable
    results: dict[str, Any] = {"env": _env(args.device), "measure": {}, "compare": {},
                               "pytest": {"rc": "skipped"}}
    if not args.skip_pytest:
        results["pytest"] = _run([py, "-m", "pytest", "-m", "gpu", "-v", "-p",
                                  "no:cacheprovider", "-rfE"], left(180), out / "pytest-gpu.log")
    quick = ["--quick"] if args.quick else []
    for w in args.workloads:
        part = _run([py, str(Path(__file__)), "--measure", w, "--device", args.device, *quick],
                    left(60), out / f"measure-{w}.log")
        lines = [s for s in part["tail"].splitlines() if s.startswith("{")]
        results["measure"][w] = json.loads(lines[-1]) if lines else {"part": part}
    steps = ["--steps", "3", "--timed", "5", "--warmup", "1"] if args.quick else \
        ["--steps", "20", "--timed", "40", "--warmup", "5"]
    for w in args.workloads:
        js = out / f"compare-{w}.json"
        part = _run([py, "-m", "dlrun", "compare", str(ROOT / "configs" / "bench" / f"{w}.yaml"),
                     "--device", args.device, "--json", str(js), "--runs-dir",
                     str(out / "runs"), *steps,
                     *(["--cuda-graphs"] if args.device != "cpu" else [])],
                    left(30), out / f"compare-{w}.log")
        part["report"] = json.loads(js.read_text()) if js.exists() else None
        results["compare"][w] = part
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
