"""Helpers for tests that start real MPI jobs: tiny configs, `dlrun` in a subprocess, the
weights a run ended with, and the pids of a job's ranks."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dlrun.runner.io.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def blobs_config(path: Path, **train: Any) -> Path:
    """A float64 MLP on 3 Gaussian blobs; 614 samples -> 553 training rows, so a batch of 50
    leaves a last batch of 3 that two ranks split 2 / 1 (unequal shares)."""
    cfg = {
        "name": "dp", "seed": 3, "mode": "static", "dtype": "float64",
        "data": {"name": "blobs", "options": {"n": 614, "n_classes": 3, "n_features": 4}},
        "model": {"type": "mlp", "hidden": [16, 16], "activation": "tanh"},
        "optimizer": {"name": "adam", "lr": 0.01},
        "train": {"epochs": 3, "batch_size": 50, "drop_last": False, "grad_clip_norm": 1.0,
                  **train},
        "logging": {"log_every": 5, "plots": False},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def dlrun(*args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess:
    """`python -m dlrun ARGS` from the project root; output captured as text."""
    return subprocess.run([sys.executable, "-m", "dlrun", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=timeout, **kw)


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dlrun", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run_dir(runs: Path) -> Path:
    (found,) = glob.glob(str(runs / "*"))
    return Path(found)


def weights(run: Path, tag: str = "last") -> dict[str, np.ndarray]:
    arrays, _ = load_checkpoint(run, tag)
    return {k: v for k, v in arrays.items() if k.startswith("model.")}


def assert_same_weights(a: dict, b: dict, rtol: float, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=rtol, atol=atol, err_msg=k)


def wait_for(predicate: Any, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError("condition not met")
        time.sleep(0.05)


def interrupt_once_saved(proc: subprocess.Popen, runs: Path) -> tuple[Path, dict]:
    """Send SIGINT (Ctrl-C) to a started training once it saved a checkpoint under `runs`;
    it must end with status 130. The run directory it left and its summary."""
    try:
        wait_for(lambda: any(runs.glob("*/checkpoints/last.safetensors")))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    run = run_dir(runs)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    return run, summary


def rank_pids(marker: str) -> dict[int, int]:
    """{rank: pid} of the MPI workers whose command line contains `marker`."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{d}/cmdline").read_text()
            env = Path(f"/proc/{d}/environ").read_text().split("\0")
        except OSError:
            continue
        if marker in cmdline:
            for item in env:
                if item.startswith("PMI_RANK="):
                    out[int(item[9:])] = int(d)
    return out
