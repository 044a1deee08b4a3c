"""`logging.tensorboard: true`: event files mirroring metrics.jsonl, hparams, resume, the extra."""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dlrun.cli import app
from dlrun.config import load_config
from dlrun.errors import ConfigError
from dlrun.runner import train as runner
from dlrun.runner.events import StepEnd
from dlrun.runner.io.tensorboard import flatten

needs_tensorboardx = pytest.mark.skipif(importlib.util.find_spec("tensorboardX") is None,
                                        reason="needs the tensorboard extra (tensorboardX)")

ON = ["logging.tensorboard=true", "logging.plots=false", "train.epochs=2"]


def read_events(folder: Path) -> list:
    """Every Event in the folder's event files: TFRecord framing (u64 length, u32 masked CRC of
    the length, the Event protobuf, u32 masked CRC of the data), oldest file first."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack_from("<Q", data, i)
            events.append(Event.FromString(data[i + 12:i + 12 + n]))
            i += 12 + n + 4
        assert i == len(data), path
    return events


def scalars(events: list) -> list[tuple[str, int, float]]:
    return sorted((v.tag, e.step, v.simple_value) for e in events for v in e.summary.value
                  if v.WhichOneof("value") == "simple_value")


def jsonl_scalars(run: Path) -> list[tuple[str, int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return sorted((k, r["step"], float(np.float32(v))) for r in rows for k, v in r.items()
                  if k not in ("step", "epoch") and isinstance(v, int | float))


def hparams(events: list) -> dict:
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    for e in events:
        for v in e.summary.value:
            if v.tag == "_hparams_/session_start_info":
                data = HParamsPluginData.FromString(v.metadata.plugin_data.content)
                return {k: getattr(h, h.WhichOneof("kind"))
                        for k, h in data.session_start_info.hparams.items()}
    return {}


@needs_tensorboardx
def test_every_logged_metric_is_a_scalar_and_the_config_is_hparams(tiny_config,
                                                                    tmp_path: Path) -> None:
    cfg = load_config(tiny_config(), ON)
    summary = runner.train(cfg, runs_dir=tmp_path / "runs")
    run = Path(summary.run_dir)
    events = read_events(run / "tensorboard")
    logged = [s for s in scalars(events) if not s[0].startswith("hparam/")]
    assert logged == jsonl_scalars(run)
    assert {"train_loss", "lr", "step_ms", "val_loss", "val_accuracy"} <= {s[0] for s in logged}
    final = {s[0]: s[2] for s in scalars(events) if s[0].startswith("hparam/")}
    assert final == {f"hparam/{k}": pytest.approx(v, rel=1e-6)
                     for k, v in summary.final.items() if v is not None}
    hp = hparams(events)
    assert hp["optimizer.lr"] == pytest.approx(0.01) and hp["model.hidden"] == "[16]"
    assert hp["logging.tensorboard"] is True and hp["name"] == "tiny"
    assert [p.name for p in run.iterdir() if p.is_dir()].count("tensorboard") == 1


def test_off_by_default_writes_no_folder(tiny_config, tmp_path: Path) -> None:
    cfg = load_config(tiny_config(), ["logging.plots=false", "train.epochs=1"])
    assert cfg.logging.tensorboard is False
    run = Path(runner.train(cfg, runs_dir=tmp_path / "runs").run_dir)
    assert not (run / "tensorboard").exists()


def test_missing_extra_is_one_config_error_before_the_run_directory(
        tiny_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` fails
    runs = tmp_path / "runs"
    with pytest.raises(ConfigError, match=r"pip install 'dlrun\[tensorboard\]'"):
        runner.train(load_config(tiny_config(), ON), runs_dir=runs)
    assert not runs.exists()
    result = CliRunner().invoke(app, ["train", str(tiny_config()), "--runs-dir", str(runs),
                                      *[a for s in ON for a in ("--set", s)]])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "logging.tensorboard needs tensorboardX" in result.output
    assert not runs.exists()


@needs_tensorboardx
def test_resume_appends_to_the_same_folder(tiny_config, tmp_path: Path) -> None:
    cfg = load_config(tiny_config(), ON)

    def interrupt(event) -> None:
        if isinstance(event, StepEnd) and event.step == 20:
            raise KeyboardInterrupt

    part = runner.train(cfg, callbacks=[interrupt], runs_dir=tmp_path / "runs")
    assert part.status == "interrupted"
    run = Path(part.run_dir)
    resumed = runner.resume(run)
    assert resumed.status == "completed" and resumed.steps > 20
    files = sorted((run / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 2
    later = read_events(run / "tensorboard")
    logged = [s for s in scalars(later) if not s[0].startswith("hparam/")]
    assert logged == jsonl_scalars(run)  # steps continue: no gap, no repeat
    assert max(s[1] for s in logged) == resumed.steps


def test_flatten_makes_dotted_scalar_hparams() -> None:
    flat = flatten({"a": {"b": 1, "c": [1, 2], "d": {}}, "e": None, "f": "x", "g": True})
    assert flat == {"a.b": 1, "a.c": "[1, 2]", "a.d": "{}", "e": "null", "f": "x", "g": True}


@needs_tensorboardx
def test_an_export_adds_the_onnx_graph_to_the_runs_tensorboard(tiny_config, tmp_path: Path
                                                               ) -> None:
    pytest.importorskip("onnxruntime")
    from dlrun.runner.commands.export_run import export

    cfg = load_config(tiny_config(), ON)
    run = Path(runner.train(cfg, runs_dir=tmp_path / "runs").run_dir)
    before = len(read_events(run / "tensorboard"))
    result = export(run)
    events = read_events(run / "tensorboard")
    graphs = [e for e in events[before:] if e.graph_def]
    assert result["tensorboard"] is True and len(graphs) == 1
    assert scalars(events) == scalars(events[:before])  # the metrics are untouched
    cfg_off = load_config(tiny_config(), ["logging.plots=false", "train.epochs=1"])
    plain = Path(runner.train(cfg_off, runs_dir=tmp_path / "plain").run_dir)
    assert export(plain)["tensorboard"] is False and not (plain / "tensorboard").exists()
