"""Where a static training step spends its time: each line of the compiled plan timed.

    .venv/bin/python benchmarks/profile_plan.py cnn              # a bench workload
    .venv/bin/python benchmarks/profile_plan.py configs/mnist_cnn.yaml --steps 20 --top 15

Builds the experiment in static mode, runs a few steps, then re-compiles the plan's generated
source with a timer after every line and runs `--steps` more steps on the same batch. Prints the
median step time, the slowest lines (the node's op, attributes and shapes) and the time per op
kind. The timers add ~0.1 us per line, so the line sum runs a little above the step time on
plans of thousands of lines; use benchmarks/run.py for the figures you report.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _label(node: Any, by_id: dict[int, Any]) -> str:
    if node.op == "fused":
        what = "fused " + "·".join(step[0] for step in node.attrs["program"])
    else:
        attrs = {k: v for k, v in node.attrs.items() if k not in ("value", "indices")}
        what = f"{node.op} {attrs}" if attrs else node.op
    shapes = " ".join(str(by_id[i].shape) for i in node.inputs)
    return f"{what} -> {node.shape} <- {shapes}"


def instrument(plan: Any, timers: list[float]) -> tuple[Any, list[str | None]]:
    """The plan's generator function re-made with a timer after each computing line, and the
    node (or source text) of each timer."""
    src = plan.source.splitlines()
    out, nodes = [], []
    for k, line in enumerate(src):
        body = line.strip()
        if k == 2:  # `inputs, state, grads = yield`
            out += [line, "        _t0 = _clock()"]
        elif k > 2 and not body.startswith(("del ", "box[")):
            out.append(f"{line}; _t1 = _clock(); _T[{len(nodes)}] += _t1 - _t0; _t0 = _t1")
            nodes.append(plan.line_nodes.get(k + 1) or body)
        else:
            out.append(line)
    timers.extend([0.0] * len(nodes))
    env = dict(plan.fn.__globals__)
    env.update(_clock=time.perf_counter, _T=timers)
    exec(compile("\n".join(out) + "\n", plan.filename, "exec"), env)  # noqa: S102
    return env["__plan_gen"], nodes


def profile(config: Path, steps: int, warmup: int = 5) -> dict[str, Any]:
    from benchmarks.run import fixed_batch
    from dlrun.backend import tune_host_allocator
    from dlrun.config import load_config
    from dlrun.runner.experiment import batch_tensors, build_experiment

    tune_host_allocator()
    x, y, _ = fixed_batch(config.stem, config.parent)  # the config's first training batch
    exp = build_experiment(load_config(config, ["mode=static"]))
    xt, yt = batch_tensors(exp, x.copy(), y.copy())
    step = exp.train_step
    for _ in range(warmup):
        step(xt, yt)
    entry = step.last
    by_id = entry.graph.by_id()
    timers: list[float] = []
    plan = entry.plan
    plan.fn, nodes = instrument(plan, timers)
    plan._gen = None
    for _ in range(warmup):
        step(xt, yt)
    timers[:] = [0.0] * len(timers)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step(xt, yt)
        times.append(time.perf_counter() - t0)
    lines = [(t / steps, n if isinstance(n, str) else _label(n, by_id),
              n if isinstance(n, str) else ("fused" if n.op == "fused" else n.op))
             for t, n in zip(timers, nodes, strict=True)]
    by_op: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for t, _, op in lines:
        by_op[op][0] += t
        by_op[op][1] += 1
    by_where: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for t, n in zip(timers, nodes, strict=True):
        where = "" if isinstance(n, str) else (n.where or "(no source line)")
        by_where[where][0] += t / steps
        by_where[where][1] += 1
    return {"median_s": statistics.median(times), "line_sum_s": sum(t for t, _, _ in lines),
            "lines": sorted(lines, key=lambda r: -r[0]), "by_op": by_op, "by_where": by_where}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workload", help="a bench workload (linreg, mlp, cnn, lstm) or a config path")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--top", type=int, default=25, help="how many of the slowest lines to show")
    args = ap.parse_args(argv)
    path = Path(args.workload)
    if not path.suffix:
        path = ROOT / "configs" / "bench" / f"{args.workload}.yaml"
    res = profile(path, args.steps)
    print(f"{path.name}: median step {res['median_s'] * 1e3:.3f} ms, "
          f"plan lines sum {res['line_sum_s'] * 1e3:.3f} ms ({len(res['lines'])} lines)")
    print("\nslowest lines (us per step):")
    for t, label, _ in res["lines"][: args.top]:
        print(f"{t * 1e6:10.1f}  {label[:160]}")
    print("\nby op (us per step, calls, us per call):")
    for op, (t, count) in sorted(res["by_op"].items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(f"{t * 1e6:10.1f}  {count:5d}  {t / count * 1e6:8.2f}  {op}")
    print("\nby source line that created the nodes (us per step, lines):")
    for where, (t, count) in sorted(res["by_where"].items(), key=lambda kv: -kv[1][0])[
            : args.top]:
        print(f"{t * 1e6:10.1f}  {count:5d}  {where or '(plan bookkeeping)'}")


if __name__ == "__main__":
    main()
