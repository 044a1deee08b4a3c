"""dlrun sweep with real Optuna storage on disk (a journal file in the sweep folder) and in a real
PostgreSQL server: trial counts, workers, pruning, grid, failed trials, resume after SIGKILL."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlrun.config import load_config
from dlrun.runner.events import SweepProgress, SweepStarted
from dlrun.runner.io.metrics_log import read_summary
from dlrun.runner.sweep.driver import sweep
from dlrun.runner.train import train
from tests.runner.sweep.sweep_helpers import postgres_url, write_config  # noqa: F401

pytest.importorskip("optuna")


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def _finished(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [r for r in rows if r["state"] in ("complete", "pruned", "failed")]


def _dlrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "dlrun", *args]


def test_sweep_folder_trials_and_best_config(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    events: list = []
    summary = sweep(load_config(path), str(path), callbacks=[events.append],
                    runs_dir=tmp_path / "runs")
    folder = Path(summary["folder"])
    assert folder.parent == tmp_path / "runs" and folder.name.endswith("-tiny-sweep")
    assert summary["finished"] == 4 and summary["status"] == "completed"
    assert (folder / "study.journal").is_file()
    rows = _rows(folder)
    assert [r["state"] for r in rows] == ["complete"] * 4
    assert set(rows[0]) >= {"number", "optimizer.lr", "model.hidden", "val_loss", "run_dir"}
    for r in rows:  # each trial is an ordinary run directory
        run = Path(r["run_dir"])
        assert run.parent == (folder / "trials").resolve()
        assert (run / "config.yaml").is_file() and (run / "checkpoints").is_dir()
        assert read_summary(run)["status"] == "completed"
        assert "sweep" not in (run / "config.yaml").read_text()
    best = min(rows, key=lambda r: float(r["val_loss"]))
    assert summary["best"]["number"] == int(best["number"])
    best_cfg = load_config(folder / "best.yaml")
    assert best_cfg.sweep is None and best_cfg.optimizer.lr == float(best["optimizer.lr"])
    assert read_summary(folder)["best"]["value"] == pytest.approx(float(best["val_loss"]))
    assert {Path(p).name for p in summary["plots"]} == {"optimization_history.png",
                                                        "param_importances.png"}
    assert isinstance(events[0], SweepStarted) and "new sweep" in events[0].note
    assert any(isinstance(e, SweepProgress) and len(e.rows) == 4 for e in events)
    again = train(best_cfg, runs_dir=tmp_path / "again")  # best.yaml trains as it is
    assert again.status == "completed"


@pytest.mark.slow
def test_two_workers_six_trials_and_best_yaml_trains(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"sweep.trials": 6})
    summary = sweep(load_config(path), str(path), workers=2, runs_dir=tmp_path / "runs")
    folder = Path(summary["folder"])
    rows = _rows(folder)
    assert len(rows) == 6 and all(r["state"] == "complete" for r in rows)
    assert sorted(int(r["number"]) for r in rows) == list(range(6))
    assert {p.name for p in (folder / "trials").iterdir()} == {f"{i:04d}" for i in range(6)}
    assert len(list((folder / "logs").glob("worker-*.log"))) == 2
    assert train(load_config(folder / "best.yaml"), runs_dir=tmp_path / "b").status == \
        "completed"


def test_grid_covers_every_combination_once(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"sweep.sampler": "grid", "sweep.trials": 10,
                                   "sweep.parameters": {
        "optimizer.lr": {"values": [0.003, 0.03]},
        "model.hidden": {"space": "choice", "categories": [[8], [16], [8, 8]]}}})
    summary = sweep(load_config(path), str(path), runs_dir=tmp_path / "runs")
    rows = _rows(Path(summary["folder"]))
    combos = [(r["optimizer.lr"], r["model.hidden"]) for r in rows]
    assert len(combos) == 6 == len(set(combos)) and summary["trials"] == 6
    assert {c[1] for c in combos} == {"[8]", "[16]", "[8, 8]"}


def test_pruning_stops_a_bad_trial_early(tmp_path: Path) -> None:
    path = write_config(tmp_path, {
        "seed": 0, "train.epochs": 6, "sweep.sampler": "grid", "sweep.trials": None,
        "sweep.pruner": {"name": "median", "startup_trials": 2},
        # seed 0 shuffles this grid to three good trials, then the two bad ones
        "sweep.parameters": {"loss.label_smoothing": {"values": [0.0, 0.01, 0.02, 0.9, 0.95]}}})
    summary = sweep(load_config(path), str(path), runs_dir=tmp_path / "runs")
    rows = _rows(Path(summary["folder"]))
    pruned = [r for r in rows if r["state"] == "pruned"]
    bad = [r for r in rows if float(r["loss.label_smoothing"]) > 0.5]
    assert len(bad) == 2 and all(r in pruned for r in bad)
    for r in pruned:
        run = read_summary(Path(r["run_dir"]))
        assert run["status"] == "pruned" and run["epochs"] < 6  # stopped early
    assert summary["finished"] == 5 and summary["states"]["pruned"] == len(pruned)


def test_failed_trials_are_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"optimizer.name": "sgd", "sweep.sampler": "grid",
                                   "sweep.trials": None,
                                   "sweep.parameters": {
                                       "optimizer.lr": {"values": [0.05, 1.0e+30]},
                                       "schedule.warmup_steps": {"values": [0, 5]},
                                       "schedule.decay_steps": {"values": [3, 10]}}})
    summary = sweep(load_config(path), str(path), runs_dir=tmp_path / "runs")
    rows = _rows(Path(summary["folder"]))
    assert len(_finished(rows)) == 8 == summary["finished"]
    impossible = [r for r in rows if r["schedule.warmup_steps"] == "5"
                  and r["schedule.decay_steps"] == "3"]
    assert all(r["state"] == "failed" and "decay_steps" in r["error"] for r in impossible)
    nan = [r for r in rows if float(r["optimizer.lr"]) > 1 and r not in impossible]
    assert nan and all(r["state"] == "failed" and "loss is" in r["error"] for r in nan)
    ok = [r for r in rows if r not in impossible and r not in nan]
    assert ok and all(r["state"] == "complete" for r in ok)
    assert read_summary(Path(impossible[0]["run_dir"]))["status"] == "failed"


def test_changed_search_space_or_new_starts_a_fresh_folder(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    path = write_config(tmp_path, {"sweep.trials": 2})
    first = sweep(load_config(path), str(path), runs_dir=runs)
    more: list = []
    extended = sweep(load_config(path), str(path), trials=3, runs_dir=runs,
                     callbacks=[more.append])
    assert extended["folder"] == first["folder"] and extended["finished"] == 3
    assert "continuing" in more[0].note
    space = {"optimizer.lr": {"space": "loguniform", "lower": 1.0e-3, "upper": 0.2}}
    changed = write_config(tmp_path, {"sweep.trials": 2, "sweep.parameters": space},
                           name="changed.yaml")
    notes: list = []
    fresh = sweep(load_config(changed), str(changed), runs_dir=runs, callbacks=[notes.append])
    assert fresh["folder"] != first["folder"] and "differs" in notes[0].note
    forced = sweep(load_config(changed), str(changed), runs_dir=runs, new=True, trials=3)
    assert forced["folder"] not in (first["folder"], fresh["folder"])
    assert len(list(runs.iterdir())) == 3


@pytest.mark.slow
def test_sigkill_then_the_same_command_ends_with_exactly_the_trials(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"train.epochs": 40, "sweep.trials": 5})
    runs = tmp_path / "runs"
    cmd = _dlrun("sweep", str(path), "--runs-dir", str(runs), "-q")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill while a trial is running, after one finished
        started = list(runs.glob("*/trials/*"))
        done = [p for p in started if (p / "summary.json").exists()]
        if len(done) >= 1 and len(started) > len(done):
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    folder = next(runs.iterdir())
    killed = {p.name for p in (folder / "trials").iterdir() if not (p / "summary.json").exists()}
    assert killed, "no trial was running when the sweep was killed"
    result = subprocess.run(cmd[:-1], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "continuing" in result.stdout and "marked failed" in result.stdout
    assert list(runs.iterdir()) == [folder]
    rows = _rows(folder)
    assert len(_finished(rows)) == 5
    interrupted = [r for r in rows if r["state"] == "interrupted"]
    assert {f"{int(r['number']):04d}" for r in interrupted} == killed
    reruns = [r for r in rows if r["optimizer.lr"] == interrupted[0]["optimizer.lr"]]
    assert len(reruns) == 2  # its parameters ran again
    assert read_summary(folder)["status"] == "completed"


@pytest.mark.slow
def test_two_commands_share_one_postgresql_study(tmp_path: Path, postgres_url: str) -> None:  # noqa: F811
    import optuna

    path = write_config(tmp_path, {"train.epochs": 25, "sweep.trials": 8})
    procs = [subprocess.Popen(_dlrun("sweep", str(path), "--storage", postgres_url,
                                     "--runs-dir", str(tmp_path / f"machine{k}"), "-q"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    url = postgres_url.replace("postgresql://", "postgresql+psycopg://")
    names = optuna.get_all_study_names(url)
    assert len(names) == 1
    trials = optuna.load_study(study_name=names[0], storage=url).get_trials()
    assert len(trials) == 8, [(t.number, t.state.name, t.user_attrs) for t in trials]
    assert all(t.state.name == "COMPLETE" for t in trials)
    dirs = [list((next((tmp_path / f"machine{k}").iterdir()) / "trials").iterdir())
            for k in range(2)]
    assert all(dirs), "both commands ran trials"
    assert sorted(p.name for d in dirs for p in d) == [f"{i:04d}" for i in range(8)]
    # the command that ends last sees all 8 finished (the other may end while one still ran)
    done = [read_summary(next((tmp_path / f"machine{k}").iterdir()))["finished"]
            for k in range(2)]
    assert max(done) == 8 and min(done) >= 7
