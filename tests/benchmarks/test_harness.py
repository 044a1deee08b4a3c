"""The benchmark harness: the NumPy floors are correct training steps (gradients against finite
differences, loss going down, both variants equal, PyTorch's numbers when it is installed) and
benchmarks/run.py writes its tables. No timing assertions: those belong to the benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import floor as fl
from benchmarks import run as bench
from benchmarks import torch_ref

# tiny versions of the four workloads (same architectures, a few hundred parameters each; the
# cnn covers both im2col layouts: K-major for 1 input channel, N-major for 4)
TINY = {
    "linreg": dict(n_features=3, batch=5),
    "mlp": dict(in_features=6, hidden=5, n_classes=4, batch=3),
    "cnn": dict(in_channels=1, size=8, channels=(4, 5), hidden=5, n_classes=3, batch=2),
    "lstm": dict(vocab=7, embedding_dim=3, hidden=4, batch=2, seq_len=5),
}


def _tiny(workload: str, variant: str, seed: int = 1) -> tuple[fl.Floor, np.ndarray, np.ndarray]:
    f = fl.make_floor(workload, variant, np.float64, seed=seed, **TINY[workload])
    x, y = f.make_batch(np.random.default_rng(seed + 1))
    return f, x, y


@pytest.mark.parametrize("variant", fl.VARIANTS)
@pytest.mark.parametrize("workload", fl.WORKLOADS)
def test_floor_gradients_match_finite_differences(workload: str, variant: str) -> None:
    f, x, y = _tiny(workload, variant)
    loss, grads = f.loss_and_grads(x, y)
    grads = {k: g.copy() for k, g in grads.items()}  # the reused variant overwrites them
    assert np.isfinite(loss)
    eps = 1e-6
    for name, p in f.params.items():
        assert grads[name].shape == p.shape, name
        num = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            old = p[idx]
            p[idx] = old + eps
            plus = f.loss_and_grads(x, y)[0]
            p[idx] = old - eps
            minus = f.loss_and_grads(x, y)[0]
            p[idx] = old
            num[idx] = (plus - minus) / (2 * eps)
        scale = max(float(np.abs(num).max()), 1e-6)
        err = float(np.abs(num - grads[name]).max()) / scale
        assert err < 1e-6, f"{workload}/{variant}: d loss / d {name} off by {err:.2e}"


@pytest.mark.parametrize("variant", fl.VARIANTS)
@pytest.mark.parametrize("workload", fl.WORKLOADS)
def test_floor_loss_decreases_at_the_workload_shapes(workload: str, variant: str) -> None:
    f = fl.make_floor(workload, variant)  # float32, the workloads' shapes and optimizers
    x, y = f.make_batch(np.random.default_rng(0))
    losses = [f.step(x, y) for _ in range(5)]
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0], losses
    assert all(p.dtype == np.float32 for p in f.params.values())


@pytest.mark.parametrize("workload", fl.WORKLOADS)
def test_floor_variants_compute_the_same_steps(workload: str) -> None:
    (a, x, y), (b, _, _) = _tiny(workload, "reused"), _tiny(workload, "malloc")
    la = [a.step(x, y) for _ in range(3)]
    lb = [b.step(x, y) for _ in range(3)]
    np.testing.assert_allclose(la, lb, rtol=1e-12)
    for name in a.params:
        np.testing.assert_allclose(a.params[name], b.params[name], rtol=1e-10, atol=1e-12)


def test_floor_reallocates_for_a_new_batch_shape() -> None:
    f = fl.make_floor("mlp", "reused", np.float64, **TINY["mlp"])
    x, y = f.make_batch(np.random.default_rng(0))
    f.step(x, y)
    f.step(x[:2], y[:2])  # a smaller last batch gets buffers of its own shape
    g = fl.make_floor("mlp", "malloc", np.float64, **TINY["mlp"])
    g.step(x, y)
    g.step(x[:2], y[:2])
    np.testing.assert_allclose(f.flat, g.flat, rtol=1e-10)


@pytest.mark.parametrize("workload", [*fl.WORKLOADS, "lstm_loop"])
def test_floor_matches_pytorch(workload: str) -> None:
    if not torch_ref.available():
        pytest.skip("torch not installed (optional reference)")
    import torch

    base = "lstm" if workload == "lstm_loop" else workload
    f, x, y = _tiny(base, "reused")
    shape = {k: v for k, v in TINY[base].items() if k != "batch"}
    step = torch_ref.make_step(workload, x, y, dtype=torch.float64, params=f.torch_params(),
                               **shape)
    ours = [f.step(x, y) for _ in range(3)]
    theirs = [float(step().detach()) for _ in range(3)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    for a, b in zip(f.torch_params(), step.model.parameters(), strict=True):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-9, atol=1e-12)


def test_targets_are_marked_met_missed_or_na() -> None:
    impls = {
        "dlrun_eager": {"median_ms": 4.0, "minor_faults_per_step": 3.0,
                        "peak_step_bytes": 1000},
        "dlrun_static": {"median_ms": 1.0, "minor_faults_per_step": 0.0,
                         "peak_step_bytes": 500, "compile_s": 0.2},
        "floor_reused": {"median_ms": 0.9},
    }
    res = {"linreg": {"impls": impls, "ratios": bench.ratios(impls)}}
    by_id = {t["id"]: t for t in bench.targets(res)}
    assert by_id["static_vs_floor"]["status"] == "met"  # 1.11x <= 1.15
    assert by_id["static_speedup"]["status"] == "met"  # 4x >= 2
    assert by_id["static_faults"]["status"] == "met"
    assert by_id["static_peak"]["status"] == "met"
    assert by_id["compile_time"]["status"] == "met"
    assert by_id["eager_vs_torch"]["status"] == "n/a"  # no PyTorch measured
    impls["floor_reused"]["median_ms"] = 0.5
    impls["dlrun_static"]["minor_faults_per_step"] = 1.0
    by_id = {t["id"]: t for t in bench.targets({"linreg": {"impls": impls,
                                                           "ratios": bench.ratios(impls)}})}
    assert by_id["static_vs_floor"]["status"] == "missed"
    assert by_id["static_faults"]["status"] == "missed"


IMPL_KEYS = {"label", "median_ms", "p10_ms", "p90_ms", "steps", "minor_faults_per_step",
             "peak_step_bytes", "first_call_s", "loss_first", "loss_last"}


def _check_results(out: Path, res: dict, with_torch: bool) -> None:
    saved = json.loads((out / "results.json").read_text())
    assert saved["settings"] == res["settings"]
    for key in ("command", "timestamp", "machine", "settings", "workloads", "targets",
                "summary"):
        assert key in saved
    assert saved["machine"]["cpu_count"] >= 1
    assert saved["machine"]["numpy"] == np.__version__
    wr = saved["workloads"]["linreg"]
    expected = {"dlrun_eager", "dlrun_static", "floor_reused", "floor_malloc"}
    if with_torch:
        expected.add("torch_eager")
    assert set(wr["impls"]) == expected
    for key, impl in wr["impls"].items():
        assert "error" not in impl, (key, impl.get("error"))
        assert IMPL_KEYS <= set(impl), (key, IMPL_KEYS - set(impl))
        assert impl["steps"] == 3
        assert impl["p10_ms"] <= impl["median_ms"] <= impl["p90_ms"]
        assert np.isfinite(impl["loss_last"])
    static = wr["impls"]["dlrun_static"]
    assert static["compile_s"] > 0 and static["trace_count"] == 1
    assert set(wr["ratios"]) >= {"static_over_floor", "static_over_torch", "eager_over_static",
                                 "eager_over_torch"}
    assert wr["ratios"]["static_over_floor"] > 0
    ids = {t["id"] for t in saved["targets"]}
    assert ids >= {"static_vs_floor", "static_speedup", "eager_vs_torch", "static_faults",
                   "static_peak", "compile_time"}
    assert all(t["status"] in ("met", "missed", "n/a") for t in saved["targets"])
    md = (out / "results.md").read_text()
    for text in ("| linreg | dlrun static |", "| linreg | NumPy floor, buffers reused |",
                 "## Ratios", "## Targets", "NumPy " + np.__version__):
        assert text in md
    assert ("| linreg | PyTorch eager |" in md) == with_torch


def test_run_main_writes_json_and_markdown(tmp_path: Path, capsys) -> None:
    """The default mode: one worker process per implementation (PyTorch when installed)."""
    out = tmp_path / "res"
    res = bench.main(["--workloads", "linreg", "--steps", "3", "--warmup", "1", "--out",
                      str(out), "--gap", "0"])
    _check_results(out, res, with_torch=torch_ref.installed())
    assert "## Targets" in capsys.readouterr().out


def test_run_main_in_process_without_torch(tmp_path: Path) -> None:
    res = bench.main(["--workloads", "linreg", "--steps", "3", "--warmup", "1", "--out",
                      str(tmp_path), "--in-process", "--no-torch", "--gap", "0"])
    _check_results(tmp_path, res, with_torch=False)
    assert res["settings"]["in_process"] is True


def test_run_main_reports_a_broken_dlrun_and_still_measures_the_references(
        tmp_path: Path) -> None:
    """While the engine changes, a dlrun failure is an error row, not a crashed benchmark."""
    configs = tmp_path / "configs"
    configs.mkdir()
    text = (bench.CONFIG_DIR / "linreg.yaml").read_text()
    (configs / "linreg.yaml").write_text(text.replace("type: linear", "type: no_such_model"))
    res = bench.main(["--workloads", "linreg", "--steps", "2", "--warmup", "1", "--out",
                      str(tmp_path / "out"), "--in-process", "--no-torch", "--gap", "0",
                      "--config-dir", str(configs)])
    wr = res["workloads"]["linreg"]
    assert wr["batch"]["source"] == "floor.make_batch"
    assert "no_such_model" in wr["impls"]["dlrun_static"]["error"]
    assert wr["impls"]["floor_reused"]["steps"] == 2
    by_id = {t["id"]: t["status"] for t in res["targets"]}
    assert by_id["static_vs_floor"] == "n/a"
    assert "error:" in (tmp_path / "out" / "results.md").read_text()


def test_plan_profiler_times_every_line_of_a_static_step() -> None:
    from benchmarks import profile_plan

    root = Path(__file__).resolve().parents[2]
    res = profile_plan.profile(root / "configs" / "bench" / "linreg.yaml", steps=3, warmup=2)
    assert res["median_s"] > 0 and res["line_sum_s"] > 0
    assert {"matmul", "sum"} <= set(res["by_op"])
    assert all(t >= 0 for t, _, _ in res["lines"])
