"""The registry: names a config can use, option checking."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlrun.data import DatasetBundle, available_datasets, build_dataset, dataset_options
from dlrun.data.datasets import DATASETS, register_dataset
from dlrun.data.synthetic import blobs
from dlrun.errors import DataError


def test_every_issue_dataset_is_registered() -> None:
    for name in (
        "mnist",
        "fashion_mnist",
        "text",
        "tinyshakespeare",
        "csv",
        "series",
        "linear",
        "blobs",
        "spirals",
        "sine",
        "adding",
    ):
        assert name in available_datasets()


def test_build_with_options_and_aliases(fake_mnist: tuple[Path, dict]) -> None:
    b = build_dataset("blobs", n=90, n_classes=3, seed=2)
    assert isinstance(b, DatasetBundle) and len(b.train) + len(b.val) == 90
    assert build_dataset("Fashion-MNIST", root=fake_mnist[0]).meta["name"] == "fashion_mnist"


def test_unknown_name_lists_datasets() -> None:
    with pytest.raises(DataError, match="unknown dataset 'cifar10'; available: adding, blobs"):
        build_dataset("cifar10")


def test_unknown_option_lists_options() -> None:
    with pytest.raises(DataError, match=r"dataset 'blobs' has no option 'clases'; options: n, "):
        build_dataset("blobs", clases=3)
    assert "seq_len" in dataset_options("text")


def test_missing_required_option_and_bad_seed() -> None:
    with pytest.raises(DataError, match="dataset 'csv': missing a required argument"):
        build_dataset("csv", target="y")
    with pytest.raises(DataError, match="seed must be an integer >= 0"):
        build_dataset("spirals", seed=-1)


def test_register_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dlrun.data.datasets.DATASETS", DATASETS.copy())
    register_dataset("My-Blobs", lambda **kw: blobs(60, **kw))
    assert len(build_dataset("my_blobs", seed=1).train) == 48
