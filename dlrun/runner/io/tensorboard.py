"""TensorBoard event files (`logging.tensorboard: true`), written with the optional tensorboardX.

The writer mirrors metrics.jsonl: every numeric value of every record the run logs becomes a
scalar at the record's step (`train_loss`, `lr`, `step_ms`, `val_loss`, ...; `step` and `epoch`
are the coordinates, not metrics). At the end the resolved config goes in as hparams (dotted keys)
with the final metrics as `hparam/<name>` scalars. Everything lands in `<run>/tensorboard/`, so
`tensorboard --logdir runs` shows every run side by side. Only metrics, never tensors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from dlrun.config import ExperimentConfig, config_to_dict
from dlrun.errors import ConfigError
from dlrun.runner.io.rundir import TENSORBOARD_DIR
from dlrun.runner.records import RunSummary

COORDINATES = ("step", "epoch")  # record keys that place a metric, never logged as scalars
HPARAM_PREFIX = "hparam/"  # final metrics get their own tags, apart from the logged series
FLUSH_SECS = 10


def _tensorboardx() -> ModuleType:
    try:
        import tensorboardX
    except ImportError as e:
        raise ConfigError(
            "logging.tensorboard needs tensorboardX: pip install 'dlrun[tensorboard]'") from e
    return tensorboardX


def require(cfg: ExperimentConfig) -> None:
    """Fail early (before a run directory exists) when TensorBoard is on but not installed."""
    if cfg.logging.tensorboard:
        _tensorboardx()


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """Nested config -> dotted keys; lists, None and empty sections become JSON strings."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


class TensorBoardLogger:
    """Writes a run's metrics into `<run_dir>/tensorboard/` (a new event file per session).

    A resumed run passes the step it restarts from: TensorBoard then hides any events an
    earlier session wrote after that step (`purge_step`), so the curves continue cleanly.
    """

    def __init__(self, run_dir: Path | str, start_step: int = 0) -> None:
        tbx = _tensorboardx()
        self.logdir = Path(run_dir) / TENSORBOARD_DIR
        # tensorboardX names files by the second and opens them with "wb": a session number in
        # the name keeps a resume started within the same second from truncating the last file.
        session = len(list(self.logdir.glob("events.out.tfevents.*")))
        self.writer = tbx.SummaryWriter(logdir=str(self.logdir), flush_secs=FLUSH_SECS,
                                        filename_suffix=f".{session}",
                                        purge_step=start_step + 1 if start_step else None)
        self._hparams = tbx.summary.hparams
        self.closed = False

    def log(self, record: Mapping[str, Any]) -> None:
        """One metrics.jsonl record: each numeric value as a scalar at `record["step"]`."""
        step = int(record["step"])
        for tag, value in record.items():
            if tag not in COORDINATES and (v := _number(value)) is not None:
                self.writer.add_scalar(tag, v, step)

    def finish(self, cfg: ExperimentConfig, summary: RunSummary) -> None:
        """The resolved config as hparams, the final metrics as `hparam/*`; then close."""
        if self.closed:
            return
        final = {f"{HPARAM_PREFIX}{k}": v for k, value in summary.final.items()
                 if (v := _number(value)) is not None and math.isfinite(v)}
        file_writer = self.writer._get_file_writer()
        for part in self._hparams(flatten(config_to_dict(cfg)), final):
            file_writer.add_summary(part)
        step = int(summary.steps or 0)
        for tag, value in final.items():
            self.writer.add_scalar(tag, value, step)
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()


def open_tensorboard(cfg: ExperimentConfig, run_dir: Path | None,
                     start_step: int = 0) -> TensorBoardLogger | None:
    """A TensorBoardLogger when `logging.tensorboard` is on and there is a run directory."""
    if not (cfg.logging.tensorboard and run_dir):
        return None
    return TensorBoardLogger(run_dir, start_step)


def add_exported_graph(cfg: ExperimentConfig, run_dir: Path | str, model_path: Path | str
                       ) -> bool:
    """The graph of an exported ONNX model in the run's TensorBoard folder (its Graphs tab),
    when the run logs to TensorBoard; whether it was written."""
    if not cfg.logging.tensorboard:
        return False
    logger = TensorBoardLogger(run_dir)
    try:
        logger.writer.add_onnx_graph(str(model_path))
    finally:
        logger.close()
    return True
