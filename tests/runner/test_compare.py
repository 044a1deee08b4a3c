"""dlrun compare: both modes agree on the numbers; the report has timings and memory."""

from __future__ import annotations

from dlrun.config import load_config
from dlrun.runner.compare import compare


def test_compare_reports_agreement_and_timings(tiny_config) -> None:
    report = compare(load_config(tiny_config()), steps=20, warmup=2, timed=20)
    assert report["agreement"]["agree"]
    assert report["agreement"]["max_loss_rel_diff"] <= 1e-5
    for mode in ("eager", "static"):
        info = report["modes"][mode]
        assert len(info["losses"]) == 20 and info["median_ms"] > 0
        assert info["peak_step_bytes"] >= 0 and info["minor_faults_per_step"] >= 0
    assert report["modes"]["static"]["trace_count"] == 1
    assert report["speedup"] > 0
    passes = report["modes"]["static"]["passes"]
    assert passes["final_nodes"] < passes["traced_nodes"]
