"""`dlrun export`: a trained run's model as a file another runtime loads (ONNX).

The run's model is rebuilt with the checkpoint's weights on the CPU (as `dlrun eval` does), traced
on a batch of its own validation inputs and exported; the export is verified against dlrun's
eager outputs before the file is written (dlrun.export.onnx). The runner never prints.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dlrun.errors import ConfigError

FORMATS = ("onnx",)


def export(path: Path | str, fmt: str = "onnx", out: Path | str | None = None, opset: int = 17,
           tag: str = "best", tolerance: float | None = None,
           tamper: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Export the checkpoint of a run (a run directory or a checkpoint file) to `out` (default
    <run>/export/model.onnx); the file, the largest absolute/relative errors against dlrun."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: dlrun exports {', '.join(FORMATS)}")
    from dlrun.export.onnx import TOLERANCE, export_onnx, require_onnx
    from dlrun.runner.commands.evaluate import load_run
    from dlrun.runner.experiment import batch_tensors
    from dlrun.runner.io.rundir import find_run_config
    from dlrun.runner.io.tensorboard import add_exported_graph

    require_onnx()
    run_dir, _ = find_run_config(Path(path))
    exp, target, meta = load_run(path, tag, ["device=cpu"])
    split = "val" if exp.bundle.val is not None else "test" if exp.bundle.test else "train"
    xb, yb = next(iter(exp.loader(split)))
    x, _ = batch_tensors(exp, xb, yb)
    dest = Path(out) if out is not None else Path(run_dir) / "export" / "model.onnx"
    result = export_onnx(exp.model, x, dest, opset=opset,
                         tolerance=TOLERANCE if tolerance is None else tolerance, tamper=tamper)
    result.update({"checkpoint": str(target), "step": meta.get("progress", {}).get("step"),
                   "verified_on": split})
    result["tensorboard"] = add_exported_graph(exp.cfg, run_dir, result["path"])
    return result
