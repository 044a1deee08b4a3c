"""What keeps a job from hanging on a network that failed under it.

MPI blocks for ever when a peer stops answering without closing its connections (a cut
cable, a host that vanished): a rank in a collective then never returns. `Watchdog` ends this
rank when one collective has waited longer than $DLRUN_COMM_TIMEOUT seconds (default 300),
after leaving a note for the launcher. `Beacon` is a listening socket each rank keeps open: the
launcher connects to it to tell which hosts it can still reach (refused: the rank is gone, the
host is up; no answer: the host or its link is down).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

JOB_DIR = "DLRUN_JOB_DIR"
TIMEOUT_VARIABLE = "DLRUN_COMM_TIMEOUT"
DEFAULT_TIMEOUT = 300.0


def leave_note(name: str, text: str) -> None:
    """Leave `text` in the job folder ($DLRUN_JOB_DIR) for the launcher, whole or not at all
    (an aborting job kills the others mid-write)."""
    folder = os.environ.get(JOB_DIR)
    if folder:
        try:
            tmp = Path(folder, f".{name}.{os.getpid()}")
            tmp.write_text(text)
            os.replace(tmp, Path(folder, name))
        except OSError:  # a host that does not share the launcher's folder: no note
            pass


def comm_timeout() -> float:
    """Seconds one collective may wait ($DLRUN_COMM_TIMEOUT, default 300)."""
    try:
        return max(0.5, float(os.environ.get(TIMEOUT_VARIABLE, DEFAULT_TIMEOUT)))
    except ValueError:
        return DEFAULT_TIMEOUT


class Watchdog:
    """Ends the process (exit status 1, nothing flushed: MPI_Finalize would block too) when a
    guarded call runs past `timeout`; `on_fire(message)` leaves word first."""

    def __init__(self, where: str, on_fire: Callable[[str], None],
                 timeout: float | None = None) -> None:
        self.where, self.on_fire = where, on_fire
        self.timeout = comm_timeout() if timeout is None else timeout
        self._since: float | None = None
        self._what = ""
        threading.Thread(target=self._watch, name="dlrun-watchdog", daemon=True).start()

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Time the call inside (`what`: e.g. 'an all-reduce') against the timeout."""
        outer = self._since
        if outer is None:
            self._since, self._what = time.monotonic(), what
        try:
            yield
        finally:
            if outer is None:
                self._since = None

    def _watch(self) -> None:
        while True:
            time.sleep(min(1.0, self.timeout / 4))
            since = self._since
            if since is not None and time.monotonic() - since > self.timeout:
                message = (f"{self.where}: {self._what} got no answer from the other ranks "
                           f"for {self.timeout:g} s (${TIMEOUT_VARIABLE})")
                try:
                    self.on_fire(message)
                    print(f"error: {message}", file=sys.stderr, flush=True)
                finally:
                    os._exit(1)


class Beacon:
    """A listening TCP socket on every address of this host, answered by a daemon thread."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("", 0), backlog=16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, name="dlrun-beacon", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.close()


def reachable(host: str, port: int, timeout: float = 2.0) -> str:
    """'up' (the rank answers), 'gone' (the host refuses: the rank is dead) or 'unreachable'
    (no answer: the host or the network to it is down)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "up"
    except ConnectionRefusedError:
        return "gone"
    except OSError:
        return "unreachable"
