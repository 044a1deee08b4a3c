"""Several hosts: `--hosts h1,h2:2` or `--hostfile PATH` (MPICH's format: one `host[:slots]` a
line, `#` comments), handed to MPICH's mpiexec, which reaches each host the way it is set to
(ssh by default; HYDRA_LAUNCHER, HYDRA_LAUNCHER_EXEC and HYDRA_HOST_FILE are its own settings
and are honoured). Every host needs the same paths, as with any MPI job: before the job starts,
one process per host checks that it sees the files the command reads.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dlrun.errors import DistributedError

PROBE_SECONDS = 60.0  # reaching every host once (ssh, start-up) takes at most this long


@dataclass(frozen=True)
class Hosts:
    """The hosts of a job and their slots (None: as many ranks as mpiexec puts there)."""

    names: tuple[str, ...]
    slots: tuple[int | None, ...]
    source: str  # what the user gave: '--hosts ...', '--hostfile PATH' or '$HYDRA_HOST_FILE'

    @property
    def total_slots(self) -> int | None:
        return None if None in self.slots else sum(s for s in self.slots if s is not None)

    def mpiexec_args(self) -> list[str]:
        """mpiexec's `-hosts` for these hosts (slots kept, as `host:n`)."""
        spec = ",".join(n if s is None else f"{n}:{s}" for n, s in zip(self.names, self.slots,
                                                                      strict=True))
        return ["-hosts", spec]


def _entry(item: str, where: str) -> tuple[str, int | None]:
    name, _, slots = item.strip().partition(":")
    if not name or (slots and not (slots.isdigit() and int(slots) > 0)):
        raise DistributedError(f"{where}: {item.strip()!r} is not host or host:slots "
                               "(slots a positive number)")
    return name, int(slots) if slots else None


def parse_hosts(spec: str) -> Hosts:
    """`h1,h2:2` -> Hosts."""
    items = [i for i in spec.split(",") if i.strip()]
    if not items:
        raise DistributedError("--hosts: give host names, e.g. --hosts node1,node2:2")
    names, slots = zip(*(_entry(i, "--hosts") for i in items), strict=True)
    return Hosts(names, slots, f"--hosts {spec}")


def read_hostfile(path: Path, source: str | None = None) -> Hosts:
    """An MPICH hostfile -> Hosts (a line's `key=value` extras, if any, are left to mpiexec)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise DistributedError(f"{source or '--hostfile'} {path}: cannot read it "
                               f"({e.strerror})") from None
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        item = line.split("#", 1)[0].split()
        if item:
            entries.append(_entry(item[0], f"{path}:{number}"))
    if not entries:
        raise DistributedError(f"{path}: names no host")
    names, slots = zip(*entries, strict=True)
    return Hosts(names, slots, f"{source or '--hostfile'} {path}")


def resolve_hosts(hosts: str | None, hostfile: Path | None) -> Hosts | None:
    """The job's hosts from --hosts, --hostfile or MPICH's $HYDRA_HOST_FILE (None: this
    machine only)."""
    if hosts is not None and hostfile is not None:
        raise DistributedError("give --hosts or --hostfile, not both")
    if hosts is not None:
        return parse_hosts(hosts)
    if hostfile is not None:
        return read_hostfile(hostfile)
    env = os.environ.get("HYDRA_HOST_FILE")
    return read_hostfile(Path(env), "$HYDRA_HOST_FILE") if env else None


def check_paths(mpiexec: str, hosts: Hosts, paths: Sequence[str],
                env: dict[str, str]) -> None:
    """Start one process on every host (through mpiexec, as the job will be) that says which of
    `paths` it cannot see; a DistributedError names the first such host and path."""
    unique = list(dict.fromkeys([os.getcwd(), *map(str, paths)]))
    cmd = [mpiexec, *hosts.mpiexec_args(), "-ppn", "1", "-n", str(len(hosts.names)),
           sys.executable, "-m", "dlrun.distributed.hosts", *unique]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True,
                             timeout=PROBE_SECONDS, start_new_session=True)
    except subprocess.TimeoutExpired:
        raise DistributedError(f"{hosts.source}: not every host answered within "
                               f"{PROBE_SECONDS:.0f} s (can mpiexec reach them? it uses "
                               f"{os.environ.get('HYDRA_LAUNCHER', 'ssh')})") from None
    # mpiexec interleaves the hosts' output in chunks: find each whole record, not lines
    seen = {}
    for record in re.findall(r"<dlrun-probe>(.*?)</dlrun-probe>", out.stdout):
        host, missing = json.loads(record)
        seen[host] = missing
    problems = sorted((h, m) for h, m in seen.items() if m)
    if problems:
        host, missing = problems[0]
        raise DistributedError(f"host {host} cannot see {missing} (every host needs the same "
                               "paths: a shared file system, or the same copy on each)")
    if out.returncode != 0 or len(seen) < len(hosts.names):
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise DistributedError(f"{hosts.source}: could not start a process on every host "
                               f"({tail})")


def _probe(paths: list[str]) -> None:
    """One record, in one write: this host's name and the first path it cannot see ('' if
    none)."""
    import socket

    missing = next((p for p in paths if not os.path.exists(p)), "")
    record = json.dumps([socket.gethostname(), missing])
    os.write(1, f"<dlrun-probe>{record}</dlrun-probe>\n".encode())


if __name__ == "__main__":
    _probe(sys.argv[1:])
