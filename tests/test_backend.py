"""Backend helpers."""

from __future__ import annotations

import subprocess
import sys


def test_host_allocator_tuning_can_be_turned_off() -> None:
    code = ("from dlrun.backend import tune_host_allocator as t; import sys; "
            "sys.exit(0 if t() is False else 1)")
    out = subprocess.run([sys.executable, "-c", code], env={"DLRUN_MALLOC_TUNING": "0",
                                                            "PATH": ""}, check=False)
    assert out.returncode == 0


def test_host_allocator_tuning_is_idempotent() -> None:
    from dlrun.backend import tune_host_allocator

    assert tune_host_allocator() == tune_host_allocator()
