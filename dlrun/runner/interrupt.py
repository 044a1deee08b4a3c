"""Ctrl-C during training stops between steps, never inside one.

A step updates parameters and optimizer state one after another (in place, in a static plan),
so an interrupt that lands inside it would leave a half-applied step in the checkpoint. The
first SIGINT only asks for a stop; the loop takes it after the step in flight, so the saved
state is exactly "n steps done". On several ranks the request travels in the step's own
all-reduce (DataParallel), so every rank stops after the same step. A second SIGINT interrupts
at once, as Python's default handler does.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class StopRequest:
    """The stop asked for by Ctrl-C: `asked()` after each step says whether to stop now."""

    def __init__(self, parallel: Any = None) -> None:
        self.parallel = parallel  # distributed.DataParallel on several ranks
        self.requested = False

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self.requested = True
        if self.parallel is not None:
            self.parallel.ask_stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second one: at once

    def asked(self) -> bool:
        """True when this process (or, on several ranks, any rank) asked to stop."""
        if self.parallel is not None:
            return self.parallel.stop_agreed()
        return self.requested

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT this way while training (only the main thread may set handlers)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
