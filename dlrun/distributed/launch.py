"""`dlrun train --nproc N`: start N workers with MPI's `mpiexec` and say how the job ended.

The launcher gives the job a folder ($DLRUN_JOB_DIR) where each worker leaves its pid, the
error it failed with, and rank 0 the run directory; with what mpiexec reports about a worker
that died of a signal, that is enough to name the rank and the cause in one line. mpiexec runs
in its own session, so a Ctrl-C reaches the workers once, forwarded by the launcher (mpiexec
passes SIGINT on to every worker, and a second SIGINT makes it kill them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from dlrun.distributed.hosts import Hosts, check_paths, resolve_hosts
from dlrun.distributed.watchdog import JOB_DIR, leave_note, reachable
from dlrun.distributed.world import INSTALL_HINT
from dlrun.errors import DistributedError

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
# mpiexec's own report of a failed job: kept out of the user's view, read for the cause
_HYDRA = re.compile(r"^(=+|=   .*|YOUR APPLICATION TERMINATED.*|This typically refers.*|"
                    r"Please see the FAQ.*|\[mpiexec@.*|Abort\(\d+\) on node.*)$")


@dataclass(frozen=True)
class JobPlace:
    """Where a command runs: alone (world None), as one rank of a job (world), or it has just
    run as a whole job of workers and ended with `exit_status`."""

    world: Any = None  # distributed.World
    exit_status: int | None = None


def join_or_launch(nproc: int | None, argv: Sequence[str],
                   check: Callable[[int], Sequence[str] | None],
                   hosts: str | None = None, hostfile: Path | None = None) -> JobPlace:
    """The --nproc decision. With N > 1 outside an MPI job: `check(N)` (e.g. that the config's
    batch splits over N ranks; it returns the paths every host must see), then run the same
    command (`argv` less --nproc/--hosts/--hostfile) on N workers, on the hosts of `hosts`
    (h1,h2:2), `hostfile` or MPICH's $HYDRA_HOST_FILE if any, and wait for them. Inside a
    job: this worker's World (a different --nproc is an error). Otherwise alone."""
    from dlrun.distributed import world

    job = world.launched_size()
    where = None
    if job == 1 and (hosts or hostfile or (nproc or 1) > 1):
        where = resolve_hosts(hosts, hostfile)
        if nproc is None and where is not None:
            nproc = where.total_slots or len(where.names)
    if nproc is not None and nproc > 1 and job == 1:
        paths = check(nproc) or ()
        return JobPlace(exit_status=launch(worker_args(argv), nproc, hosts=where,
                                           paths=paths))
    if nproc not in (None, 1, job):
        raise DistributedError(f"--nproc {nproc}: this process is one of {job} started by "
                               "mpiexec; leave --nproc out under mpiexec")
    return JobPlace(world=world.join())


LAUNCH_OPTIONS = ("--nproc", "--hosts", "--hostfile")


def worker_args(argv: Sequence[str]) -> list[str]:
    """A command's arguments for its workers: the same, less the launch options (`--nproc N`,
    `--hosts H`, `--hostfile F`, also written `--nproc=N`)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in LAUNCH_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in LAUNCH_OPTIONS)):
            out.append(arg)
    return out


def find_mpiexec() -> str:
    """mpiexec beside this Python (the venv's MPICH) or on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        raise DistributedError(f"--nproc needs MPI, and mpiexec is not installed or not on "
                               f"PATH: {INSTALL_HINT}")
    return found


def worker_environment(nproc: int, job_dir: Path, hosts: Hosts | None = None) -> dict[str, str]:
    """The workers' environment: BLAS threads split between the ranks on each machine
    (unless set already) and the job folder."""
    env = dict(os.environ)
    per_host = nproc if hosts is None else -(-nproc // len(hosts.names))
    threads = str(max(1, (os.cpu_count() or 1) // per_host))
    for name in THREAD_VARIABLES:
        env.setdefault(name, threads)
    env[JOB_DIR] = str(job_dir)
    return env


def _job_folder(hosts: Hosts | None) -> tempfile.TemporaryDirectory:
    """Where the workers leave their notes: with several hosts in the working directory (the
    same path on every host, as MPI needs; shared, the notes of every host arrive), else in
    the temporary folder."""
    if hosts is not None and os.access(os.getcwd(), os.W_OK):
        return tempfile.TemporaryDirectory(prefix=".dlrun-job-", dir=os.getcwd())
    return tempfile.TemporaryDirectory(prefix="dlrun-job-")


def launch(args: list[str], nproc: int, out: IO[str] | None = None,
           hosts: Hosts | None = None, paths: Sequence[str] = ()) -> int:
    """Run `dlrun ARGS` on `nproc` ranks (on `hosts`, after checking each sees `paths`); the
    exit status (130 after a Ctrl-C). A failed job raises DistributedError naming the rank
    (and host), the cause and rank 0's last checkpoint."""
    mpiexec = find_mpiexec()
    out = out or sys.stdout
    with _job_folder(hosts) as tmp:
        job = Path(tmp)
        env = worker_environment(nproc, job, hosts)
        if hosts is not None:
            check_paths(mpiexec, hosts, paths, env)
        placement = hosts.mpiexec_args() if hosts is not None else []
        cmd = [mpiexec, *placement, "-n", str(nproc), sys.executable, "-m", "dlrun", *args]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        guard = JobGuard(proc, job)
        report, interrupted = _follow(proc, out)
        guard.stop()
        if proc.returncode == 0:
            return 130 if interrupted else 0
        _kill_group(proc)  # whatever mpiexec left behind (a proxy it could not reach)
        if guard.verdict is None and hosts is not None:  # e.g. a host whose proxy vanished
            guard.verdict = unreachable_ranks(job)
        raise DistributedError(describe_failure(job, report, proc.returncode, nproc,
                                                _read(job / "run"), guard.verdict, hosts))


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class JobGuard:
    """Watches a running job's folder: once a rank reports that its peers stopped answering,
    find out which hosts can still be reached (their ranks' beacons), give mpiexec
    `grace` seconds to end the job, then end it (mpiexec may wait for ever on a proxy whose
    host is gone)."""

    def __init__(self, proc: subprocess.Popen, job: Path, grace: float = 3.0) -> None:
        self.proc, self.job, self.grace = proc, job, grace
        self.verdict: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="dlrun-job-guard", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            if self.proc.poll() is not None:
                return
            if any(self.job.glob("rank*.lost")):
                self.verdict = unreachable_ranks(self.job)
                if self._stop.wait(self.grace) or self.proc.poll() is not None:
                    return
                _kill_group(self.proc)
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def unreachable_ranks(job: Path) -> str | None:
    """Which ranks no longer answer on their beacon, by host, in one phrase (None: all do)."""
    try:
        table = json.loads((job / "ranks.json").read_text())
    except (OSError, ValueError):
        return None
    with ThreadPoolExecutor(max_workers=min(32, len(table))) as pool:
        states = list(pool.map(lambda hp: reachable(hp[0], hp[1]), table))
    lost: dict[tuple[str, str], list[int]] = {}
    for rank, ((host, _), state) in enumerate(zip(table, states, strict=True)):
        if state != "up":
            lost.setdefault((host, state), []).append(rank)
    if any(state == "unreachable" for _, state in lost):  # the cause; the rest followed it
        lost = {k: v for k, v in lost.items() if k[1] == "unreachable"}
    phrases = []
    for (host, state), ranks in lost.items():
        which = f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"
        if state == "unreachable":
            phrases.append(f"host {host} ({which}) stopped answering: the host or the "
                           "network to it is down")
        else:
            phrases.append(f"{which} on host {host} ended (the host still answers)")
    return "; ".join(phrases) or None


def _follow(proc: subprocess.Popen, out: IO[str]) -> tuple[list[str], bool]:
    """Pass the workers' output on (without mpiexec's banner) until mpiexec exits; a Ctrl-C
    here is forwarded to mpiexec. Returns mpiexec's own lines and whether Ctrl-C came."""
    report: list[str] = []
    interrupted = False
    assert proc.stdout is not None
    while True:
        try:
            for raw in proc.stdout:
                line = raw.decode(errors="replace")
                if _HYDRA.match(line.rstrip("\n")):
                    report.append(line)
                else:
                    out.write(line)
                    out.flush()
            proc.wait()
            return report, interrupted
        except KeyboardInterrupt:
            interrupted = True
            proc.send_signal(signal.SIGINT)


def describe_failure(job: Path, report: list[str], code: int, nproc: int,
                     run_dir: str | None, verdict: str | None = None,
                     hosts: Hosts | None = None) -> str:
    """One line: which rank (on which host) failed and of what, and where the last checkpoint
    is. A rank's own error comes first, then a rank killed by a signal, then the ranks the
    launcher could no longer reach (`verdict`), then what a rank said about its lost peers."""
    text = "".join(report)
    errors = sorted(job.glob("rank*.error"), key=lambda p: int(p.stem[4:]))
    lost = sorted(job.glob("rank*.lost"), key=lambda p: int(p.stem[4:]))
    if errors:
        what = f"rank {errors[0].stem[4:]} failed: {_read(errors[0])}"
    else:
        what = (_signal_death(job, text) or verdict or (_read(lost[0]) if lost else None)
                or f"the MPI job failed (mpiexec exit status {code})")
    if run_dir and (Path(run_dir) / "checkpoints").is_dir():
        where = f" {hosts.source}" if hosts is not None else ""
        what += (f"; the last checkpoint is in {run_dir} (continue with: dlrun train --resume "
                 f"{run_dir} --nproc {nproc}{where})")
    return what


def _signal_death(job: Path, text: str) -> str | None:
    pid = re.search(r"PID (\d+) RUNNING AT (\S+)", text)
    code = re.search(r"EXIT CODE: (\d+)", text)
    if not (pid and code):
        return None
    ranks = {_read(p): p.stem[4:] for p in job.glob("rank*.pid")}
    rank = ranks.get(pid.group(1), "?")
    number = int(code.group(1))
    on = f" on host {pid.group(2)}" if _several_hosts(job) else ""
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"rank {rank} (pid {pid.group(1)}){on} exited with status {number}"
    cause = " (out of memory, or killed)" if name == "SIGKILL" else ""
    return f"rank {rank} (pid {pid.group(1)}){on} was killed by signal {number}, {name}{cause}"


def _several_hosts(job: Path) -> bool:
    try:
        return len({host for host, _ in json.loads((job / "ranks.json").read_text())}) > 1
    except (OSError, ValueError):
        return False


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


# ----- the workers' side ---------------------------------------------------------------------
def announce_run_dir(run_dir: Path) -> None:
    """Rank 0 tells the launcher where the run directory is."""
    leave_note("run", str(run_dir))


def run_worker(world: Any, body: Any, debug: bool = False) -> Any:
    """Run `body()` as rank `world.rank`; if it fails, leave the error for the launcher, say
    it on stderr and abort the whole job (the other ranks would wait for this one forever)."""
    leave_note(f"rank{world.rank}.pid", str(os.getpid()))
    try:
        return body()
    except BaseException as e:  # noqa: BLE001 - any failure must end the job, not hang it
        if isinstance(e, SystemExit) and not e.code:
            raise
        from dlrun.errors import DlrunError

        message = str(e) if isinstance(e, DlrunError) else f"{type(e).__name__}: {e}"
        if isinstance(e, KeyboardInterrupt):
            message = "interrupted"
        lost = type(e).__name__ == "Exception" and type(e).__module__.startswith("mpi4py")
        leave_note(f"rank{world.rank}.{'lost' if lost else 'error'}", message)
        if debug:
            import traceback

            traceback.print_exc()
        print(f"rank {world.rank}: error: {message}", file=sys.stderr, flush=True)
        time.sleep(0.5)  # Abort tears the job down at once: let mpiexec forward the line first
        with world.guard("an abort"):  # Abort itself may wait on a peer that is gone
            world.comm.Abort(1)
        raise
