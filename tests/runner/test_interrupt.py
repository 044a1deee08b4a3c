"""Ctrl-C stops between steps: an interrupted and resumed run ends with the weights of an
uninterrupted one (an interrupt inside a step would checkpoint a half-applied update)."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.distributed.jobs import (
    assert_same_weights,
    blobs_config,
    dlrun,
    run_dir,
    start,
    wait_for,
    weights,
)


def test_ctrl_c_then_resume_ends_with_the_uninterrupted_weights(tmp_path: Path) -> None:
    cfg = blobs_config(tmp_path / "c.yaml", epochs=150, checkpoint_every=40)
    ref = dlrun("train", str(cfg), "--runs-dir", str(tmp_path / "ref"), "-q")
    assert ref.returncode == 0, ref.stderr
    runs = tmp_path / "runs"
    proc = start("train", str(cfg), "--runs-dir", str(runs), "-q")
    try:
        wait_for(lambda: any(runs.glob("*/checkpoints/last.safetensors")))
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    resumed = dlrun("train", "--resume", str(run_dir(runs)), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(weights(run_dir(tmp_path / "ref")), weights(run_dir(runs)), rtol=1e-12)


def test_a_run_stopped_after_any_step_resumes_to_the_same_weights(tmp_path: Path) -> None:
    """Stopped after every step in turn, the epoch's last one included (its end — evaluation,
    epoch count — is then still to do), each resumed run ends like the uninterrupted one."""
    from dlrun.config import load_config
    from dlrun.runner import train as runner
    from dlrun.runner.events import StepEnd

    cfg = load_config(blobs_config(tmp_path / "c.yaml", epochs=2, batch_size=100))
    runner.train(cfg, runs_dir=tmp_path / "ref")
    reference = weights(run_dir(tmp_path / "ref"))
    steps = 2 * 6  # 553 rows in batches of 100: 6 per epoch
    for k in range(1, steps):
        def stop_at(event: object, k: int = k) -> None:
            if isinstance(event, StepEnd) and event.step == k:
                raise KeyboardInterrupt

        runs = tmp_path / f"stop{k}"
        assert runner.train(cfg, callbacks=[stop_at], runs_dir=runs).status == "interrupted"
        summary = runner.resume(run_dir(runs))
        assert summary.steps == steps and summary.epochs == 2
        assert_same_weights(reference, weights(run_dir(runs)), rtol=1e-12)
