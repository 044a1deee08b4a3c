"""Tiny sweep configs (a blobs MLP: a trial takes a fraction of a second) and a real PostgreSQL
server for the shared-storage tests."""

from __future__ import annotations

import copy
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

TINY_SWEEP: dict[str, Any] = {
    "name": "tiny",
    "seed": 3,
    "data": {"name": "blobs", "options": {"n": 240, "n_classes": 3, "n_features": 4,
                                           "spread": 1.0}},
    "model": {"type": "mlp", "hidden": [16]},
    "optimizer": {"name": "adam", "lr": 0.01},
    "train": {"epochs": 3, "batch_size": 16},
    "logging": {"log_every": 5, "plots": False},
    "sweep": {"metric": "val_loss", "trials": 4, "sampler": "random", "pruner": "none",
              "parameters": {
                  "optimizer.lr": {"space": "loguniform", "lower": 1.0e-3, "upper": 1.0e-1},
                  "model.hidden": {"space": "choice", "categories": [[8], [16, 8]]}}},
}


def write_config(folder: Path, changes: dict[str, Any] | None = None, name: str = "sweep.yaml",
                 **sections: Any) -> Path:
    """TINY_SWEEP with `sections` replaced and dotted `changes` set; returns the file."""
    cfg = copy.deepcopy(TINY_SWEEP)
    cfg.update(copy.deepcopy(sections))
    for dotted, value in (changes or {}).items():
        node = cfg
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = folder / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True,
                          text=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL 15 server on 127.0.0.1 (trust auth) in a temporary folder, run as the
    `postgres` user (the server refuses root); skipped where the binaries or user are missing."""
    if not (PG_BIN / "initdb").exists() or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL server binaries not found")
    try:
        import pwd

        pg = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres user")
    if os.geteuid() != 0:
        pytest.skip("starting the server as the postgres user needs root")
    home = Path(tempfile.mkdtemp(prefix="dlrun-pg-", dir="/tmp"))
    os.chmod(home, 0o755)
    os.chown(home, pg.pw_uid, pg.pw_gid)
    data, port = home / "data", _free_port()
    try:
        _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(home / "log"), "-w",
                     "-o", f"-p {port} -h 127.0.0.1 -k {home}", "start")
    except subprocess.CalledProcessError as e:
        shutil.rmtree(home, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL: {e.stderr.strip()[:200]}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D",
                        str(data), "-m", "immediate", "-w", "stop"], capture_output=True,
                       timeout=60)
        time.sleep(0.2)
        shutil.rmtree(home, ignore_errors=True)
