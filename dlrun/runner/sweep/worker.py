"""One worker process of `dlrun sweep --workers W`: `python -m dlrun.runner.sweep.worker K`
reads the sweep's spec (JSON) from stdin and runs trials until the study has enough.

The spec travels on stdin, not in a file, because a storage URL may hold a password. The
worker exits when its parent (the `dlrun sweep` command) is gone, even if that was killed with
SIGKILL, so a rerun of the command never races an orphan; its trial is then found RUNNING and
run again.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(3)


def main() -> int:
    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    spec = json.loads(sys.stdin.read())
    from dlrun.errors import DlrunError
    from dlrun.runner.sweep.driver import run_worker

    try:
        run_worker(spec, int(sys.argv[1]))
    except KeyboardInterrupt:
        return 130
    except DlrunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
