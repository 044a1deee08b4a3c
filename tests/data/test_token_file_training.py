"""Training on a token folder: a tiny GPT learns from BPE tokens, eager and static agree, and a
`train.bin` of several GB (sparse, so it costs no disk) trains in a process whose peak resident
memory stays far below the file's size."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dlrun.config import load_config
from dlrun.data.token_file import prepare_text
from dlrun.runner import train as runner

ROOT = Path(__file__).resolve().parents[2]
needs_bpe = pytest.mark.skipif(importlib.util.find_spec("tokenizers") is None,
                               reason="the BPE needs tokenizers (dlrun[text])")


@needs_bpe
def test_a_gpt_learns_from_bpe_tokens(shakespeare_slice: Path, tmp_path: Path,
                                      token_config) -> None:
    meta = prepare_text(shakespeare_slice, "bpe", tmp_path / "bpe", vocab_size=300)
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(token_config(tmp_path / "bpe")))
    summary = runner.train(load_config(tmp_path / "lm.yaml"), runs_dir=tmp_path / "runs")
    assert summary.status == "completed" and summary.steps == 20
    losses = [r["train_loss"] for r in map(json.loads, (Path(summary.run_dir) / "metrics.jsonl")
                                     .read_text().splitlines()) if "train_loss" in r]
    assert sum(losses[-5:]) < sum(losses[:5]) - 5 * 0.5  # the training loss went down
    val = summary.final["val_loss"]
    assert val < math.log(300) - 0.5  # better than guessing among the 300 tokens
    per_token = meta["splits"]["val"]["chars_per_token"]
    assert summary.final["val_bits_per_char"] == pytest.approx(val / math.log(2) / per_token)
    assert (Path(summary.run_dir) / "tokenizer.json").read_bytes() == \
        (tmp_path / "bpe" / "tokenizer.json").read_bytes()


def test_eager_and_static_see_the_same_windows(shakespeare_slice: Path, tmp_path: Path,
                                               token_config) -> None:
    prepare_text(shakespeare_slice, "char", tmp_path / "char")
    finals = []
    for mode in ("eager", "static"):
        (tmp_path / f"{mode}.yaml").write_text(
            yaml.safe_dump(token_config(tmp_path / "char", mode, steps=6)))
        s = runner.train(load_config(tmp_path / f"{mode}.yaml"), runs_dir=tmp_path / mode)
        finals.append(s.final["val_loss"])
    assert finals[0] == pytest.approx(finals[1], rel=1e-5)


# The child's peak RSS is VmHWM, the high-water mark of its own address space: ru_maxrss would
# carry over the parent's (pytest's, after many tests) through fork and exec.
_CHILD = """
import json, sys
from pathlib import Path
from dlrun.config import load_config
from dlrun.runner import train as runner
summary = runner.train(load_config(sys.argv[1]), runs_dir=sys.argv[2])
status = Path("/proc/self/status").read_text().splitlines()
hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"status": summary.status, "steps": summary.steps, "peak_rss": hwm * 1024}))
"""


def _train_in_a_child(folder: Path, tmp_path: Path, token_config) -> dict:
    """Train 3 steps on a token folder in a fresh process; its report (peak RSS included)."""
    config = tmp_path / f"{folder.name}.yaml"
    config.write_text(yaml.safe_dump(token_config(folder, steps=3)))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _CHILD, str(config), str(tmp_path / "runs")],
                          capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] == "completed" and report["steps"] == 3
    return report


@pytest.mark.slow
def test_a_sparse_file_of_gigabytes_trains_in_little_memory(shakespeare_slice: Path,
                                                            tmp_path: Path, token_config) -> None:
    """The same steps on a 54 KB and a 6 GB train.bin take the same memory. The small run goes
    first, so that compiling the static step's kernels (a cold cache) is not counted."""
    prepare_text(shakespeare_slice, "char", tmp_path / "small")
    small = _train_in_a_child(tmp_path / "small", tmp_path, token_config)
    folder = tmp_path / "big"
    prepare_text(shakespeare_slice, "char", folder)
    size = 6 << 30  # 3G uint16 tokens: the real ids, then a hole of zeros (a valid id)
    with open(folder / "train.bin", "r+b") as f:
        f.truncate(size)
    meta = json.loads((folder / "meta.json").read_text())
    meta["splits"]["train"]["tokens"] = size // 2
    (folder / "meta.json").write_text(json.dumps(meta))
    report = _train_in_a_child(folder, tmp_path, token_config)
    # no file-sized index, no copy of the file: a few pages more than the small run at most
    assert report["peak_rss"] < small["peak_rss"] + (64 << 20), (report, small)
    assert report["peak_rss"] < size / 8, report
    assert os.stat(folder / "train.bin").st_blocks * 512 < 1 << 20  # still sparse
