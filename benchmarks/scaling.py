"""Data-parallel scaling: samples per second of the bench workloads on 1 and on N processes
(`dlrun train --nproc N`), with the all-reduce's share of each step, in interleaved rounds.

    .venv/bin/python benchmarks/scaling.py                     # mlp cnn lstm gpt, 1 and 2
    .venv/bin/python benchmarks/scaling.py --workloads gpt --steps 100 --rounds 5

Each run is a real `dlrun train` (static mode, the bench config, `train.max_steps` steps); its
summary gives the median step time (the first 5 steps left out) and the median all-reduce time
per step. The projection for more ranks starts from the 2-rank run: the step less its all-reduce
shrinks as 2/N (each rank's share of the batch; the fixed per-step overhead does not, so this is
optimistic for small steps) and the all-reduce grows as a ring's, 2(N-1)/N times the 2-rank
figure, which includes the time a rank waits for the slower one. An estimate, not a measurement;
it also assumes a core (and memory bandwidth) per rank, which this 2-core machine does not have.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_once(workload: str, nproc: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        config = ROOT / "configs" / "bench" / f"{workload}.yaml"
        cmd = [sys.executable, "-m", "dlrun", "train", str(config), "--runs-dir", tmp, "-q",
               "--json", "--set", f"train.max_steps={steps}",
               "--set", "logging.plots=false", "--nproc", str(nproc)]
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
        (summary,) = Path(tmp).glob("*/summary.json")
        s = json.loads(summary.read_text())
    d = s.get("distributed") or {}
    return {"step_ms": s["step_time_ms"]["median"], "samples_per_second": s["samples_per_second"],
            "all_reduce_ms": d.get("all_reduce_ms"), "all_reduce_bytes": d.get("all_reduce_bytes")}


def project(two: dict, ranks: int) -> float:
    """Samples/s at `ranks` from the 2-rank run (see module): its step without the all-reduce
    shrinks as 2/ranks (each rank's share of the batch), its all-reduce grows as a ring's."""
    batch = two["samples_per_second"] * two["step_ms"] / 1e3  # the global batch
    compute = (two["step_ms"] - two["all_reduce_ms"]) * 2 / ranks
    reduce = two["all_reduce_ms"] * 2 * (ranks - 1) / ranks
    return batch / (compute + reduce) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", nargs="+", default=["mlp", "cnn", "lstm", "gpt"])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args()
    runs: dict = {w: {1: [], args.nproc: []} for w in args.workloads}
    for _ in range(args.rounds):  # interleaved: 1 and N processes alternate within a round
        for w in args.workloads:
            for n in (1, args.nproc):
                runs[w][n].append(run_once(w, n, args.steps))
    rows, table = {}, ["| workload | 1 process (samples/s) | "
                       f"{args.nproc} processes (samples/s) | speedup | all-reduce / step "
                       "(ms, bytes) | all-reduce share | projected 4 / 8 ranks (samples/s) |",
                       "|---|---:|---:|---:|---:|---:|---:|"]
    for w in args.workloads:
        med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0] if rs[0][k] is not None}
               for n, rs in runs[w].items()}
        one, many = med[1], med[args.nproc]
        share = many["all_reduce_ms"] / many["step_ms"]
        rows[w] = {"runs": runs[w], "median": med, "all_reduce_share": share}
        table.append(
            f"| {w} | {one['samples_per_second']:,.0f} | {many['samples_per_second']:,.0f} | "
            f"{many['samples_per_second'] / one['samples_per_second']:.2f}x | "
            f"{many['all_reduce_ms']:.2f}, {many['all_reduce_bytes'] / 1e6:.2f} MB | "
            f"{share:.0%} | {project(many, 4):,.0f} / {project(many, 8):,.0f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaling.json").write_text(json.dumps(rows, indent=2))
    text = "\n".join(table) + "\n"
    (args.out / "scaling.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
