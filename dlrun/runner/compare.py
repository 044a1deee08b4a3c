"""Eager vs static on the same experiment: do they compute the same numbers, and what does the
static graph buy (step time, memory, page faults)? Ratios are measured in one process."""

from __future__ import annotations

import resource
import statistics
import time
import tracemalloc
from typing import Any

import numpy as np

import dlrun
from dlrun.backend import synchronize
from dlrun.config import ExperimentConfig
from dlrun.runner.events import Callback, Message, emit
from dlrun.runner.experiment import Experiment, batch_tensors, build_experiment

MODES = ("eager", "static")


def _batches(exp: Experiment, n: int) -> list[tuple[Any, Any]]:
    """The first n training batches (repeating epochs as needed), as tensors."""
    out = []
    while len(out) < n:
        for xb, yb in exp.train_loader:
            out.append(batch_tensors(exp, xb.copy(), yb.copy()))
            if len(out) == n:
                break
    return out


def _build(cfg: ExperimentConfig, mode: str) -> Experiment:
    return build_experiment(cfg.model_copy(update={"mode": mode}))


def _param_arrays(exp: Experiment) -> list[np.ndarray]:
    return [p.numpy().copy() for p in exp.model.parameters()]


def compare(cfg: ExperimentConfig, steps: int = 50, warmup: int = 10, timed: int = 200,
            callbacks: list[Callback] | None = None) -> dict[str, Any]:
    """Run `steps` training steps in each mode from the same seed and compare the losses and the
    final parameters; then time `timed` more steps per mode, interleaved in rounds, after
    `warmup` steps, and measure peak traced memory and minor page faults per step."""
    callbacks = list(callbacks or [])
    rtol = 1e-5 if cfg.dtype == "float32" else 1e-10
    result: dict[str, Any] = {"name": cfg.name, "steps": steps, "dtype": cfg.dtype,
                              "tolerance": rtol, "modes": {}}
    exps: dict[str, Experiment] = {}
    batches = None
    for mode in MODES:
        emit(callbacks, Message(f"{mode}: {steps} training steps from seed {cfg.seed}"))
        exp = _build(cfg, mode)
        batches = batches or _batches(exp, max(steps, 1))
        dlrun.manual_seed(cfg.seed + 1)  # the same dropout masks in both modes
        losses = [float(exp.train_step(x, y).item()) for x, y in batches[:steps]]
        result["modes"][mode] = {"losses": losses}
        exps[mode] = exp
    a, b = (np.array(result["modes"][m]["losses"]) for m in MODES)
    loss_err = float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-30))) if steps else 0.0
    pa, pb = (_param_arrays(exps[m]) for m in MODES)
    param_err = max((float(np.max(np.abs(x - y) / np.maximum(np.abs(x), 1e-6)))
                     for x, y in zip(pa, pb, strict=True)), default=0.0)
    result["agreement"] = {"max_loss_rel_diff": loss_err, "max_param_rel_diff": param_err,
                           "agree": bool(loss_err <= rtol and np.isfinite(loss_err))}

    emit(callbacks, Message(f"timing {timed} steps per mode after {warmup} warm-up steps"))
    x, y = batches[0]
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for mode in MODES:
        for _ in range(warmup):
            exps[mode].train_step(x, y)
    rounds = 10
    per_round = max(timed // rounds, 1)
    device = exps["eager"].device
    for _ in range(rounds):
        for mode in MODES:
            step = exps[mode].train_step
            for _ in range(per_round):
                t0 = time.perf_counter()
                step(x, y)
                synchronize(device)
                times[mode].append(time.perf_counter() - t0)
    for mode in MODES:
        exp, ts = exps[mode], times[mode]
        info = result["modes"][mode]
        info["median_ms"] = statistics.median(ts) * 1e3
        info["p10_ms"] = float(np.percentile(ts, 10)) * 1e3
        info["p90_ms"] = float(np.percentile(ts, 90)) * 1e3
        info.update(_memory(exp, x, y))
        if hasattr(exp.train_step, "trace_count"):
            info["trace_count"] = exp.train_step.trace_count
            entry = exp.train_step.last
            info["graph"] = entry.graph.counts() if entry else {}
            info["passes"] = exp.train_step.traces[-1].report.as_dict()
    result["speedup"] = result["modes"]["eager"]["median_ms"] / result["modes"]["static"][
        "median_ms"]
    return result


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
    return {"minor_faults_per_step": faults, "peak_step_bytes": int(peak)}
