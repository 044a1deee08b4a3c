"""dlrun compare: both modes agree on the numbers; the report has timings and memory."""

from __future__ import annotations

from dlrun.config import load_config
from dlrun.runner.compare import compare


def test_compare_reports_agreement_and_timings(tiny_config) -> None:
    report = compare(load_config(tiny_config()), steps=20, warmup=2, timed=20)
    assert report["agree"] and report["max_rel_loss_diff"] <= 1e-5
    assert report["steps"] == 20 and report["device"] == "cpu" and report["speedup"] > 0
    for mode in ("eager", "static"):
        info = report[mode]
        assert len(info["losses"]) == 20 and info["final_loss"] == info["losses"][-1]
        for key in ("median_step_ms", "p10_step_ms", "p90_step_ms", "peak_mem_bytes"):
            assert info[key] >= 0, key
    static = report["static"]
    assert static["traces"] == 1 and static["compile_ms"] > 0
    assert 0 < static["ops_per_step"] < report["eager"]["ops_per_step"]
    assert static["nodes_after"] < static["nodes_before"]


def test_report_directory(tiny_config, tmp_path) -> None:
    from dlrun.runner.compare import write_report

    report = compare(load_config(tiny_config()), steps=5, warmup=1, timed=10)
    run = write_report(report, tmp_path)
    assert (run / "report.md").read_text().startswith("# tiny: eager vs static")
    assert (run / "report.json").is_file() and (run / "plots" / "losses.png").is_file()
