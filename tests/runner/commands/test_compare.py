"""dlrun compare: both modes agree on the numbers; the report has timings and memory."""

from __future__ import annotations

import pytest

from dlrun.config import load_config
from dlrun.runner.commands.compare import compare


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
    from dlrun.runner.commands.compare import write_report

    report = compare(load_config(tiny_config()), steps=5, warmup=1, timed=10)
    run = write_report(report, tmp_path)
    assert (run / "report.md").read_text().startswith("# tiny: eager vs static")
    assert (run / "report.json").is_file() and (run / "plots" / "losses.png").is_file()


def test_cuda_graphs_on_the_cpu_is_one_clear_error(tiny_config) -> None:
    from tests.cli_helpers import assert_cli_fails

    assert_cli_fails(["compare", str(tiny_config()), "--cuda-graphs", "--steps", "2"],
                     "--cuda-graphs needs a CUDA device")


@pytest.mark.gpu
def test_compare_on_a_gpu_counts_launches_and_replays_a_cuda_graph(tiny_config) -> None:
    cfg = load_config(tiny_config(), ["device=cuda", "model.dropout=0.0"])
    report = compare(cfg, steps=10, warmup=2, timed=20, cuda_graphs=True)
    assert report["agree"]
    for mode in ("eager", "static"):
        assert report[mode]["device_ms_per_step"] > 0
    graph = report["static_cuda_graph"]
    assert graph["captured"], graph["why_not"]
    assert graph["max_rel_loss_diff_vs_static"] <= 1e-5
    if "launches_per_step" in graph:  # counted by torch.profiler when PyTorch is installed
        assert graph["launches_per_step"] < report["static"]["launches_per_step"]
        assert report["static"]["launches_per_step"] < report["eager"]["launches_per_step"]


def test_compare_says_how_the_fused_chains_ran(tiny_config, monkeypatch, tmp_path) -> None:
    """With Numba the report counts the kernels (cold and warm loads are tested in
    tests/engine/static/test_cpu_kernels.py); without it, NumPy calls."""
    pytest.importorskip("numba")
    from dlrun.engine.static import cpu_kernels
    from dlrun.runner.commands.compare import markdown

    monkeypatch.setenv("DLRUN_KERNEL_CACHE", str(tmp_path / "kernels"))
    monkeypatch.setattr(cpu_kernels, "MIN_KERNEL_WORK", 0)  # the tiny model's chains too
    cpu_kernels._MADE.clear()
    report = compare(load_config(tiny_config()), steps=3, warmup=1, timed=3)
    kernels = report["static"]["kernels"]
    assert kernels["backend"] == "numba" and not kernels["fallbacks"]
    assert kernels["compiled"] + kernels["loaded"] + kernels["reused"] >= 1
    assert "| CPU kernels | - | Numba: " in markdown(report)
    monkeypatch.setattr(cpu_kernels, "available", lambda: False)
    report = compare(load_config(tiny_config()), steps=3, warmup=1, timed=3)
    assert report["static"]["kernels"]["backend"] == "numpy"
    assert "| CPU kernels | - | NumPy calls |" in markdown(report)
