"""The CLI in a real terminal: tmux at 80x24 and at 120x40 (commands typed with send-keys, the
screen and its scrollback read with capture-pane), and with its output piped.

No table cell may break a number or a name: every metric name and number that a run's
summary.json holds, every run name, appears whole on one line of what the terminal shows.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from dlrun.config import validate_config
from dlrun.render import _fmt
from dlrun.runner.io.metrics_log import read_run_summary
from dlrun.runner.train import train
from tests.conftest import ROOT, TINY

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
OLD_RUN = ROOT / "tests" / "runner" / "fixtures" / "20261206-034821-oldrun"


class Terminal:
    """A tmux session on a private server socket, `width` x `height`, running bash."""

    def __init__(self, width: int, height: int, cwd: Path) -> None:
        self.socket = f"dlrun-test-{uuid.uuid4().hex[:12]}"
        self.cwd, self.width, self.count = cwd, width, 0
        self._tmux("new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height),
                   "-c", str(cwd), "bash --norc --noprofile")
        self._tmux("set-option", "-t", "t", "history-limit", "20000")
        self.socket_path = Path(self._tmux("display-message", "-p", "#{socket_path}").strip())

    def _tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args], check=True,
                              capture_output=True, text=True, timeout=30).stdout

    def run(self, args: Sequence[str], timeout: float = 120) -> list[str]:
        """Type `dlrun ARGS` and return the lines the terminal shows until it ends (exit 0)."""
        self.count += 1
        script = self.cwd / f"cmd{self.count}.sh"
        script.write_text(f"PYTHONPATH={shlex.quote(str(ROOT))} {shlex.quote(sys.executable)} "
                          f"-m dlrun {shlex.join(args)}\n")
        typed = f"sh {script.name}; echo __DONE{self.count}__$?"
        self._tmux("send-keys", "-t", "t", "-l", typed)
        self._tmux("send-keys", "-t", "t", "Enter")
        marker = re.compile(rf"^__DONE{self.count}__(\d+)\s*$")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self._tmux("capture-pane", "-p", "-t", "t", "-S", "-").splitlines()
            end = next((i for i, line in enumerate(lines) if marker.match(line)), None)
            if end is not None:
                start = max(i for i, line in enumerate(lines[:end]) if typed in line)
                assert marker.match(lines[end]).group(1) == "0", "\n".join(lines[start:end])
                return [line.rstrip() for line in lines[start + 1:end]]
            time.sleep(0.2)
        raise AssertionError(f"dlrun {shlex.join(args)} did not end in {timeout} s")

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True,
                       timeout=30)
        self.socket_path.unlink(missing_ok=True)  # kill-server may leave the socket file


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/: classification runs (one with a long name), a regression run, an old run."""
    root = tmp_path_factory.mktemp("term") / "runs"
    experiments = [
        {"name": "blobs-mlp-with-a-rather-long-name", "optimizer": {"name": "adam", "lr": 0.02}},
        {"name": "blobs-small", "model": {"type": "mlp", "hidden": [8]}},
        {"name": "linear-regression", "data": {"name": "linear", "options": {"n": 200}},
         "model": {"type": "linear"}},
    ]
    for changes in experiments:
        cfg = {**TINY, "train": {"epochs": 2, "batch_size": 16}, **changes}
        train(validate_config(cfg), runs_dir=root)
    shutil.copytree(OLD_RUN, root / OLD_RUN.name)
    return root


def _terminal(width: int, height: int, cwd: Path) -> Iterator[Terminal]:
    terminal = Terminal(width, height, cwd)
    try:
        yield terminal
    finally:
        terminal.close()  # the tmux server of this socket ends with the module


@pytest.fixture(scope="module")
def term80(runs: Path) -> Iterator[Terminal]:
    yield from _terminal(80, 24, runs.parent)


@pytest.fixture(scope="module")
def term120(runs: Path) -> Iterator[Terminal]:
    yield from _terminal(120, 40, runs.parent)


def _run_dir(runs: Path, name: str) -> Path:
    (path,) = runs.glob(f"*-{name}")
    return path


def _summary_tokens(run_dir: Path) -> list[str]:
    """Every metric name and number of the run's summary.json, as dlrun prints numbers."""
    summary = read_run_summary(run_dir)
    assert summary is not None
    tokens = [t for k, v in summary.final.items() if v is not None for t in (k, _fmt(v))]
    return tokens + [summary.best.metric, _fmt(summary.best.value)]


def assert_whole(lines: list[str], tokens: Sequence[str], width: int) -> None:
    """Each token on one line; no line wider than the terminal."""
    assert all(len(line) <= width for line in lines)
    text = "\n".join(lines)
    missing = [t for t in tokens if not any(t in line for line in lines)]
    assert not missing, f"broken or missing: {missing}\n{text}"


def _headline(runs: Path, name: str) -> tuple[str, str]:
    final = read_run_summary(_run_dir(runs, name)).final
    key = "val_accuracy" if "val_accuracy" in final else "val_mse"
    return key, _fmt(final[key])


def test_runs_table_at_80_and_120_columns(runs: Path, term80: Terminal,
                                          term120: Terminal) -> None:
    names = ["blobs-mlp-with-a-rather-long-name", "blobs-small", "linear-regression", "oldrun"]
    narrow = term80.run(["runs", "--dir", str(runs)])
    tokens = [_run_dir(runs, n).name for n in names]
    tokens += [t for n in names for t in _headline(runs, n)]
    assert_whole(narrow, tokens, 80)
    assert any(line.startswith("not shown at 80 columns:") and "--wide" in line
               for line in narrow)
    wide = term120.run(["runs", "--dir", str(runs)])
    assert_whole(wide, tokens, 120)
    header = next(line for line in wide if line.lstrip().startswith("run "))
    assert {"mode", "steps"} <= set(header.split())  # the width is used
    assert max(map(len, wide)) > 80


def test_runs_show_and_eval_at_80_columns(runs: Path, term80: Terminal) -> None:
    for name in ("blobs-mlp-with-a-rather-long-name", "oldrun", "linear-regression"):
        run = _run_dir(runs, name)
        assert_whole(term80.run(["runs", "show", run.name, "--dir", str(runs)]),
                     _summary_tokens(run), 80)
    run = _run_dir(runs, "blobs-small")
    shown = term80.run(["eval", str(run), "--split", "val"])
    result = json.loads((run / "checkpoints" / "eval.json").read_text())
    metrics = result.get("metrics", result)
    assert_whole(shown, [t for k, v in metrics.items() if isinstance(v, float)
                         for t in (k, _fmt(v))], 80)


def test_runs_diff_at_80_columns(runs: Path, term80: Terminal, tmp_path: Path) -> None:
    names = ["blobs-mlp-with-a-rather-long-name", "blobs-small", "oldrun"]
    out = tmp_path / "diff.png"
    shown = term80.run(["runs", "diff", *names, "--dir", str(runs), "--out", str(out)])
    tokens = [t for n in names for t in _summary_tokens(_run_dir(runs, n))]
    assert_whole(shown, tokens + ["optimizer.lr", "model.hidden"], 80)
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # three commands, one of them trains and one traces (~12 s)
def test_train_summary_graph_and_info_at_80_columns(runs: Path, term80: Terminal,
                                                    tmp_path: Path) -> None:
    config = tmp_path / "long.yaml"
    config.write_text(json.dumps({**TINY, "name": "x" * 40, "train": {"epochs": 1}}))
    shown = term80.run(["train", str(config), "--runs-dir", str(tmp_path / "r"), "--quiet"])
    (run,) = (tmp_path / "r").iterdir()
    assert_whole(shown, _summary_tokens(run), 80)
    shown = term80.run(["graph", str(config)])
    passes = [line for line in shown if "→" in line]
    assert len(passes) >= 5
    details = [w.rstrip(",") for line in passes for w in line.split() if "=" in w]
    assert details and all(re.fullmatch(r"[a-z_0-9]+=[-0-9.e+]+", d) for d in details), details
    assert_whole(term80.run(["info"]), ["primitives", "CUDA available:"], 80)


def test_sweep_table_at_80_columns(runs: Path, term80: Terminal, tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    from dlrun.runner.sweep.driver import sweep
    from tests.runner.sweep.sweep_helpers import write_config

    params = {"optimizer.lr": {"space": "loguniform", "lower": 1e-3, "upper": 1e-1},
              "optimizer.weight_decay": {"space": "uniform", "lower": 0.0, "upper": 0.01},
              "model.dropout": {"space": "uniform", "lower": 0.0, "upper": 0.3}}
    config = write_config(tmp_path, {"sweep.trials": 3, "train.epochs": 1,
                                     "sweep.parameters": params})
    summary = sweep(validate_config(_yaml(config)), str(config), runs_dir=tmp_path / "s")
    shown = term80.run(["runs", "show", summary["folder"]])
    values = [_fmt(r["value"]) for r in _trials(Path(summary["folder"]))]
    assert_whole(shown, ["val_loss", "optimizer.lr", *values], 80)


def test_piped_output_has_no_colour_and_fits(runs: Path) -> None:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "TERM": "xterm-256color"}

    def dlrun(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "dlrun", *args], capture_output=True,
                              text=True, env=env, timeout=120, check=True)
        return done.stdout

    out = dlrun("runs", "--dir", str(runs))
    assert "\x1b[" not in out
    names = [p.name for p in runs.iterdir() if p.is_dir()]
    assert_whole(out.splitlines(), names, 80)
    wide = dlrun("runs", "--dir", str(runs), "--wide").splitlines()
    header = next(line for line in wide if line.lstrip().startswith("run "))
    assert {"date", "mode", "steps", "best"} <= set(header.split())
    assert "not shown" not in "\n".join(wide)
    data = json.loads(dlrun("runs", "diff", "blobs-small", "oldrun", "--dir", str(runs),
                            "--json", "--out", str(runs.parent / "d.png")))
    assert [r["label"] for r in data["runs"]] == ["blobs-small", "oldrun"]


def _yaml(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text())


def _trials(folder: Path) -> list[dict[str, Any]]:
    from dlrun.runner.io.metrics_log import read_summary
    from dlrun.runner.sweep.report import read_trials_csv

    rows = read_trials_csv(folder, read_summary(folder) or {})
    return [{"value": r.value} for r in rows if r.value is not None]
