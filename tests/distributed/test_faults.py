"""A job whose worker dies or fails ends (it never hangs) with a message naming the rank; bad
launches fail before any worker starts, with one line saying what to do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dlrun.distributed.launch import describe_failure
from tests.cli_helpers import assert_cli_fails
from tests.distributed.jobs import (
    ROOT,
    blobs_config,
    dlrun,
    rank_pids,
    run_dir,
    start,
    wait_for,
    weights,
)


@pytest.mark.mpi
def test_a_killed_worker_ends_the_job_and_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    cfg = blobs_config(tmp_path / "c.yaml", epochs=400, checkpoint_every=40)
    runs = tmp_path / "runs"
    proc = start("train", str(cfg), "--runs-dir", str(runs), "-q", "--nproc", "2")
    try:
        wait_for(lambda: any(runs.glob("*/checkpoints/last.safetensors")))
        pids = rank_pids(str(runs))
        assert sorted(pids) == [0, 1]
        os.kill(pids[1], signal.SIGKILL)
        out, err = proc.communicate(timeout=120)  # a hang guard, not a speed check
    finally:
        proc.kill()
    assert proc.returncode == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert f"rank 1 (pid {pids[1]}) was killed by signal 9, SIGKILL" in err
    assert "--resume" in err and "Traceback" not in out + err
    assert weights(run_dir(runs))  # the last checkpoint loads (its checksum verified)
    wait_for(lambda: not rank_pids(str(runs)), timeout=10)  # no worker left behind


@pytest.mark.mpi
def test_an_error_on_one_rank_aborts_every_rank(tmp_path: Path) -> None:
    """Rank 1 runs where the data file is missing (as on a machine without the data): it
    fails to load it, and rank 0, waiting for rank 1's first all-reduce, must not hang."""
    data = tmp_path / "work"
    (data / "configs" / "data").mkdir(parents=True)
    (data / "configs" / "data" / "regression.csv").write_bytes(
        (ROOT / "configs" / "data" / "regression.csv").read_bytes())
    cfg = yaml.safe_load((ROOT / "configs" / "linreg_csv.yaml").read_text())
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    elsewhere, job = tmp_path / "elsewhere", tmp_path / "job"
    elsewhere.mkdir()
    job.mkdir()
    args = [sys.executable, "-m", "dlrun", "train", str(tmp_path / "c.yaml"), "-q",
            "--runs-dir", str(tmp_path / "runs")]
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    env = dict(os.environ, DLRUN_JOB_DIR=str(job))
    out = subprocess.run([mpiexec, "-n", "1", "-wdir", str(data), *args, ":",
                          "-n", "1", "-wdir", str(elsewhere), *args],
                         env=env, capture_output=True, text=True, timeout=120)  # hang guard
    assert out.returncode != 0
    assert "rank 1: error:" in out.stderr and "regression.csv" in out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    message = describe_failure(job, [], out.returncode, 2, None)  # what the launcher says
    assert message.startswith("rank 1 failed: ") and "regression.csv" in message


def test_a_batch_that_does_not_split_over_the_workers_is_a_config_error(tmp_path: Path) -> None:
    cfg = blobs_config(tmp_path / "c.yaml", batch_size=51)
    assert_cli_fails(["train", str(cfg), "--nproc", "2", "--runs-dir", str(tmp_path / "r")],
                     "train.batch_size: 51 does not split over 2 workers")
    assert not (tmp_path / "r").exists()


@pytest.mark.mpi
def test_a_last_batch_smaller_than_the_job_is_a_config_error(tmp_path: Path) -> None:
    """Only the workers know the split's size: every rank fails alike, the launcher says so."""
    cfg = blobs_config(tmp_path / "c.yaml", batch_size=46)  # 553 = 12 * 46 + 1
    result = dlrun("train", str(cfg), "--nproc", "2", "--runs-dir", str(tmp_path / "r"))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "failed: " in lines[0] and "last batch of 1 sample(s) for 2 workers" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "r").exists()


def test_without_mpiexec_nproc_says_what_to_install(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = blobs_config(tmp_path / "c.yaml")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert_cli_fails(["train", str(cfg), "--nproc", "2", "--runs-dir", str(tmp_path / "r")],
                     "mpiexec is not installed", "pip install 'dlrun[mpi]'")


def test_without_mpi4py_a_launched_worker_says_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = blobs_config(tmp_path / "c.yaml")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if it were not installed
    monkeypatch.setenv("PMI_SIZE", "2")  # started by mpiexec as one of 2
    assert_cli_fails(["train", str(cfg), "--runs-dir", str(tmp_path / "r")],
                     "needs mpi4py", "pip install 'dlrun[mpi]'")


def test_nproc_must_match_the_mpi_job_it_runs_in(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = blobs_config(tmp_path / "c.yaml")
    monkeypatch.setenv("PMI_SIZE", "2")
    assert_cli_fails(["train", str(cfg), "--nproc", "3"], "one of 2 started by mpiexec")
