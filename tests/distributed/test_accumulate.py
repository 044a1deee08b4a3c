"""Gradient accumulation on 2 MPI processes: K=2 on two processes ends with the weights of K=2
on one and of one process with the 2x larger batch; one all-reduce, in the update."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.distributed.jobs import assert_same_weights, blobs_config, dlrun, run_dir, weights

pytestmark = pytest.mark.mpi


def _train(cfg: Path, runs: Path, *extra: str) -> Path:
    result = dlrun("train", str(cfg), "--runs-dir", str(runs), "-q", *extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return run_dir(runs)


def test_two_processes_accumulating_equal_one_and_the_large_batch(tmp_path: Path) -> None:
    # 553 training rows, steps of 2 x 50: the last step's 53 rows split 27 / 26 over the ranks,
    # each then micro-batches of 25 and a short one
    cfg = blobs_config(tmp_path / "c.yaml", accumulate=2)
    two = _train(cfg, tmp_path / "two", "--nproc", "2")
    one = _train(cfg, tmp_path / "one")
    big = _train(cfg, tmp_path / "big", "--set", "train.batch_size=100",
                 "--set", "train.accumulate=1")
    assert_same_weights(weights(big), weights(one), rtol=1e-9)
    assert_same_weights(weights(one), weights(two), rtol=1e-9)
    summary = json.loads((two / "summary.json").read_text())
    assert summary["steps"] == 3 * 6  # optimizer steps
    d = summary["distributed"]
    n_params = sum(a.size for a in weights(one).values())
    assert d["all_reduces_per_step"] == 1 and d["all_reduce_bytes"] == (n_params + 2) * 8
    shown = dlrun("graph", str(cfg), "--nproc", "2", "--full")
    assert shown.returncode == 0, shown.stderr
    micro, update = shown.stdout.split("update", 1)
    started = r"= all_reduce(_start)?\("  # one buffer (bucket_mb: 0) or one bucket, started
    assert "micro_step" in micro and not re.search(started, micro)
    assert len(re.findall(started, update)) == 1
