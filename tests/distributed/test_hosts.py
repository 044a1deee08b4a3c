"""Host lists, hostfiles and the launcher's view of a job across hosts, without starting one:
parsing, the one-line errors, the watchdog that ends a rank stuck in a collective, and the
beacons that tell a rank that ended from a host that cannot be reached."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dlrun.distributed.hosts import parse_hosts, read_hostfile, resolve_hosts
from dlrun.distributed.launch import describe_failure, unreachable_ranks, worker_args
from dlrun.distributed.watchdog import Beacon, reachable
from dlrun.errors import DistributedError
from tests.cli_helpers import assert_cli_fails
from tests.distributed.jobs import ROOT, blobs_config


def test_hosts_with_and_without_slots_go_to_mpiexec_as_given() -> None:
    hosts = parse_hosts("node1,node2:2")
    assert hosts.names == ("node1", "node2") and hosts.slots == (None, 2)
    assert hosts.total_slots is None
    assert hosts.mpiexec_args() == ["-hosts", "node1,node2:2"]
    assert parse_hosts("a:2,b:3").total_slots == 5


def test_a_hostfile_is_read_as_mpich_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("# the cluster\nnode1:2\n\nnode2   # spare\n")
    hosts = read_hostfile(path)
    assert hosts.names == ("node1", "node2") and hosts.slots == (2, None)
    path.write_text("node1\nnode2:many\n")
    with pytest.raises(DistributedError, match=r"hosts:2: 'node2:many' is not host or"):
        read_hostfile(path)


def test_mpichs_host_file_variable_is_honoured(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "hosts"
    path.write_text("a\nb\n")
    monkeypatch.setenv("HYDRA_HOST_FILE", str(path))
    hosts = resolve_hosts(None, None)
    assert hosts is not None and hosts.names == ("a", "b")
    assert hosts.source == f"$HYDRA_HOST_FILE {path}"
    assert resolve_hosts("c", None).names == ("c",)  # the command line wins


def test_workers_get_the_command_without_the_launch_options() -> None:
    argv = ["train", "c.yaml", "--hosts", "a,b", "--nproc=4", "--hostfile", "f", "-q"]
    assert worker_args(argv) == ["train", "c.yaml", "-q"]


def test_bad_host_options_are_one_line_errors(tmp_path: Path) -> None:
    cfg = blobs_config(tmp_path / "c.yaml")
    runs = tmp_path / "r"
    assert_cli_fails(["train", str(cfg), "--hosts", "a", "--hostfile", str(cfg),
                      "--runs-dir", str(runs)], "give --hosts or --hostfile, not both")
    assert_cli_fails(["train", str(cfg), "--hostfile", str(tmp_path / "nope"), "--nproc", "2",
                      "--runs-dir", str(runs)], "--hostfile", "nope: cannot read it")
    assert_cli_fails(["train", str(cfg), "--hosts", "a:0", "--runs-dir", str(runs)],
                     "--hosts: 'a:0' is not host or host:slots")
    assert not runs.exists()


def test_a_killed_rank_is_named_with_its_host(tmp_path: Path) -> None:
    (tmp_path / "ranks.json").write_text(json.dumps([["h1", 1], ["h2", 2]]))
    (tmp_path / "rank1.pid").write_text("4321")
    report = ["=   PID 4321 RUNNING AT h2\n", "=   EXIT CODE: 9\n"]
    line = describe_failure(tmp_path, report, 9, 2, None)
    assert line == "rank 1 (pid 4321) on host h2 was killed by signal 9, SIGKILL (out of " \
                   "memory, or killed)"


def test_beacons_tell_an_ended_rank_from_a_live_one(tmp_path: Path) -> None:
    beacon = Beacon()
    closed = socket.create_server(("127.0.0.1", 0))
    gone_port = closed.getsockname()[1]
    closed.close()
    assert reachable("127.0.0.1", beacon.port) == "up"
    assert reachable("127.0.0.1", gone_port) == "gone"
    (tmp_path / "ranks.json").write_text(json.dumps([["127.0.0.1", beacon.port],
                                                     ["127.0.0.1", gone_port]]))
    assert unreachable_ranks(tmp_path) == "rank 1 on host 127.0.0.1 ended (the host still " \
                                          "answers)"


def test_the_watchdog_ends_a_rank_stuck_in_a_collective(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import time
        from dlrun.distributed.watchdog import Watchdog, leave_note
        dog = Watchdog("rank 1 on host h2", lambda m: leave_note("rank1.lost", m), timeout=0.5)
        with dog.guard("an all-reduce"):
            time.sleep(30)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=30, env={"DLRUN_JOB_DIR": str(tmp_path),
                                                     "PATH": "/usr/bin:/bin"})
    assert out.returncode == 1
    expected = "rank 1 on host h2: an all-reduce got no answer from the other ranks for 0.5 s"
    assert out.stderr.startswith(f"error: {expected}")
    assert (tmp_path / "rank1.lost").read_text().startswith(expected)
