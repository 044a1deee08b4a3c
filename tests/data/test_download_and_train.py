"""End to end: `dlrun train` on the MNIST config downloads the four IDX files from a mirror
(a local HTTP server), verifies them, caches them, and trains; a second run reuses the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlrun.cli import app
from dlrun.data import download
from dlrun.data.download import MNIST_FILES, DatasetSource
from tests.data.conftest import make_mnist_files, sha256

ROOT = Path(__file__).resolve().parents[2]


def test_train_downloads_verifies_and_caches(tmp_path: Path, http_server,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    files = make_mnist_files(tmp_path / "served", n_train=64, n_test=16)
    checksums = {}
    for name in files:
        body = (tmp_path / "served" / name).read_bytes()
        http_server.files[f"/mnist/{name}"] = body
        checksums[name] = sha256(body)
    monkeypatch.setitem(download.SOURCES, "mnist", DatasetSource(
        "mnist", (http_server.base_url + "/broken/", http_server.base_url + "/mnist/"),
        checksums))
    cache = tmp_path / "cache"
    args = ["train", str(ROOT / "configs" / "mnist_mlp.yaml"), "--device", "cpu",
            "--set", "train.max_steps=3", "--set", "train.batch_size=16",
            "--runs-dir", str(tmp_path / "runs"), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in MNIST_FILES:
        assert (cache / "mnist" / name).is_file()
    served = [p for p, status in http_server.requests if status == 200]
    assert sorted(served) == sorted(f"/mnist/{n}" for n in MNIST_FILES)
    http_server.requests.clear()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert http_server.requests == []  # the second run reads the verified cache


def test_corrupt_download_is_a_clear_error_and_leaves_nothing(
        tmp_path: Path, http_server, monkeypatch: pytest.MonkeyPatch) -> None:
    make_mnist_files(tmp_path / "served")
    checksums = {}
    for name in MNIST_FILES:
        body = (tmp_path / "served" / name).read_bytes()
        http_server.files[f"/mnist/{name}"] = body[:-10] + b"0123456789"  # corrupted in transit
        checksums[name] = sha256(body)
    monkeypatch.setitem(download.SOURCES, "mnist", DatasetSource(
        "mnist", (http_server.base_url + "/mnist/",), checksums))
    result = CliRunner().invoke(app, ["train", str(ROOT / "configs" / "mnist_mlp.yaml"),
                                      "--device", "cpu", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "train-images-idx3-ubyte.gz" in result.output
    cached = list((tmp_path / "cache").rglob("*"))
    assert not [p for p in cached if p.is_file()]
