"""Real 2-process MPI jobs against 1-process runs: the same weights and metrics, eager and
static; Ctrl-C and resume across worker counts; the all-reduce node in the static step."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.distributed.jobs import (
    ROOT,
    assert_same_weights,
    blobs_config,
    dlrun,
    interrupt_once_saved,
    run_dir,
    start,
    weights,
)

pytestmark = pytest.mark.mpi


def _train(cfg: Path, runs: Path, *extra: str, shows: str = "") -> Path:
    result = dlrun("train", str(cfg), "--runs-dir", str(runs), "-q", *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    assert shows in result.stdout, result.stdout
    return run_dir(runs)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("mode", "dtype", "rtol", "atol"), [
    ("static", "float64", 1e-9, 0.0),
    ("eager", "float64", 1e-9, 0.0),
    ("static", "float32", 1e-5, 1e-6),
])
def test_two_processes_end_with_the_weights_of_one(tmp_path: Path, mode: str, dtype: str,
                                                   rtol: float, atol: float) -> None:
    cfg = blobs_config(tmp_path / "c.yaml")
    common = ("--mode", mode, "--set", f"dtype={dtype}")
    one = _train(cfg, tmp_path / "one", *common)
    two = _train(cfg, tmp_path / "two", *common, "--nproc", "2", shows="2 (mpi); all-reduce")
    assert_same_weights(weights(one), weights(two), rtol, atol)
    # logged metrics are global: losses averaged over ranks, evaluation over the whole split
    m1, m2 = _metrics(one), _metrics(two)
    assert [r.keys() for r in m1] == [r.keys() for r in m2]
    for a, b in zip(m1, m2, strict=True):
        for k in ("train_loss", "val_loss", "val_accuracy"):
            if k in a:
                assert b[k] == pytest.approx(a[k], rel=max(rtol, 1e-6)), k
    s1 = json.loads((one / "summary.json").read_text())
    s2 = json.loads((two / "summary.json").read_text())
    assert s1["distributed"] is None
    d = s2["distributed"]
    assert d["workers"] == 2 and d["backend"] == "mpi" and d["all_reduces_per_step"] == 1
    n_params = sum(a.size for a in weights(one).values())
    assert d["all_reduce_bytes"] == (n_params + 2) * (8 if dtype == "float64" else 4)
    assert d["all_reduce_ms"] > 0
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [two.name]  # rank 0 only


@pytest.fixture(scope="module")
def long_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A config long enough to interrupt, and the weights of one uninterrupted process."""
    tmp = tmp_path_factory.mktemp("long")
    cfg = blobs_config(tmp / "c.yaml", epochs=150, checkpoint_every=40)
    return cfg, weights(_train(cfg, tmp / "ref"))


def _interrupt(cfg: Path, runs: Path, *extra: str) -> Path:
    """Start training, send SIGINT (Ctrl-C) once a checkpoint exists; the run it left."""
    proc = start("train", str(cfg), "--runs-dir", str(runs), "-q", *extra)
    run, summary = interrupt_once_saved(proc, runs)
    assert 0 < summary["steps"] < 150 * 10
    return run


@pytest.mark.slow
@pytest.mark.parametrize(("first", "then"), [("2", "1"), ("1", "2")])
def test_ctrl_c_then_resume_with_another_worker_count(tmp_path: Path, long_run: tuple,
                                                      first: str, then: str) -> None:
    cfg, reference = long_run
    run = _interrupt(cfg, tmp_path / "runs", "--nproc", first)
    result = dlrun("train", "--resume", str(run), "-q", "--nproc", then)
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert_same_weights(reference, weights(run), rtol=1e-9)


def test_the_static_step_all_reduces_once_in_a_planned_buffer(tmp_path: Path) -> None:
    cfg = blobs_config(tmp_path / "c.yaml")
    shown = dlrun("graph", str(cfg), "--nproc", "2", "--full")
    assert shown.returncode == 0, shown.stderr
    # a model of a few kB is one bucket: one all-reduce, started, then waited for
    assert len(re.findall(r"= all_reduce_start\(", shown.stdout)) == 1
    assert len(re.findall(r"= all_reduce_wait\(", shown.stdout)) == 1
    script = tmp_path / "plan.py"
    script.write_text(
        "import json, sys\n"
        "from dlrun.config import load_config\n"
        "from dlrun.distributed.world import join\n"
        "from dlrun.runner.commands.graph_report import graph_report\n"
        "w = join()\n"
        "r = graph_report(load_config(sys.argv[1]), True, w)\n"
        "from dlrun.engine.static.cuda_graph import blocker\n"
        "from dlrun.runner.experiment import build_experiment, batch_tensors\n"
        "exp = build_experiment(load_config(sys.argv[1]), world=w)\n"
        "exp.train_step(*batch_tensors(exp, *next(iter(exp.train_loader))))\n"
        "e = exp.train_step.last\n"
        "if w.is_main:\n"
        "    print(json.dumps({'text': r['text'], 'plan': r['plan_source'],\n"
        "                      'memory': r['report']['passes'][-1]['detail'],\n"
        "                      'graph': blocker(e.graph, e.plan, 'cuda:0', 0)}))\n")
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    out = subprocess.run([mpiexec, "-n", "2", sys.executable, str(script), str(cfg)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    node, source = re.search(r"%(\d+) = all_reduce_start\(%(\d+)\)", report["text"]).groups()
    # the buffer the gradients were weighted into is reduced in place, by the memory plan
    assert re.search(rf"v{node} = f{node}\(v{source}, out=b\d+\)", report["plan"])
    # every piece (6 gradients, the loss, the stop flag) was computed into its slice
    assert report["memory"]["written_into_place"] >= 8
    assert "'all_reduce_start' talks to the other processes" in report["graph"]  # no CUDA graph
