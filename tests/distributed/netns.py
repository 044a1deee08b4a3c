"""Hosts made of Linux network namespaces, for multi-host tests and benchmarks on one machine.

`Cluster(["h1", "h2"])` makes one namespace per host and a "head" namespace for the launching
side (hydra's proxies connect back to mpiexec, so it needs an address on the network too), each
with its own network stack and, through the launcher, its own hostname (a UTS namespace): MPI
sees separate machines and cannot take the shared-memory path between them. The hosts' `eth0`
are veth pairs whose other ends sit on a bridge inside a "switch" namespace that has no other
link: nothing can leave. Addresses are in 198.18.0.0/15 (reserved for benchmarking); each
namespace gets an /etc/netns/NAME/hosts (which `ip netns exec` puts over /etc/hosts) so the
names resolve. `netns_launcher.sh` stands in for ssh: MPICH reaches a host by entering the
namespace named like it.

Everything is named `dlt-<pid>-<n>-...`, so concurrent runs never meet, and `close()` removes it
all: the processes inside, the namespaces (and with them their links), the hosts files. Needs
root (CAP_NET_ADMIN, CAP_SYS_ADMIN): `missing_privileges()` says why not, for a skip.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

LAUNCHER = Path(__file__).with_name("netns_launcher.sh")
HIDE = Path("/run/dlrun-netns")  # HOST.hide: folders the launcher covers on HOST
_COUNT = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def missing_privileges() -> str | None:
    """Why network-namespace hosts cannot be made here (None: they can)."""
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "needs iproute2 (ip) and util-linux (unshare)"
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN) to create network namespaces"
    probe = f"dlt-{os.getpid()}-probe"
    made = _ip("netns", "add", probe, check=False)
    _ip("netns", "del", probe, check=False)
    return None if made.returncode == 0 else f"cannot create a network namespace: {made.stderr}"


class Cluster:
    """Hosts `names` (network namespaces) and a head namespace on one private bridge."""

    def __init__(self, names: list[str]) -> None:
        self.prefix = f"dlt-{os.getpid()}-{next(_COUNT)}-"
        self.switch = self.prefix + "sw"
        self.head = self.prefix + "head"
        self.hosts = [self.prefix + n for n in names]
        self.address = {h: f"198.18.0.{i + 1}" for i, h in enumerate([self.head, *self.hosts])}
        self._made: list[str] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        self._add(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        hosts = "".join(f"{a} {h}\n" for h, a in self.address.items())
        hosts = f"127.0.0.1 localhost\n{hosts}"
        for i, name in enumerate([self.head, *self.hosts]):
            self._add(name)
            port = f"p{i}"
            _ip("link", "add", "name", "eth0", "netns", name, "type", "veth", "peer", "name",
                port, "netns", self.switch)
            _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", name, "addr", "add", f"{self.address[name]}/24", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
            folder = Path("/etc/netns", name)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "hosts").write_text(hosts)

    def _add(self, name: str) -> None:
        _ip("netns", "add", name)
        self._made.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def command(self, host: str, argv: list[str]) -> list[str]:
        """`argv` as run on `host` (a namespace name): its network, its hostname."""
        return ["ip", "netns", "exec", host, "unshare", "--uts", "--", "sh", "-c",
                'hostname "$0" && exec "$@"', host, *argv]

    def environment(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment in which MPICH reaches the hosts through the namespace launcher.
        UCX (MPICH's network layer here) recognises one machine by its boot id, whatever the
        hostname, and would pass messages between namespaces through shared memory; UCX_TLS
        keeps it on TCP, as between real hosts (MPICH's own shared memory still serves the
        ranks of one host)."""
        env = dict(os.environ if base is None else base)
        env.update(HYDRA_LAUNCHER="ssh", HYDRA_LAUNCHER_EXEC=str(LAUNCHER), UCX_TLS="tcp")
        return env

    def hide(self, host: str, folder: Path) -> None:
        """Make `folder` look empty on `host` (as on a host without that file system)."""
        HIDE.mkdir(exist_ok=True)
        with open(HIDE / f"{host}.hide", "a") as f:
            f.write(f"{folder}\n")

    def bytes_through(self, host: str) -> int:
        """Bytes received plus sent by `host`'s network interface so far."""
        out = _ip("-n", host, "-j", "-s", "link", "show", "dev", "eth0").stdout
        stats = json.loads(out)[0]["stats64"]
        return int(stats["rx"]["bytes"]) + int(stats["tx"]["bytes"])

    def link(self, host: str, up: bool) -> None:
        """Cut (or restore) `host`'s cable."""
        _ip("-n", host, "link", "set", "eth0", "up" if up else "down")

    def limit(self, host: str, rate: str) -> None:
        """Limit `host`'s link to `rate` (e.g. '100mbit') both ways (tbf on each veth end)."""
        port = f"p{[self.head, *self.hosts].index(host)}"
        for ns, dev in ((host, "eth0"), (self.switch, port)):
            subprocess.run(["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev,
                            "root", "tbf", "rate", rate, "burst", "256kb", "latency", "200ms"],
                           check=True, capture_output=True)

    def pids(self, host: str) -> list[int]:
        """The processes running on `host` (in its network namespace)."""
        out = _ip("netns", "pids", host, check=False).stdout
        return [int(p) for p in out.split()]

    def remove(self, host: str) -> None:
        """Make `host` vanish, as a host that loses power: off the network first (nothing it
        sends on its way out, no reset, reaches the others), then everything on it killed and
        its namespace (and link) deleted."""
        _ip("-n", host, "link", "del", "eth0", check=False)
        self._kill(host)
        _ip("netns", "del", host, check=False)
        shutil.rmtree(Path("/etc/netns", host), ignore_errors=True)
        (HIDE / f"{host}.hide").unlink(missing_ok=True)

    def _kill(self, host: str) -> None:
        for _ in range(50):
            pids = self.pids(host)
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)

    def close(self) -> None:
        """Remove every process, namespace, link and hosts file this cluster made."""
        for name in reversed(self._made):
            self.remove(name)
        self._made.clear()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
