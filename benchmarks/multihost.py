"""Data parallel across hosts over a real (virtual) network: step time, samples/s and the
all-reduce's share of each step for the bench workloads on 1 process, 2 hosts x 1 rank and
2 hosts x 2 ranks, at each link rate, with the gradient all-reduce in one blocking buffer
(`distributed.bucket_mb=0`) and in buckets started during the backward pass (overlap).

    sudo .venv/bin/python benchmarks/multihost.py                      # everything (~15 min)
    sudo .venv/bin/python benchmarks/multihost.py --workloads gpt --rates 100mbit --steps 20

The hosts are network namespaces on one private bridge (tests/distributed/netns.py, the same
helper the multi-host tests use), each link limited with `tc ... tbf` (both directions). Needs
root. A delay case needs the kernel's netem qdisc; where it is missing it is skipped (and
said so). Every run is a real `dlrun train --hosts ...` launched from the head namespace, one
BLAS thread per rank; the figures come from its summary.json (medians, warm-up steps left out).
This machine has 2 cores: 2 hosts x 2 ranks run 4 ranks on them (oversubscribed), and every
host shares the same CPUs, so the compute part does not shrink with ranks as on real hosts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.distributed.netns import Cluster, missing_privileges  # noqa: E402

LAYOUTS = {"1 process": 0, "2 hosts x 1": 1, "2 hosts x 2": 2}


def run_once(cluster: Cluster, workload: str, per_host: int, bucket_mb: float,
             steps: int) -> dict:
    """One `dlrun train` of the bench workload; its summary's figures."""
    config = ROOT / "configs" / "bench" / f"{workload}.yaml"
    env = cluster.environment(dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                                   MKL_NUM_THREADS="1"))
    with tempfile.TemporaryDirectory() as tmp:
        args = [sys.executable, "-m", "dlrun", "train", str(config), "--runs-dir", tmp, "-q",
                "--set", f"train.max_steps={steps}", "--set", "logging.plots=false",
                "--set", f"distributed.bucket_mb={bucket_mb}"]
        if per_host:
            args += ["--hosts", ",".join(f"{h}:{per_host}" for h in cluster.hosts)]
        for attempt in range(3):
            done = subprocess.run(cluster.command(cluster.head, args), cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=900)
            if done.returncode == 0:
                break
            print(f"failed (attempt {attempt + 1}): {done.stderr.strip()[-2000:]}", flush=True)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise RuntimeError(f"{workload} on {per_host} a host failed three times")
        (summary,) = Path(tmp).glob("*/summary.json")
        s = json.loads(summary.read_text())
    d = s.get("distributed") or {}
    return {"step_ms": s["step_time_ms"]["median"], "samples_per_second": s["samples_per_second"],
            "all_reduce_ms": d.get("all_reduce_ms"), "all_reduce_bytes": d.get("all_reduce_bytes"),
            "buckets": d.get("all_reduces_per_step"), "overlapped": d.get("overlapped")}


def netem_available(cluster: Cluster) -> bool:
    """Whether this kernel has netem (for a delay case)."""
    probe = subprocess.run(["ip", "netns", "exec", cluster.hosts[0], "tc", "qdisc", "add", "dev",
                            "eth0", "root", "netem", "delay", "1ms"], capture_output=True)
    subprocess.run(["ip", "netns", "exec", cluster.hosts[0], "tc", "qdisc", "del", "dev", "eth0",
                    "root"], capture_output=True)
    return probe.returncode == 0


def measure(workloads: list[str], rates: list[str], steps: int, bucket_mb: float,
            out: Path, keep: bool = False) -> list[dict]:
    rows: list[dict] = []
    if keep and out.exists():  # the rows of other workloads from an earlier run
        rows = [r for r in json.loads(out.read_text()) if r["workload"] not in workloads]
    with Cluster(["h1", "h2"]) as cluster:
        if not netem_available(cluster):
            print("netem is missing from this kernel: the delay case is skipped", flush=True)
        for workload in workloads:
            base = run_once(cluster, workload, 0, 0.0, steps)
            rows.append({"workload": workload, "rate": "-", "layout": "1 process",
                         "overlap": False, **base})
            for rate in rates:
                for h in cluster.hosts:
                    cluster.limit(h, rate)
                for layout, per_host in list(LAYOUTS.items())[1:]:
                    for mb in (0.0, bucket_mb):
                        r = run_once(cluster, workload, per_host, mb, steps)
                        rows.append({"workload": workload, "rate": rate, "layout": layout,
                                     "overlap": mb > 0, **r})
                        print(json.dumps(rows[-1]), flush=True)
                        out.write_text(json.dumps(rows, indent=1))
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| workload | link | ranks (hosts x ranks) | overlap | step (ms) | samples/s | "
             "all-reduce waited (ms/step) | hidden | buckets |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        waited = "-" if r["all_reduce_ms"] is None else f"{r['all_reduce_ms']:.1f}"
        hidden = "-" if r["overlapped"] is None else f"{r['overlapped']:.0%}"
        note = " (4 ranks on 2 cores)" if r["layout"] == "2 hosts x 2" else ""
        lines.append(f"| {r['workload']} | {r['rate']} | {r['layout']}{note} | "
                     f"{'yes' if r['overlap'] else 'no'} | {r['step_ms']:.1f} | "
                     f"{r['samples_per_second']:.0f} | {waited} | {hidden} | "
                     f"{r['buckets'] or '-'} |")
    return "\n".join(lines)


RATES_BITS = {"100mbit": 1e8, "1gbit": 1e9, "10gbit": 1e10}
LATENCY_S = 50e-6  # per message on an ordinary Ethernet (a model figure, not measured here)


def projection(step_s: float, grad_bytes: int, hosts: tuple[int, ...] = (2, 4, 8, 16, 32, 64),
               backward_share: float = 2 / 3) -> list[dict]:
    """A model, not a measurement: one rank per host, the global batch split over the hosts
    (compute per step = step_s / N, optimistic: no fixed overhead), a ring all-reduce of the
    gradients (each rank sends and receives 2 (N-1)/N of them, 2 (N-1) messages) at each link
    rate; with overlap the all-reduce hides behind the backward pass (`backward_share` of the
    compute) and only what is left over shows. The last figure is the other way to grow: each
    host keeps the 1-process batch (the global batch grows with the hosts), so the compute per
    step stays step_s and the all-reduce's share is comm / step_s."""
    rows = []
    for n in hosts:
        compute = step_s / n
        for rate, bits in RATES_BITS.items():
            comm = 2 * (n - 1) / n * grad_bytes * 8 / bits + 2 * (n - 1) * LATENCY_S
            shown = max(0.0, comm - backward_share * compute)
            rows.append({"hosts": n, "rate": rate, "compute_ms": compute * 1e3,
                         "all_reduce_ms": comm * 1e3, "step_ms": (compute + comm) * 1e3,
                         "step_overlap_ms": (compute + shown) * 1e3,
                         "dominates": comm > compute, "weak_ratio": comm / step_s})
    return rows


def projection_table(rows: list[dict]) -> str:
    lines = ["| hosts | link | compute (ms) | all-reduce (ms) | step, no overlap (ms) | "
             "step, overlap (ms) | all-reduce > compute | batch per host fixed: all-reduce / "
             "compute |", "|---:|---|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['hosts']} | {r['rate']} | {r['compute_ms']:.1f} | "
                     f"{r['all_reduce_ms']:.1f} | {r['step_ms']:.1f} | "
                     f"{r['step_overlap_ms']:.1f} | {'yes' if r['dominates'] else 'no'} | "
                     f"{r['weak_ratio']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="mlp,cnn,lstm,gpt")
    parser.add_argument("--rates", default="10gbit,1gbit,100mbit")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--bucket-mb", type=float, default=0.25,
                        help="bucket size with overlap (small: these models are 0.4-3 MB)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" /
                        "multihost.json")
    parser.add_argument("--keep", action="store_true",
                        help="keep the other workloads' rows of an earlier --out")
    a = parser.parse_args()
    reason = missing_privileges()
    if reason:
        sys.exit(f"benchmarks/multihost.py {reason}")
    rows = measure(a.workloads.split(","), a.rates.split(","), a.steps, a.bucket_mb, a.out,
                   a.keep)
    write_report(rows, a.out)


def write_report(rows: list[dict], out: Path) -> None:
    """The table (and the projection for the gpt shape) as markdown beside the JSON."""
    text = table(rows)
    gpt = [r for r in rows if r["workload"] == "gpt"]
    sizes = [r["all_reduce_bytes"] for r in gpt if r["all_reduce_bytes"]]
    if gpt and sizes:
        text += "\n\n" + projection_table(projection(gpt[0]["step_ms"] / 1e3, sizes[0]))
    out.with_suffix(".md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
