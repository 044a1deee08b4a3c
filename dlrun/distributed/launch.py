"""`dlrun train --nproc N`: start N workers with MPI's `mpiexec` and say how the job ended.

The launcher gives the job a folder ($DLRUN_JOB_DIR) where each worker leaves its pid, the
error it failed with, and rank 0 the run directory; with what mpiexec reports about a worker
that died of a signal, that is enough to name the rank and the cause in one line. mpiexec runs
in its own session, so a Ctrl-C reaches the workers once, forwarded by the launcher (mpiexec
passes SIGINT on to every worker, and a second SIGINT makes it kill them).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from dlrun.distributed.world import INSTALL_HINT
from dlrun.errors import DistributedError

JOB_DIR = "DLRUN_JOB_DIR"
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
                   check: Callable[[int], None]) -> JobPlace:
    """The --nproc decision. With N > 1 outside an MPI job: `check(N)` (e.g. that the config's
    batch splits over N ranks), then run the same command (`argv` less --nproc) on N workers
    and wait for them. Inside a job: this worker's World (a different --nproc is an error).
    Otherwise alone."""
    from dlrun.distributed import world

    job = world.launched_size()
    if nproc is not None and nproc > 1 and job == 1:
        check(nproc)
        return JobPlace(exit_status=launch(worker_args(argv), nproc))
    if nproc not in (None, 1, job):
        raise DistributedError(f"--nproc {nproc}: this process is one of {job} started by "
                               "mpiexec; leave --nproc out under mpiexec")
    return JobPlace(world=world.join())


def worker_args(argv: Sequence[str]) -> list[str]:
    """A command's arguments for its workers: the same, less `--nproc N` / `--nproc=N`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
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


def worker_environment(nproc: int, job_dir: Path) -> dict[str, str]:
    """The workers' environment: BLAS threads split between the ranks on this machine
    (unless set already) and the job folder."""
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    for name in THREAD_VARIABLES:
        env.setdefault(name, threads)
    env[JOB_DIR] = str(job_dir)
    return env


def launch(args: list[str], nproc: int, out: IO[str] | None = None) -> int:
    """Run `dlrun ARGS` on `nproc` ranks; the exit status (130 after a Ctrl-C). A failed job
    raises DistributedError naming the rank, the cause and rank 0's last checkpoint."""
    mpiexec = find_mpiexec()
    out = out or sys.stdout
    with tempfile.TemporaryDirectory(prefix="dlrun-job-") as tmp:
        job = Path(tmp)
        cmd = [mpiexec, "-n", str(nproc), sys.executable, "-m", "dlrun", *args]
        proc = subprocess.Popen(cmd, env=worker_environment(nproc, job), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        report, interrupted = _follow(proc, out)
        if proc.returncode == 0:
            return 130 if interrupted else 0
        raise DistributedError(describe_failure(job, report, proc.returncode, nproc,
                                                _read(job / "run")))


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
                     run_dir: str | None) -> str:
    """One line: which rank failed and of what, and where the last checkpoint is."""
    text = "".join(report)
    errors = sorted(job.glob("rank*.error"), key=lambda p: int(p.stem[4:]))
    if errors:
        what = f"rank {errors[0].stem[4:]} failed: {_read(errors[0])}"
    else:
        what = _signal_death(job, text) or f"the MPI job failed (mpiexec exit status {code})"
    if run_dir and (Path(run_dir) / "checkpoints").is_dir():
        what += (f"; the last checkpoint is in {run_dir} (continue with: dlrun train --resume "
                 f"{run_dir} --nproc {nproc})")
    return what


def _signal_death(job: Path, text: str) -> str | None:
    pid = re.search(r"PID (\d+) RUNNING AT", text)
    code = re.search(r"EXIT CODE: (\d+)", text)
    if not (pid and code):
        return None
    ranks = {_read(p): p.stem[4:] for p in job.glob("rank*.pid")}
    rank = ranks.get(pid.group(1), "?")
    number = int(code.group(1))
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"rank {rank} (pid {pid.group(1)}) exited with status {number}"
    cause = " (out of memory, or killed)" if name == "SIGKILL" else ""
    return f"rank {rank} (pid {pid.group(1)}) was killed by signal {number}, {name}{cause}"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


# ----- the workers' side ---------------------------------------------------------------------
def _note(name: str, text: str) -> None:
    """Leave `text` for the launcher, whole or not at all (an aborting job kills the others
    mid-write)."""
    folder = os.environ.get(JOB_DIR)
    if folder:
        tmp = Path(folder, f".{name}.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, Path(folder, name))


def announce_run_dir(run_dir: Path) -> None:
    """Rank 0 tells the launcher where the run directory is."""
    _note("run", str(run_dir))


def run_worker(world: Any, body: Any, debug: bool = False) -> Any:
    """Run `body()` as rank `world.rank`; if it fails, leave the error for the launcher, say
    it on stderr and abort the whole job (the other ranks would wait for this one forever)."""
    _note(f"rank{world.rank}.pid", str(os.getpid()))
    try:
        return body()
    except BaseException as e:  # noqa: BLE001 - any failure must end the job, not hang it
        if isinstance(e, SystemExit) and not e.code:
            raise
        from dlrun.errors import DlrunError

        message = str(e) if isinstance(e, DlrunError) else f"{type(e).__name__}: {e}"
        if isinstance(e, KeyboardInterrupt):
            message = "interrupted"
        _note(f"rank{world.rank}.error", message)
        if debug:
            import traceback

            traceback.print_exc()
        print(f"rank {world.rank}: error: {message}", file=sys.stderr, flush=True)
        world.comm.Abort(1)
        raise
