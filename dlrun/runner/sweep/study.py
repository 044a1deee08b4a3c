"""The Optuna side of a sweep: storage, study, sampler and pruner, and claiming trials so that
the study ends with exactly the requested number of finished trials.

Storage is a journal file inside the sweep folder (embedded), or a database URL shared by
workers on several machines (PostgreSQL through SQLAlchemy and psycopg; SQLite for one
machine). Optuna's `MaxTrialsCallback` stops workers only after a trial ends, so W parallel
workers overshoot by up to W - 1; instead a worker claims each trial under a lock (a file lock,
or a PostgreSQL advisory lock) after counting finished plus running trials, which is exact.

Finished trials are COMPLETE, PRUNED, or FAIL with an error of their own. A trial that was
running when its sweep was killed is marked FAIL with the user attribute `interrupted` (it does
not count) and its parameters are queued to run again.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dlrun.config import SweepConfig
from dlrun.errors import SweepError
from dlrun.runner.sweep.space import grid_space

JOURNAL_FILE = "study.journal"
LOCK_FILE = "study.lock"


def require_optuna() -> Any:
    """The optuna module, or SweepError saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise SweepError("dlrun sweep needs Optuna: pip install 'dlrun[sweep]'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the runner never prints
    return optuna


# --------------------------------------------------------------------------- storage


def normalize_url(url: str) -> str:
    """`postgresql://` and `postgres://` use psycopg (3), the driver `dlrun[sweep]` installs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def masked(url: str | None) -> str:
    """A storage URL without its password (for messages and sweep.json)."""
    if url is None:
        return "embedded"
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads: say nothing of it
        return "<storage URL>"


def check_storage(url: str) -> str:
    """Connect once to a database URL (SweepError if it cannot be reached); the normalized URL."""
    url = normalize_url(url)
    shown = masked(url)
    if not url.startswith(("postgresql", "sqlite")):
        raise SweepError(f"--storage {shown}: expected a postgresql:// or sqlite:/// URL")
    try:
        from sqlalchemy import create_engine, text
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:
        raise SweepError("--storage needs SQLAlchemy: pip install 'dlrun[sweep]'") from None
    args = {"connect_timeout": 5} if url.startswith("postgresql") else {}
    try:
        engine = create_engine(url, connect_args=args)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except (SQLAlchemyError, ImportError, OSError) as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise SweepError(f"--storage {shown}: cannot connect: {reason}") from None
    return url


def open_storage(folder: Path, url: str | None) -> Any:
    """Optuna storage: the sweep folder's journal file, or the database at `url`."""
    optuna = require_optuna()
    if url is None:
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = str(folder / JOURNAL_FILE)
        return optuna.storages.JournalStorage(
            JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    with claim_lock(folder, url, "dlrun-optuna-schema"):  # machines create the tables once
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def open_study(storage: Any, study_name: str, sweep: SweepConfig, seed: int) -> Any:
    """Create or load the study with the sweep's direction, sampler and pruner."""
    optuna = require_optuna()
    return optuna.create_study(study_name=study_name, storage=storage, direction=sweep.goal,
                               sampler=make_sampler(sweep, seed), pruner=make_pruner(sweep),
                               load_if_exists=True)


def make_sampler(sweep: SweepConfig, seed: int) -> Any:
    optuna = require_optuna()
    if sweep.sampler == "grid":
        class Grid(optuna.samplers.GridSampler):
            def after_trial(self, *args: Any, **kwargs: Any) -> None:
                """No study.stop() once the grid is done (it works only inside optimize());
                claim() caps the trial count at the grid size instead."""

        return Grid(grid_space(sweep), seed=seed)
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(sweep: SweepConfig) -> Any:
    optuna = require_optuna()
    p = sweep.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials,
                                           n_warmup_steps=p.warmup_evals)
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def worker_seed(seed: int, worker: int, shared: bool, existing: int) -> int:
    """Each worker's sampler seed: the config's seed for the only worker of a new embedded
    sweep; distinct per worker, per continuation (`existing` trials) and, on shared storage,
    per process, so random starts do not repeat earlier ones."""
    if worker == 0 and not shared and existing == 0:
        return seed
    text = f"{seed}:{worker}:{existing}:{os.getpid() if shared else 0}:{socket.gethostname()}"
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


# --------------------------------------------------------------------------- claiming trials


def is_interrupted(t: Any) -> bool:
    return bool(t.user_attrs.get("interrupted"))


def counted(trials: list[Any]) -> int:
    """Finished (complete, pruned, failed on their own) plus running trials."""
    return sum(1 for t in trials
               if t.state.name in ("COMPLETE", "PRUNED", "RUNNING")
               or (t.state.name == "FAIL" and not is_interrupted(t)))


def finished(trials: list[Any]) -> int:
    """Finished trials that count toward the requested number."""
    return sum(1 for t in trials if t.state.name in ("COMPLETE", "PRUNED")
               or (t.state.name == "FAIL" and not is_interrupted(t)))


@contextmanager
def claim_lock(folder: Path, url: str | None, study_name: str) -> Iterator[None]:
    """Only one worker (of any machine) counts and asks at a time."""
    if url is not None and url.startswith("postgresql"):
        from sqlalchemy import create_engine, text
        from sqlalchemy.pool import NullPool

        key = int(hashlib.sha256(study_name.encode()).hexdigest()[:15], 16)
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
        finally:
            engine.dispose()
        return
    path = Path(url.split("///", 1)[1] + ".lock") if url is not None else folder / LOCK_FILE
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def claim(study: Any, target: int, folder: Path, url: str | None, owner: str) -> Any | None:
    """A new running trial (tagged with its owner), or None once `target` trials are finished
    or running."""
    with claim_lock(folder, url, study.study_name):
        if counted(study.get_trials(deepcopy=False)) >= target:
            return None
        trial = study.ask()
        trial.set_user_attr("owner", owner)
        return trial


def recover_interrupted(study: Any, storage: Any, owner: str) -> list[Any]:
    """Mark this owner's RUNNING trials (left by a killed sweep) FAIL + interrupted and queue
    their parameters again; returns them."""
    optuna = require_optuna()
    study_id = storage.get_study_id_from_name(study.study_name)
    stale = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
             if t.user_attrs.get("owner") == owner]
    for t in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, "interrupted", True)
        storage.set_trial_user_attr(trial_id, "error", "the sweep was killed while this trial "
                                                       "ran; its parameters run again")
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(dict(t.params), user_attrs={"rerun_of": t.number})
    return stale


def owner_id(folder: Path) -> str:
    """Who runs a trial: this machine and sweep folder (a killed sweep's trials are found by it)."""
    return f"{socket.gethostname()}:{folder.resolve()}"
