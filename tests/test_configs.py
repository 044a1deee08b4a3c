"""The example configs in configs/ are valid, and the offline ones train."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlrun.config import load_config
from dlrun.runner import train as runner

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
OFFLINE = ["quickstart.yaml", "linreg_synthetic.yaml", "sine_rnn.yaml", "bench/linreg.yaml",
           "bench/mlp.yaml", "bench/cnn.yaml", "bench/lstm.yaml", "bench/gpt.yaml",
           "linreg_csv.yaml"]
REAL = ["mnist_mlp.yaml", "sweep_mnist_mlp.yaml", "mnist_cnn.yaml", "shakespeare_lstm.yaml",
        "shakespeare_gru.yaml", "temperatures_lstm.yaml", "mnist_linear.yaml",
        "shakespeare_gpt.yaml", "shakespeare_gpt_bpe.yaml"]
# configs that write beside their data: the test points that folder into its tmp_path
WRITES = {"shakespeare_gpt_bpe.yaml": "data.options.path={tmp}/tokens"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_is_valid(path: Path) -> None:
    load_config(path)


def test_every_config_is_exercised() -> None:
    names = {str(p.relative_to(ROOT / "configs")) for p in CONFIGS}
    assert names <= set(OFFLINE) | set(REAL) | {"fashion_cnn.yaml"}


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_config_trains(name: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # configs name their data relative to the project root
    cfg = load_config(ROOT / "configs" / name, ["train.max_steps=20"])
    summary = runner.train(cfg, runs_dir=tmp_path)
    assert summary.status == "completed" and summary.steps == 20


@pytest.mark.realdata
@pytest.mark.parametrize("name", REAL)
def test_real_data_config_trains(name: str, tmp_path: Path, data_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("DLRUN_DATA_DIR", str(data_dir))
    if name == "shakespeare_gpt_bpe.yaml":
        pytest.importorskip("tokenizers")
    extra = [WRITES[name].format(tmp=tmp_path)] if name in WRITES else []
    cfg = load_config(ROOT / "configs" / name, ["train.max_steps=12", "train.eval_every=12",
                                                "device=cpu", *extra])
    summary = runner.train(cfg, runs_dir=tmp_path)
    assert summary.status == "completed"
    first = summary.final["train_loss"]
    assert first == first  # finite (not NaN)
