"""`dlrun sweep`: search a config's hyperparameters with Optuna; reports through events, never
prints.

    runs/<stamp>-<name>-sweep/
      sweep.json  sweep.yaml    what was searched (name, fingerprint, storage) and the config
      study.journal             the embedded Optuna storage (unless --storage URL)
      trials/<NNNN>/            one ordinary run directory per trial (eval, compare, --resume)
      trials.csv  best.yaml  summary.json  plots/*.png
      logs/worker-<k>.log       what each worker process printed (--workers > 1)

Everything is checked before the folder is made (the search space, the metric, the storage
URL). Rerunning the same command continues the newest unfinished sweep of the same name and
fingerprint (search space and config); otherwise, or with `new`, a fresh folder is made.
`workers` > 1 runs that many processes on this machine (sweep_worker), the BLAS threads split
between them; other machines join through a shared `storage` URL.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from dlrun.atomic import atomic_write_json
from dlrun.config import ExperimentConfig, config_to_dict, dump_config, validate_config
from dlrun.errors import ConfigError, SweepError
from dlrun.runner.events import Callback, Message, SweepFinished, SweepProgress, SweepStarted, emit
from dlrun.runner.io import tensorboard
from dlrun.runner.io.metrics_log import read_summary
from dlrun.runner.io.rundir import sanitize_name, stamped_dir
from dlrun.runner.records import TrialRecord
from dlrun.runner.sweep.report import SWEEP_JSON, ranked, trial_rows, write_reports
from dlrun.runner.sweep.space import base_config, check_space, fingerprint
from dlrun.runner.sweep.study import (
    check_storage,
    claim,
    claim_lock,
    make_sampler,
    masked,
    open_storage,
    open_study,
    owner_id,
    recover_interrupted,
    require_optuna,
    worker_seed,
)
from dlrun.runner.sweep.trial import run_trial

SWEEP_YAML = "sweep.yaml"
FOLDER_LOCK = ".sweep.lock"
BLAS_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def sweep(cfg: ExperimentConfig, source: str = "config", callbacks: list[Callback] | None = None,
          trials: int | None = None, workers: int = 1, storage: str | None = None,
          runs_dir: Path | str | None = None, name: str | None = None,
          new: bool = False) -> dict[str, Any]:
    """Run (or continue) the sweep that cfg.sweep describes; returns its summary."""
    callbacks = list(callbacks or [])
    require_optuna()
    plan = _plan(cfg, source, trials, workers, storage, new)
    check_space(cfg, source)
    tensorboard.require(cfg)
    name = sanitize_name(name or cfg.name)
    fp = fingerprint(cfg)
    folder, note = _choose_folder(Path(runs_dir or cfg.logging.dir), name, fp, plan, new)
    with _FolderLock(folder) as lock_fd:
        if not (folder / SWEEP_JSON).exists():
            _write_meta(folder, cfg, name, fp, plan)
        return _run(cfg, folder, name, fp, plan, note, lock_fd, callbacks)


def _plan(cfg: ExperimentConfig, source: str, trials: int | None, workers: int,
          storage: str | None, new: bool) -> dict[str, Any]:
    """The checked command-line choices: trial count, workers, storage URL."""
    if cfg.sweep is None:
        raise ConfigError(f"{source}: no sweep section; add `sweep:` with the metric and the "
                          "parameters to search (see configs/sweep_mnist_mlp.yaml)")
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials: expected an integer >= 1, got {trials}")
    if workers < 1:
        raise ConfigError(f"--workers: expected an integer >= 1, got {workers}")
    n = trials or cfg.sweep.default_trials()
    if cfg.sweep.sampler == "grid":
        n = min(n, cfg.sweep.grid_size())
    url = check_storage(storage) if storage else None
    if url is not None and new:
        raise ConfigError("--new: a shared study is found by --name and its search space; "
                          "give a new --name to start another")
    return {"trials": n, "workers": workers, "storage": url}


def _choose_folder(root: Path, name: str, fp: str, plan: dict[str, Any],
                   new: bool) -> tuple[Path, str]:
    """The newest sweep of this name when it can go on, else a fresh folder (and why)."""
    previous = _previous(root, name)
    if new or not previous:
        why = " (--new)" if new and previous else ""
        return _new_folder(root, name), f"starting a new sweep{why}"
    last = previous[0]
    meta = json.loads((last / SWEEP_JSON).read_text(encoding="utf-8"))
    if meta.get("fingerprint") != fp or meta.get("storage") != masked(plan["storage"]):
        return _new_folder(root, name), (f"the search space, config or storage differs from "
                                         f"{last.name}: starting a new sweep")
    done = (read_summary(last) or {}).get("finished", 0)
    if done >= plan["trials"]:
        return _new_folder(root, name), (f"{last.name} already has {done} finished trials: "
                                         "starting a new sweep")
    return last, f"continuing {last.name} ({done} of {plan['trials']} trials finished)"


def _previous(root: Path, name: str) -> list[Path]:
    """Sweep folders of this name under root, newest first."""
    if not root.is_dir():
        return []
    found = []
    for p in root.glob(f"*-{name}-sweep*"):
        try:
            meta = json.loads((p / SWEEP_JSON).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if meta.get("name") == name:
            found.append(p)
    return sorted(found, key=lambda p: p.name, reverse=True)


def _new_folder(root: Path, name: str) -> Path:
    try:
        return stamped_dir(root, f"{name}-sweep")
    except FileExistsError as e:
        raise SweepError(str(e)) from None


class _FolderLock:
    """Holds the sweep folder for one command (and its workers, which inherit the file): a
    second command, or a killed one's surviving workers, make this wait, then fail."""

    def __init__(self, folder: Path, wait: float = 15.0) -> None:
        self.folder, self.wait = folder, wait

    def __enter__(self) -> int:
        self.fd = os.open(self.folder / FOLDER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self.fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise SweepError(f"{self.folder}: another dlrun sweep is running this "
                                     "sweep; wait for it, or start a new one with --new") from None
                time.sleep(0.2)

    def __exit__(self, *exc: Any) -> None:
        os.close(self.fd)


def _write_meta(folder: Path, cfg: ExperimentConfig, name: str, fp: str,
                plan: dict[str, Any]) -> None:
    atomic_write_json(folder / SWEEP_JSON, {
        "name": name, "study": f"{name}-{fp[:12]}", "fingerprint": fp,
        "storage": masked(plan["storage"]), "created": datetime.now().isoformat(sep=" "),
        "parameters": list(cfg.sweep.parameters) if cfg.sweep else []})
    dump_config(cfg, folder / SWEEP_YAML)


def _run(cfg: ExperimentConfig, folder: Path, name: str, fp: str, plan: dict[str, Any],
         note: str, lock_fd: int, callbacks: list[Callback]) -> dict[str, Any]:
    assert cfg.sweep is not None
    url, study_name, owner = plan["storage"], f"{name}-{fp[:12]}", owner_id(folder)
    storage = open_storage(folder, url)
    with claim_lock(folder, url, study_name):  # one machine creates the study
        study = open_study(storage, study_name, cfg.sweep, cfg.seed)
    stale = recover_interrupted(study, storage, owner)
    if stale:
        emit(callbacks, Message(f"{len(stale)} trial(s) were running when the sweep stopped "
                                "(marked failed; their parameters run again)"))
    base = base_config(cfg)
    facts = {"name": name, "folder": str(folder), "study": study_name,
             "storage": masked(url), "trials": plan["trials"], "workers": plan["workers"]}
    emit(callbacks, SweepStarted(folder, note, study_name, masked(url), plan["trials"],
                                 plan["workers"], cfg.sweep.metric, cfg.sweep.goal,
                                 list(cfg.sweep.parameters)))
    write_reports(folder, study, cfg.sweep, base, {**facts, "status": "running"}, plots=False)
    spec = {"config": config_to_dict(cfg), "folder": str(folder), "storage": url,
            "study": study_name, "trials": plan["trials"], "owner": owner}
    monitor = _Monitor(study, cfg, plan["trials"], callbacks)
    start = time.perf_counter()
    try:
        if plan["workers"] == 1:
            run_worker(spec, 0, notify=monitor)
        else:
            _run_processes(spec, plan["workers"], lock_fd, folder, monitor)
    except KeyboardInterrupt:
        write_reports(folder, study, cfg.sweep, base, {**facts, "status": "interrupted"})
        raise
    facts["wall_seconds"] = time.perf_counter() - start
    summary = write_reports(folder, study, cfg.sweep, base, facts)
    rows = ranked(trial_rows(study.get_trials(deepcopy=False), cfg.sweep), cfg.sweep.goal)
    emit(callbacks, SweepFinished(summary, rows))
    return {**summary, "ranked": rows}


class _Monitor:
    """Emits SweepProgress whenever the study's trials changed since the last look."""

    def __init__(self, study: Any, cfg: ExperimentConfig, trials: int,
                 callbacks: list[Callback]) -> None:
        self.study, self.sweep, self.trials, self.callbacks = study, cfg.sweep, trials, callbacks
        self.last: list[TrialRecord] | None = None

    def __call__(self, *_: Any) -> None:
        rows = trial_rows(self.study.get_trials(deepcopy=False), self.sweep)
        if rows != self.last:
            self.last = rows
            emit(self.callbacks, SweepProgress(rows, self.sweep.metric, self.sweep.goal,
                                               self.trials))


def run_worker(spec: dict[str, Any], worker: int, notify: Any = None) -> int:
    """Claim and run trials of the study until the requested number are finished or running;
    returns how many this worker ran. Used in-process and by each worker process."""
    cfg = validate_config(spec["config"], source=spec["folder"])
    assert cfg.sweep is not None
    folder, url = Path(spec["folder"]), spec["storage"]
    storage = open_storage(folder, url)
    study = open_study(storage, spec["study"], cfg.sweep, cfg.seed)
    existing = len(study.get_trials(deepcopy=False))
    study.sampler = make_sampler(cfg.sweep, worker_seed(cfg.seed, worker, url is not None,
                                                        existing))
    base = base_config(cfg)
    ran = 0
    while (trial := claim(study, spec["trials"], folder, url, spec["owner"])) is not None:
        if notify:
            notify()
        run_trial(study, trial, folder, cfg.sweep, base)
        ran += 1
        if notify:
            notify()
    return ran


def _run_processes(spec: dict[str, Any], workers: int, lock_fd: int, folder: Path,
                   monitor: _Monitor) -> None:
    """W worker processes (BLAS threads split between them); the monitor polls the storage."""
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env = {**os.environ, **dict.fromkeys(BLAS_THREADS, threads)}
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    procs = []
    for k in range(workers):
        with open(logs / f"worker-{k}.log", "ab") as log:
            p = subprocess.Popen([sys.executable, "-m", "dlrun.runner.sweep.worker", str(k)],
                                 stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                 env=env, pass_fds=(lock_fd,))
        assert p.stdin is not None
        p.stdin.write(json.dumps(spec).encode())
        p.stdin.close()
        procs.append(p)
    try:
        while any(p.poll() is None for p in procs):
            monitor()
            time.sleep(0.5)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(2)  # SIGINT: each worker gives its trial back, then stops
        for p in procs:
            p.wait()
        raise
    monitor()
    failed = [(k, p.returncode) for k, p in enumerate(procs) if p.returncode != 0]
    if failed:
        k, rc = failed[0]
        log = logs / f"worker-{k}.log"
        lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        raise SweepError(f"worker {k} stopped with exit code {rc}: "
                         f"{lines[-1] if lines else 'no output'} (see {log})")
