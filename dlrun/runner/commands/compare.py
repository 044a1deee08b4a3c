"""Eager vs static on the same experiment: do they compute the same numbers, and what does the
static graph buy (step time, memory, page faults)? Ratios are measured in one process."""

from __future__ import annotations

import json
import resource
import statistics
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

import dlrun
from dlrun.backend import normalize_device, synchronize
from dlrun.config import ExperimentConfig
from dlrun.engine.eager import EAGER
from dlrun.errors import DeviceError
from dlrun.runner.events import Callback, Message, emit
from dlrun.runner.experiment import Experiment, batch_tensors, build_experiment
from dlrun.runner.io.rundir import atomic_write_text, create_run_dir

MODES = ("eager", "static")


def _batches(exp: Experiment, n: int) -> list[tuple[Any, Any]]:
    """The first n training batches (repeating epochs as needed), as tensors; on several
    ranks only full global batches (each rank's share is then the same, 1/ranks)."""
    out = []
    full = exp.cfg.train.step_batch_size
    while len(out) < n:
        for xb, yb in exp.train_loader:
            if exp.parallel is not None and exp.train_loader.global_rows != full:
                continue
            out.append(batch_tensors(exp, xb.copy(), yb.copy()))
            if len(out) == n:
                break
    return out


def _param_arrays(exp: Experiment) -> list[np.ndarray]:
    return [p.numpy().copy() for p in exp.model.parameters()]


def compare(cfg: ExperimentConfig, steps: int = 50, warmup: int = 10, timed: int = 200,
            callbacks: list[Callback] | None = None, world: Any = None,
            cuda_graphs: bool = False) -> dict[str, Any]:
    """Run `steps` training steps in each mode from the same seed and compare the losses and the
    final parameters; then time `timed` more steps per mode, interleaved in rounds, after
    `warmup` steps, and measure peak traced memory and minor page faults per step. With `world`
    (several ranks) every rank does the same, and the all-reduce per step is reported too. On a
    GPU each mode also gets its device time (CUDA events) and launches and host syncs per step;
    `cuda_graphs` adds the static step replayed as a CUDA graph, beside plain static."""
    callbacks = list(callbacks or [])
    if cuda_graphs and normalize_device(cfg.device) == "cpu":
        raise DeviceError("--cuda-graphs needs a CUDA device (--device cuda)")
    rtol = 1e-5 if cfg.dtype == "float32" else 1e-10
    rtol = {"fp16": 1e-3, "bf16": 1e-2}.get(cfg.precision, rtol)  # mixed precision's rounding
    report: dict[str, Any] = {"name": cfg.name, "steps": steps, "dtype": cfg.dtype,
                              "precision": cfg.precision,
                              "tolerance": rtol, "batch_size": cfg.train.batch_size,
                              "accumulate": cfg.train.accumulate}
    exps, batches = _agreement(cfg, steps, callbacks, world, report)
    emit(callbacks, Message(f"timing {timed} steps per mode after {warmup} warm-up steps"))
    x, y = batches[0]
    times, reduce_times = _timings(exps, x, y, warmup, timed, world, report["device"])
    for mode in MODES:
        report[mode].update(_mode_figures(cfg, exps[mode], times[mode], reduce_times[mode],
                                          x, y, world))
    report["speedup"] = report["eager"]["median_step_ms"] / report["static"]["median_step_ms"]
    if report["device"] != "cpu":
        for mode in MODES:
            report[mode].update(_cuda_figures(exps[mode], x, y))
    if cuda_graphs:
        report["static_cuda_graph"] = _with_cuda_graph(cfg, batches[:steps], report, world)
    return report


def _agreement(cfg: ExperimentConfig, steps: int, callbacks: list[Callback], world: Any,
               report: dict[str, Any]) -> tuple[dict[str, Experiment], list[tuple[Any, Any]]]:
    """`steps` training steps per mode from the same seed and batches; the losses and how far
    they and the final parameters differ go into `report`. The experiments and the batches."""
    exps: dict[str, Experiment] = {}
    batches = None
    for mode in MODES:
        emit(callbacks, Message(f"{mode}: {steps} training steps from seed {cfg.seed}"))
        exp = build_experiment(cfg.model_copy(update={"mode": mode}), world=world)
        batches = batches or _batches(exp, max(steps, 1))
        dlrun.manual_seed(cfg.seed + 1)  # the same dropout masks in both modes
        losses = [float(exp.train_step(x, y).item()) for x, y in batches[:steps]]
        report[mode] = {"losses": losses, "final_loss": losses[-1] if losses else None}
        exps[mode] = exp
    report["device"] = exps["eager"].device
    report["workers"] = 1 if world is None else world.size
    a, b = (np.array(report[m]["losses"]) for m in MODES)
    loss_err = float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-30))) if steps else 0.0
    pa, pb = (_param_arrays(exps[m]) for m in MODES)
    # largest difference relative to each array's scale (elementwise ratios blow up near zero)
    param_err = max((float(np.max(np.abs(x - y)) / max(float(np.max(np.abs(x))), 1e-12))
                     for x, y in zip(pa, pb, strict=True)), default=0.0)
    report["max_rel_loss_diff"] = loss_err
    report["max_rel_param_diff"] = param_err
    report["agree"] = bool(loss_err <= report["tolerance"] and np.isfinite(loss_err))
    assert batches is not None
    return exps, batches


def _timings(exps: dict[str, Experiment], x: Any, y: Any, warmup: int, timed: int, world: Any,
             device: str) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Step times per mode (and all-reduce times on several ranks): `warmup` steps each, then
    `timed` steps per mode in 10 interleaved rounds."""
    times: dict[str, list[float]] = {m: [] for m in MODES}
    reduce_times: dict[str, list[float]] = {m: [] for m in MODES}
    for mode in MODES:
        for _ in range(warmup):
            exps[mode].train_step(x, y)
    rounds = 10
    per_round = max(timed // rounds, 1)
    for _ in range(rounds):
        for mode in MODES:
            step = exps[mode].train_step
            for _ in range(per_round):
                t0 = time.perf_counter()
                step(x, y)
                synchronize(device)
                times[mode].append(time.perf_counter() - t0)
                if world is not None:
                    reduce_times[mode].append(len(world.communicator.stats.seconds))
    return times, reduce_times


def _mode_figures(cfg: ExperimentConfig, exp: Experiment, ts: list[float],
                  reduce_ts: list[float], x: Any, y: Any, world: Any) -> dict[str, Any]:
    """One mode's step-time statistics, memory, operations per step, all-reduce time and, in
    static mode, what tracing and the passes did."""
    info: dict[str, Any] = {
        "median_step_ms": statistics.median(ts) * 1e3,
        "p10_step_ms": float(np.percentile(ts, 10)) * 1e3,
        "p90_step_ms": float(np.percentile(ts, 90)) * 1e3,
        "throughput": cfg.train.step_batch_size / statistics.median(ts),
    }
    info.update(_memory(exp, x, y))
    info["ops_per_step"] = _ops_per_step(exp, x, y)
    if world is not None:
        info.update(_reduce_figures(world.communicator.stats, reduce_ts, exp.parallel.buckets))
    if exp.cfg.mode == "static":
        info.update(_static_figures(exp.train_step))
    return info


def _static_figures(step: Any) -> dict[str, Any]:
    """What tracing and the passes did: the first trace of each compiled part of the step
    (one; two with gradient accumulation: the micro-step and the update), summed."""
    parts = getattr(step, "parts", {"train_step": step})
    records = [f.traces[0] for f in parts.values()]
    kernels: dict[str, Any] = {}
    for r in records:
        for k, v in r.kernels.items():
            summable = isinstance(v, int | float) and not isinstance(v, bool)
            kernels[k] = kernels.get(k, 0) + v if summable else v
    return {"traces": step.trace_count,
            "compile_ms": sum(r.seconds for r in records) * 1e3,
            "kernels": kernels,
            "nodes_before": sum(r.report.traced_nodes for r in records),
            "nodes_after": sum(r.report.final_nodes for r in records),
            "passes": records[0].report.as_dict()}


def _reduce_figures(stats: Any, ends: list[float], k: int) -> dict[str, Any]:
    """All-reduce time per timed step (`ends`: how many all-reduces had been made when each
    ended): held up, under way, the share hidden behind the backward pass, and bytes."""
    from dlrun.runner.parallel import overlapped

    held, flying = zip(*(stats.step(int(e), k) for e in ends), strict=True)
    held, flying = list(held), list(flying)
    return {"all_reduce_ms": statistics.median(held) * 1e3,
            "all_reduce_in_flight_ms": statistics.median(flying) * 1e3,
            "all_reduce_overlapped": overlapped(held, flying),
            "all_reduces_per_step": k, "all_reduce_bytes": sum(stats.bytes[-k:])}


def _cuda_figures(exp: Experiment, x: Any, y: Any, steps: int = 20) -> dict[str, Any]:
    """Device time per step (CUDA events) and launches, kernels and host syncs per step
    (torch.profiler, when PyTorch is installed) of a step on a GPU."""
    from dlrun.backend import get_xp
    from dlrun.runner.commands import cuda_measure

    def step() -> None:
        exp.train_step(x, y)

    out: dict[str, Any] = {
        "device_ms_per_step": cuda_measure.event_time_ms(step, steps, get_xp(exp.device))}
    counts = cuda_measure.profile_counts(step, steps, lambda: synchronize(exp.device))
    if counts is not None:
        out.update(launches_per_step=counts["launch_calls"], kernels_per_step=counts["kernels"],
                   syncs_per_step=counts["syncs"])
    return out


def _with_cuda_graph(cfg: ExperimentConfig, batches: list, report: dict[str, Any],
                     world: Any) -> dict[str, Any]:
    """The static step replayed as a CUDA graph: the same losses as plain static? what does it
    cost per step (beside report['static'])? Why not, when it could not be captured."""
    exp = build_experiment(cfg.model_copy(update={"mode": "static", "cuda_graphs": True}),
                           world=world)
    dlrun.manual_seed(cfg.seed + 1)
    losses = [float(exp.train_step(x, y).item()) for x, y in batches]
    plain = np.array(report["static"]["losses"])
    diff = float(np.max(np.abs(np.array(losses) - plain) / np.maximum(np.abs(plain), 1e-30))
                 ) if losses else 0.0
    entry = exp.train_step.last
    x, y = batches[0]
    return {"losses": losses, "max_rel_loss_diff_vs_static": diff,
            "captured": entry.cuda_graph is not None, "why_not": entry.graph_blocker,
            **_cuda_figures(exp, x, y)}


def _ops_per_step(exp: Experiment, x: Any, y: Any) -> int:
    """Array operations one step dispatches: primitives applied (eager) or calls in the plan
    (static; a fused chain counts each step on the CPU — on CUDA it is one kernel)."""
    step = exp.train_step
    if hasattr(step, "last"):  # compiled
        step(x, y)
        if hasattr(step, "plan_calls"):  # accumulation: the micro-steps and the update
            return step.plan_calls()
        return step.last.plan.calls
    before = EAGER.ops
    step(x, y)
    return EAGER.ops - before


def _memory(exp: Experiment, x: Any, y: Any, steps: int = 5) -> dict[str, float]:
    """Minor page faults per step and the peak of memory traced during a step."""
    step = exp.train_step
    step(x, y)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        step(x, y)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        step(x, y)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return {"minor_faults_per_step": faults, "peak_mem_bytes": int(peak)}


def write_report(report: dict[str, Any], root: Path | str) -> Path:
    """A run directory with report.json, report.md and losses.png (the two trajectories)."""
    run_dir = create_run_dir(root, f"{report['name']}-compare")
    atomic_write_text(run_dir / "report.json", json.dumps(report, indent=2))
    atomic_write_text(run_dir / "report.md", markdown(report))
    try:
        from dlrun.runner.io.plots import line_chart

        steps = list(range(1, report["steps"] + 1))
        line_chart(run_dir / "plots" / "losses.png",
                   {m: (steps, report[m]["losses"]) for m in MODES},
                   title=f"{report['name']}: training loss, eager vs static", xlabel="step",
                   ylabel="loss")
    except ImportError:
        pass
    return run_dir


def _graph_line(g: dict[str, Any]) -> str:
    if not g["captured"]:
        return f"Static + CUDA graph: not captured ({g['why_not']})."
    counts = (f", {g['launches_per_step']:.0f} launches and {g['syncs_per_step']:.1f} host "
              "syncs per step" if "launches_per_step" in g else "")
    return (f"Static + CUDA graph: {g['device_ms_per_step']:.3f} ms device time per step"
            f"{counts}; losses within {g['max_rel_loss_diff_vs_static']:.1e} of plain static.")


def kernels_line(kernels: dict[str, Any]) -> str:
    """How the static plan's fused chains run: native kernels made cold or loaded warm."""
    if kernels.get("backend") != "numba":
        return "NumPy calls"
    made = [f"{kernels[k]} {k}" for k in ("compiled", "loaded", "reused") if kernels.get(k)]
    text = f"Numba: {', '.join(made) or 'none needed'} ({kernels.get('seconds', 0):.2f} s)"
    if kernels.get("fallbacks"):
        text += f", {kernels['fallbacks']} left to NumPy"
    return text


def markdown(report: dict[str, Any]) -> str:
    e, s = report["eager"], report["static"]
    rows = [
        ("median step (ms)", f"{e['median_step_ms']:.3f}", f"{s['median_step_ms']:.3f}"),
        ("p10 / p90 (ms)", f"{e['p10_step_ms']:.3f} / {e['p90_step_ms']:.3f}",
         f"{s['p10_step_ms']:.3f} / {s['p90_step_ms']:.3f}"),
        ("throughput (samples/s)", f"{e['throughput']:,.0f}", f"{s['throughput']:,.0f}"),
        ("peak memory in a step (MB)", f"{e['peak_mem_bytes'] / 1e6:.2f}",
         f"{s['peak_mem_bytes'] / 1e6:.2f}"),
        ("minor page faults / step", f"{e['minor_faults_per_step']:.1f}",
         f"{s['minor_faults_per_step']:.1f}"),
        ("array operations / step", str(e["ops_per_step"]), str(s["ops_per_step"])),
        ("trace + compile (ms)", "-", f"{s['compile_ms']:.1f}"),
        ("CPU kernels", "-", kernels_line(s.get("kernels") or {})),
        ("traces", "-", str(s["traces"])),
        ("graph nodes before → after passes", "-", f"{s['nodes_before']} → {s['nodes_after']}"),
        ("final loss", f"{e['final_loss']:.6g}", f"{s['final_loss']:.6g}"),
    ]
    if report.get("workers", 1) > 1:
        rows[3:3] = [
            ("all-reduce / step (ms)", f"{e['all_reduce_ms']:.3f}", f"{s['all_reduce_ms']:.3f}"),
            ("all-reduce / step (bytes)", f"{e['all_reduce_bytes']:,}",
             f"{s['all_reduce_bytes']:,}"),
            ("all-reduce under way / step (ms)", f"{e['all_reduce_in_flight_ms']:.3f}",
             f"{s['all_reduce_in_flight_ms']:.3f}"),
            ("all-reduce hidden behind backward", _share(e["all_reduce_overlapped"]),
             _share(s["all_reduce_overlapped"]))]
    where = report["device"] + (f", {report['workers']} workers (per rank; the batch is "
                                 f"global)" if report.get("workers", 1) > 1 else "")
    if report.get("accumulate", 1) > 1:
        where += (f"; a step accumulates {report['accumulate']} micro-batches of "
                  f"{report['batch_size']}")
    lines = [f"# {report['name']}: eager vs static on {where}", "",
             "| | eager | static |", "|---|---:|---:|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    if "device_ms_per_step" in e:
        lines += [f"| device time / step (ms, CUDA events) | {e['device_ms_per_step']:.3f} | "
                  f"{s['device_ms_per_step']:.3f} |"]
    if "launches_per_step" in e:
        lines += [f"| launches / host syncs per step | {e['launches_per_step']:.0f} / "
                  f"{e['syncs_per_step']:.1f} | {s['launches_per_step']:.0f} / "
                  f"{s['syncs_per_step']:.1f} |"]
    g = report.get("static_cuda_graph")
    if g is not None:
        lines += ["", _graph_line(g)]
    verdict = "agree" if report["agree"] else "DISAGREE"
    lines += ["", f"Speedup: **{report['speedup']:.2f}x**. Losses over {report['steps']} steps "
              f"{verdict}: largest relative difference {report['max_rel_loss_diff']:.2e} "
              f"(tolerance {report['tolerance']:.0e}); final parameters differ by at most "
              f"{report['max_rel_param_diff']:.2e} of their scale.", ""]
    return "\n".join(lines)


def _share(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"
