"""`dlrun prepare text` through the real CLI, the token folder's bad inputs through `dlrun
train` (one line, exit 1, no run directory), and `dlrun eval --sample --prompt` decoding with
a run's BPE tokenizer."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from dlrun.cli import app
from dlrun.data.token_file import prepare_text
from tests.cli_helpers import assert_cli_fails

needs_bpe = pytest.mark.skipif(importlib.util.find_spec("tokenizers") is None,
                               reason="the BPE needs tokenizers (dlrun[text])")


def _invoke(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


@needs_bpe
def test_prepare_text_writes_a_token_folder(shakespeare_slice: Path, tmp_path: Path) -> None:
    out = tmp_path / "bpe"
    output = _invoke(["prepare", "text", str(shakespeare_slice), "--tokenizer", "bpe",
                      "--vocab-size", "300", "--out", str(out), "--val-fraction", "0.2",
                      "--json"])
    result = json.loads(output)
    assert result["out"] == str(out) and result["vocab_size"] == 300
    assert json.loads((out / "meta.json").read_text())["val_fraction"] == 0.2
    assert all(Path(f).is_file() for f in result["files"])


@needs_bpe
@pytest.mark.parametrize(("size", "needle"), [("100000", "allows at most"),
                                              ("200", "at least 257")])
def test_prepare_rejects_a_vocab_size(shakespeare_slice: Path, tmp_path: Path, size: str,
                                      needle: str) -> None:
    assert_cli_fails(["prepare", "text", str(shakespeare_slice), "--tokenizer", "bpe",
                      "--vocab-size", size, "--out", str(tmp_path / "out")], needle)
    assert not (tmp_path / "out").exists()


def _spoil_odd_size(folder: Path) -> None:
    with open(folder / "train.bin", "ab") as f:
        f.write(b"\x00")


def _spoil_ids(folder: Path) -> None:
    ids = np.fromfile(folder / "train.bin", dtype="<u2")
    ids[10] = 4000
    ids.tofile(folder / "train.bin")


def _spoil_tokenizer(folder: Path) -> None:
    data = json.loads((folder / "tokenizer.json").read_text())
    data["vocab"] = data["vocab"][::-1]
    (folder / "tokenizer.json").write_text(json.dumps(data))


@pytest.mark.parametrize(("spoil", "needle"), [
    (_spoil_odd_size, "train.bin: {size} bytes is not a whole number of uint16 token ids"),
    (_spoil_ids, "train.bin: token id 4000 does not fit the vocabulary"),
    (_spoil_tokenizer, "tokenizer.json: does not match the token files"),
])
def test_train_rejects_a_spoilt_token_folder(shakespeare_slice: Path, tmp_path: Path,
                                             token_config, spoil, needle: str) -> None:
    prepare_text(shakespeare_slice, "char", tmp_path / "tok")
    spoil(tmp_path / "tok")
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(token_config(tmp_path / "tok")))
    size = (tmp_path / "tok" / "train.bin").stat().st_size  # the corpus differs without the data
    assert_cli_fails(["train", str(tmp_path / "lm.yaml"), "--runs-dir", str(tmp_path / "runs")],
                     needle.format(size=size))
    assert not (tmp_path / "runs").exists()


@needs_bpe
def test_eval_samples_with_the_runs_bpe_tokenizer(shakespeare_slice: Path, tmp_path: Path,
                                                  token_config) -> None:
    prepare_text(shakespeare_slice, "bpe", tmp_path / "bpe", vocab_size=300)
    (tmp_path / "lm.yaml").write_text(yaml.safe_dump(token_config(tmp_path / "bpe", steps=4)))
    _invoke(["train", str(tmp_path / "lm.yaml"), "--runs-dir", str(tmp_path / "runs"), "-q"])
    run = next((tmp_path / "runs").iterdir())
    assert (run / "tokenizer.json").read_bytes() == (tmp_path / "bpe" / "tokenizer.json"
                                                      ).read_bytes()
    prompt = "Grüße, Café"  # characters the corpus never has: bytes for a byte-level BPE
    result = json.loads(_invoke(["eval", str(run), "--sample", "12", "--prompt", prompt,
                                 "--json"]))
    assert result["sample"].startswith(prompt) and result["generation"]["tokens"] == 12
    assert "val_bits_per_char" in result["metrics"]
