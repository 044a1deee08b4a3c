"""Does loading keep up? Each dataset's loader against its model's training step.

For each workload (a config in configs/, built as `dlrun train` builds it), three timings on the
same experiment, medians after a warm-up:

- loader: one batch from the training loader in the caller's thread (prefetch off): gather the
  rows (from a memory map for image folders and CSV files), transform (scale, normalise,
  augment), move to the device; samples/s = batch / that time;
- step: the training step alone on batches gathered beforehand;
- wait: the time the training loop waits for the next batch with the config's prefetching
  (data.prefetch, default 2: the next batches are gathered by a background thread while the
  step runs), what the loader costs the run.

Loading is not the bottleneck when the loader's time is below 10% of the step (then even
without prefetching it costs under 10%) or, with prefetching, when the wait is.

    python benchmarks/data_loader.py [--data-dir ../shared/data] [--image-folder DIR]
        [--steps 40] [--warmup 5] [--device cpu] [--json out.json]

`--image-folder` is a folder from benchmarks/mnist_folder.py (the MNIST test set as PNG files);
workloads whose data is missing are skipped with a note.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dlrun.backend import synchronize  # noqa: E402
from dlrun.config import load_config  # noqa: E402
from dlrun.errors import DlrunError  # noqa: E402
from dlrun.runner.experiment import batch_tensors, build_experiment  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FOLDER = "data.options={{path: {folder}, channels: 1}}"
AUGMENTED = "data.options={{path: {folder}, channels: 1, augment: {{flip: true, crop_padding: 2}}}}"
WORKLOADS: list[tuple[str, str, list[str]]] = [
    ("mnist_cnn (IDX, in memory)", "mnist_cnn.yaml", []),
    ("mnist_cnn on an image folder (memmap)", "mnist_cnn.yaml",
     ["data.name=image_folder", FOLDER]),
    ("  same, augmented (flip, crop 2)", "mnist_cnn.yaml", ["data.name=image_folder", AUGMENTED]),
    ("shakespeare_gpt (text windows)", "shakespeare_gpt.yaml", []),
    ("bench/gpt (tokens)", "bench/gpt.yaml", []),
    ("linreg_csv (CSV, memmap)", "linreg_csv.yaml", []),
]


def _median_ms(times: list[float]) -> float:
    return statistics.median(times) * 1e3


def time_loader(exp: Any, n: int, warmup: int) -> float:
    """Median ms of one training batch, gathered in this thread (no prefetching)."""
    loader = exp.train_loader
    loader.prefetch = 0
    times = []
    while len(times) < n + warmup:
        it = iter(loader)
        while len(times) < n + warmup:
            t0 = time.perf_counter()
            try:
                next(it)
            except StopIteration:
                break
            synchronize(loader.device)
            times.append(time.perf_counter() - t0)
    return _median_ms(times[warmup:])


def time_training(exp: Any, n: int, warmup: int, prefetch: int) -> tuple[float, float]:
    """(median step ms on batches gathered beforehand, median ms waited for each next batch
    in a training loop with `prefetch`)."""
    loader = exp.train_loader
    loader.prefetch, batches = 0, []
    while len(batches) < n + warmup:  # across epochs when an epoch is shorter
        batches += itertools.islice(iter(loader), n + warmup - len(batches))
    steps = []
    for xb, yb in batches:
        x, y = batch_tensors(exp, xb, yb)
        t0 = time.perf_counter()
        exp.train_step(x, y)
        synchronize(exp.device)
        steps.append(time.perf_counter() - t0)
    loader.prefetch, waits = prefetch, []
    while len(waits) < n + warmup:
        it = iter(loader)
        while len(waits) < n + warmup:
            t0 = time.perf_counter()
            try:
                xb, yb = next(it)
            except StopIteration:
                break
            waits.append(time.perf_counter() - t0)
            exp.train_step(*batch_tensors(exp, xb, yb))
            synchronize(exp.device)
        del it
    return _median_ms(steps[warmup:]), _median_ms(waits[warmup:])


def measure(label: str, config: str, overrides: list[str], args: argparse.Namespace
            ) -> dict[str, Any]:
    """One workload's row (or its skip note)."""
    sets = [o.format(folder=args.image_folder) for o in overrides]
    if any("{folder}" in o for o in overrides) and not args.image_folder:
        return {"workload": label, "skipped": "no --image-folder"}
    try:
        cfg = load_config(ROOT / "configs" / config, [*sets, f"device={args.device}"])
        exp = build_experiment(cfg)
    except DlrunError as e:
        return {"workload": label, "skipped": str(e)}
    batch = cfg.train.batch_size
    load_ms = time_loader(exp, args.steps, args.warmup)
    step_ms, wait_ms = time_training(exp, args.steps, args.warmup, cfg.data.prefetch)
    return {"workload": label, "dataset": cfg.data.name, "batch": batch,
            "loader_ms": load_ms, "loader_samples_per_s": batch / load_ms * 1e3,
            "step_ms": step_ms, "step_samples_per_s": batch / step_ms * 1e3,
            "loader_pct_of_step": 100 * load_ms / step_ms, "prefetch": cfg.data.prefetch,
            "wait_ms": wait_ms, "wait_pct_of_step": 100 * wait_ms / step_ms}


def to_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| workload | batch | loader ms | loader samples/s | step ms | step samples/s | "
             "loader / step | wait with prefetch 2 |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['workload']} | skipped: {r['skipped']} |||||||")
            continue
        lines.append(
            f"| {r['workload']} | {r['batch']} | {r['loader_ms']:.3f} | "
            f"{r['loader_samples_per_s']:,.0f} | {r['step_ms']:.2f} | "
            f"{r['step_samples_per_s']:,.0f} | {r['loader_pct_of_step']:.1f}% | "
            f"{r['wait_ms']:.3f} ms ({r['wait_pct_of_step']:.1f}%) |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="$DLRUN_DATA_DIR for the real datasets")
    ap.add_argument("--image-folder", default=None, help="from benchmarks/mnist_folder.py")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    if args.data_dir:
        os.environ["DLRUN_DATA_DIR"] = str(Path(args.data_dir).resolve())
    os.chdir(ROOT)  # configs name their files relative to the project root
    rows = [measure(label, config, sets, args) for label, config, sets in WORKLOADS]
    print(f"device {args.device}, {os.cpu_count()} CPUs, medians of {args.steps} batches/steps "
          f"after {args.warmup}\n")
    print(to_markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
