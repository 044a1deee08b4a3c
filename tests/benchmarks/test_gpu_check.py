"""The `make gpu-check` plumbing on the CPU (`--device cpu --quick`): it writes results.json and
results.md, and the launch/sync classifier counts what CUPTI reports. No timing assertions."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import gpu_check
from dlrun.runner.commands.cuda_measure import classify, per_step


def test_cpu_quick_run_writes_the_table(tmp_path: Path) -> None:
    rc = gpu_check.main(["--device", "cpu", "--quick", "--skip-pytest", "--workloads", "mlp",
                         "--out", str(tmp_path), "--budget", "240"])
    assert rc == 0
    results = json.loads((tmp_path / "results.json").read_text())
    mlp = results["measure"]["mlp"]
    assert {"dlrun_eager", "dlrun_static"} <= set(mlp)
    assert all("error" not in r and r["ms_per_step"] > 0 for r in mlp.values())
    compare = results["compare"]["mlp"]
    assert compare["rc"] == 0 and compare["report"]["agree"] is True
    table = (tmp_path / "results.md").read_text()
    assert "| mlp | dlrun_static |" in table and "| mlp | 0 | True |" in table


def test_missing_wheels_lists_only_what_does_not_import() -> None:
    wheels = gpu_check.missing_wheels(lambda m: m != "pydantic")
    assert wheels[0] == "pydantic" and "pydantic-core" in wheels
    assert "scipy" not in wheels and "numpy" not in wheels
    assert gpu_check.missing_wheels(lambda m: True) == []


def test_classify_counts_launches_syncs_and_kernels() -> None:
    events = [("cuLaunchKernel", False), ("cudaLaunchKernel", False), ("cudaGraphLaunch", False),
              ("cudaStreamSynchronize", False), ("cudaMemcpyAsync", False),
              ("gemm_kernel", True), ("Memcpy DtoH (Device -> Pinned)", True),
              ("aten::mm", False)]
    counts = classify(events)
    assert counts == {"launch_calls": 4, "syncs": 1, "kernels": 1, "device_copies": 1}
    assert per_step(counts, 2)["syncs"] == 0  # the harness's own final sync taken out
    assert per_step(counts, 2)["launch_calls"] == 2
