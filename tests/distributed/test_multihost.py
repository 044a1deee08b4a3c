"""Real jobs across hosts: network namespaces joined by a private bridge (tests/distributed/
netns.py), reached by MPICH through the namespace launcher as it reaches real hosts by ssh.
The ranks' traffic crosses the veth links (counted); the weights equal one process's; a lost
rank, a cut link and a vanished host each end the job with one line naming host and rank."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.distributed.jobs import (
    ROOT,
    assert_same_weights,
    blobs_config,
    dlrun,
    interrupt_once_saved,
    rank_pids,
    run_dir,
    wait_for,
    weights,
)
from tests.distributed.netns import Cluster, missing_privileges

pytestmark = [pytest.mark.mpi, pytest.mark.multihost]

TIGHT = 1e-12


@pytest.fixture(scope="module")
def privileges() -> None:
    reason = missing_privileges()
    if reason:
        pytest.skip(f"multi-host tests {reason}")


@pytest.fixture
def cluster(privileges: None) -> Iterator[Cluster]:
    """Two hosts (and a head host the job is launched from); all removed afterwards."""
    made = Cluster(["h1", "h2"])
    try:
        yield made
    finally:
        made.close()


def _argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "dlrun", *args]


def _on_head(cluster: Cluster, *args: str, timeout: float = 120,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`dlrun ARGS` launched from the head host."""
    return subprocess.run(cluster.command(cluster.head, _argv(*args)), cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout,
                          env=cluster.environment(env))


def _start_on_head(cluster: Cluster, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(cluster.command(cluster.head, _argv(*args)), cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=cluster.environment(dict(os.environ, **env)))


def _hosts(cluster: Cluster, per_host: int) -> str:
    return ",".join(f"{h}:{per_host}" for h in cluster.hosts)


def _cnn_config(path: Path, mode: str) -> Path:
    cfg = {"name": "cnn", "seed": 1, "mode": mode, "dtype": "float64",
           "data": {"name": "images", "val_fraction": 0.0,
                    "options": {"n": 96, "channels": 1, "size": 8, "n_classes": 3}},
           "model": {"type": "cnn", "channels": [4], "kernel_size": 3, "padding": 1,
                     "pool": 2, "hidden": [8]},
           "optimizer": {"name": "adam", "lr": 0.01},
           "train": {"epochs": 1, "batch_size": 8},
           "logging": {"log_every": 4, "plots": False}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _quickstart(path: Path, mode: str) -> Path:
    cfg = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    cfg.update(mode=mode, dtype="float64")
    cfg["data"]["options"]["n"] = 400
    cfg["train"].update(epochs=1, batch_size=16)
    cfg["logging"]["plots"] = False
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The weights one process ends with, per (config maker, mode), trained once."""
    done: dict[tuple, tuple[Path, dict]] = {}

    def get(make: Any, mode: str) -> tuple[Path, dict]:
        if (make, mode) not in done:
            tmp = tmp_path_factory.mktemp("one")
            cfg = make(tmp / "c.yaml", mode)
            result = dlrun("train", str(cfg), "--runs-dir", str(tmp / "runs"), "-q")
            assert result.returncode == 0, result.stderr
            done[make, mode] = cfg, weights(run_dir(tmp / "runs"))
        return done[make, mode]

    return get


@pytest.mark.parametrize("per_host", [1, 2])
@pytest.mark.parametrize("mode", ["static", "eager"])
@pytest.mark.parametrize("make", [_quickstart, _cnn_config], ids=["quickstart", "cnn"])
def test_hosts_end_with_the_weights_of_one_process(cluster: Cluster, tmp_path: Path,
                                                   one_process: Any, make: Any, mode: str,
                                                   per_host: int) -> None:
    cfg, reference = one_process(make, mode)
    before = {h: cluster.bytes_through(h) for h in cluster.hosts}
    many = _on_head(cluster, "train", str(cfg), "--runs-dir", str(tmp_path / "many"), "-q",
                    "--hosts", _hosts(cluster, per_host))
    assert many.returncode == 0, many.stdout + many.stderr
    b = run_dir(tmp_path / "many")
    assert_same_weights(reference, weights(b), rtol=TIGHT, atol=TIGHT)
    summary = json.loads((b / "summary.json").read_text())
    d = summary["distributed"]
    ranks = list(range(2 * per_host))
    assert d["workers"] == len(ranks)
    assert d["hosts"] == {h: ranks[i * per_host:(i + 1) * per_host]
                          for i, h in enumerate(cluster.hosts)}
    # every step's all-reduce crossed each host's link (not shared memory)
    for h in cluster.hosts:
        assert cluster.bytes_through(h) - before[h] >= d["all_reduce_bytes"] * summary["steps"]


def test_buckets_sum_like_one_buffer_bit_for_bit(cluster: Cluster, tmp_path: Path) -> None:
    """Gradients in many small buckets, started during the backward pass (non-blocking MPI),
    end with the very bits of one blocking all-reduce of one buffer, on 2 hosts x 2 ranks."""
    cfg = _cnn_config(tmp_path / "c.yaml", "static")
    ends = {}
    for mb in ("0", "0.0001"):
        runs = tmp_path / f"mb{mb}"
        done = _on_head(cluster, "train", str(cfg), "--runs-dir", str(runs), "-q",
                        "--hosts", _hosts(cluster, 2), "--set", f"distributed.bucket_mb={mb}")
        assert done.returncode == 0, done.stdout + done.stderr
        summary = json.loads((run_dir(runs) / "summary.json").read_text())
        ends[mb] = weights(run_dir(runs)), summary["distributed"]["all_reduces_per_step"]
    (one, n_one), (many, n_many) = ends["0"], ends["0.0001"]
    assert n_one == 1 and n_many >= 3
    assert one.keys() == many.keys()
    for k in one:
        assert np.array_equal(one[k], many[k]), k


def test_compare_across_hosts_says_how_much_of_the_all_reduce_was_hidden(
        cluster: Cluster, tmp_path: Path) -> None:
    cfg = _cnn_config(tmp_path / "c.yaml", "static")
    report = tmp_path / "report.json"
    done = _on_head(cluster, "compare", str(cfg), "--runs-dir", str(tmp_path / "r"),
                    "--hosts", _hosts(cluster, 1), "--steps", "3", "--timed", "10",
                    "--warmup", "2", "--set", "distributed.bucket_mb=0.0001",
                    "--json", str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all-reduce hidden behind backward" in done.stdout
    for mode in ("eager", "static"):
        figures = json.loads(report.read_text())[mode]
        assert figures["all_reduces_per_step"] >= 3
        assert 0 <= figures["all_reduce_ms"] <= figures["all_reduce_in_flight_ms"]
        assert 0.0 <= figures["all_reduce_overlapped"] <= 1.0


def _interrupt(cluster: Cluster, cfg: Path, runs: Path, *where: str) -> Path:
    """Train (on `where`), Ctrl-C once a checkpoint exists; the run directory it left."""
    args = ("train", str(cfg), "--runs-dir", str(runs), "-q")
    if where:
        proc = _start_on_head(cluster, *args, *where)
    else:
        proc = subprocess.Popen(_argv(*args), cwd=ROOT, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    return interrupt_once_saved(proc, runs)[0]


@pytest.mark.parametrize("first_on_hosts", [True, False], ids=["hosts-then-one", "one-then-hosts"])
def test_resume_moves_between_hosts_and_one_process(cluster: Cluster, tmp_path: Path,
                                                    first_on_hosts: bool) -> None:
    cfg = blobs_config(tmp_path / "c.yaml", epochs=60, checkpoint_every=20)
    reference = dlrun("train", str(cfg), "--runs-dir", str(tmp_path / "ref"), "-q")
    assert reference.returncode == 0, reference.stderr
    hosts = ("--hosts", _hosts(cluster, 1))
    run = _interrupt(cluster, cfg, tmp_path / "runs", *(hosts if first_on_hosts else ()))
    if first_on_hosts:
        done = dlrun("train", "--resume", str(run), "-q")
    else:
        done = _on_head(cluster, "train", "--resume", str(run), "-q", *hosts)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert_same_weights(weights(run_dir(tmp_path / "ref")), weights(run), rtol=1e-9)


def _fault(cluster: Cluster, tmp_path: Path, act: object) -> tuple[str, Path]:
    """Start a long 2-host job, call `act(pids)` once a checkpoint exists; the launcher's
    stderr and the run directory, once the job ended (within 60 s) with status 1."""
    cfg = blobs_config(tmp_path / "c.yaml", epochs=2000, checkpoint_every=20)
    runs = tmp_path / "runs"
    proc = _start_on_head(cluster, "train", str(cfg), "--runs-dir", str(runs), "-q",
                          "--hosts", _hosts(cluster, 1), DLRUN_COMM_TIMEOUT="4")
    try:
        wait_for(lambda: any(runs.glob("*/checkpoints/last.safetensors")))
        pids = rank_pids(str(runs))
        assert sorted(pids) == [0, 1]
        act(pids)  # type: ignore[operator]
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in out + err
    assert weights(run_dir(runs))  # the last checkpoint loads (its checksum verified)
    for host in [cluster.head, *cluster.hosts]:  # nothing left behind, on any host
        if host in cluster._made:
            wait_for(lambda h=host: not cluster.pids(h), timeout=10)
    return lines[0], run_dir(runs)


def test_a_rank_killed_on_one_host_ends_the_job(cluster: Cluster, tmp_path: Path) -> None:
    killed = {}

    def act(pids: dict[int, int]) -> None:
        killed["pid"] = pids[1]
        os.kill(pids[1], signal.SIGKILL)

    line, _ = _fault(cluster, tmp_path, act)
    h2 = cluster.hosts[1]
    assert f"rank 1 (pid {killed['pid']}) on host {h2} was killed by signal 9" in line
    assert "--resume" in line


def test_a_cut_link_ends_the_job(cluster: Cluster, tmp_path: Path) -> None:
    h2 = cluster.hosts[1]
    line, _ = _fault(cluster, tmp_path, lambda pids: cluster.link(h2, up=False))
    assert f"host {h2} (rank 1) stopped answering" in line, line


def test_a_host_that_vanishes_ends_the_job(cluster: Cluster, tmp_path: Path) -> None:
    h2 = cluster.hosts[1]
    line, _ = _fault(cluster, tmp_path, lambda pids: cluster.remove(h2))
    assert f"host {h2} (rank 1) stopped answering" in line, line


def test_a_host_that_cannot_see_the_config_is_named(cluster: Cluster, tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    folder.mkdir()
    cfg = blobs_config(folder / "c.yaml")
    cluster.hide(cluster.hosts[1], folder)
    result = _on_head(cluster, "train", str(cfg), "--runs-dir", str(tmp_path / "r"),
                      "--hosts", _hosts(cluster, 1))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"error: host {cluster.hosts[1]} cannot see {cfg} (every host needs the "
                     "same paths: a shared file system, or the same copy on each)"], lines
    assert not (tmp_path / "r").exists()
