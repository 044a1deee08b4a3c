"""MNIST / Fashion-MNIST builders on small generated IDX files, and on the real MNIST."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from dlrun.data import download
from dlrun.data.bundle import DatasetBundle
from dlrun.data.download import MNIST_FILES, verify_file
from dlrun.data.idx import write_idx
from dlrun.data.vision import fashion_mnist, mnist
from dlrun.errors import DataError


def test_mnist_shapes_scaling_and_splits(fake_mnist: tuple[Path, dict]) -> None:
    root, arrays = fake_mnist
    b = mnist(root, val_fraction=0.25, seed=3)
    assert b.train.x.shape == (30, 1, 28, 28) and b.val.x.shape == (10, 1, 28, 28)
    assert b.test.x.shape == (12, 1, 28, 28)
    assert b.train.x.dtype == np.float32 and b.train.y.dtype == np.int64
    assert 0.0 <= b.train.x.min() and b.train.x.max() <= 1.0
    # the test split is the file's own, in order, scaled by 1/255
    np.testing.assert_allclose(b.test.x[:, 0] * 255, arrays[MNIST_FILES[2]], atol=1e-3)
    np.testing.assert_array_equal(b.test.y, arrays[MNIST_FILES[3]])
    # train + val partition the training file
    all_y = np.sort(np.concatenate([b.train.y, b.val.y]))
    np.testing.assert_array_equal(all_y, np.sort(arrays[MNIST_FILES[1]]))
    assert b.meta["input_shape"] == [1, 28, 28] and b.meta["num_classes"] == 10
    assert b.meta["task"] == "classification"
    json.dumps(b.meta)


def test_validation_split_is_seeded(fake_mnist: tuple[Path, dict]) -> None:
    root, _ = fake_mnist
    a, b, c = (mnist(root, val_fraction=0.25, seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.val.x, b.val.x)
    assert not np.array_equal(a.val.x, c.val.x)


def test_no_validation_and_flatten(fake_mnist: tuple[Path, dict]) -> None:
    root, _ = fake_mnist
    b = mnist(root, val_fraction=0.0, flatten=True)
    assert b.val is None and b.train.x.shape == (40, 784) and b.meta["input_shape"] == [784]


def test_normalize_uses_training_statistics(fake_mnist: tuple[Path, dict]) -> None:
    root, _ = fake_mnist
    b = mnist(root, val_fraction=0.25, normalize=True)
    assert abs(float(b.train.x.mean())) < 1e-4 and abs(float(b.train.x.std()) - 1) < 1e-3
    raw = mnist(root, val_fraction=0.25)
    mean, std = b.meta["normalize"]["mean"], b.meta["normalize"]["std"]
    np.testing.assert_allclose(b.val.x, (raw.val.x - mean) / std, rtol=1e-5, atol=1e-5)
    c = mnist(root, normalize=(0.1307, 0.3081))
    assert c.meta["normalize"] == {"mean": 0.1307, "std": 0.3081}
    with pytest.raises(DataError, match="normalize"):
        mnist(root, normalize="yes")  # type: ignore[arg-type]


def test_fashion_mnist_uses_its_own_folder(fake_mnist: tuple[Path, dict]) -> None:
    root, _ = fake_mnist
    b = fashion_mnist(root)
    assert b.meta["name"] == "fashion_mnist" and b.meta["classes"][9] == "Ankle boot"
    assert all("fashion-mnist" in f for f in b.meta["files"])


def test_missing_files_with_no_network(
    tmp_path: Path, dead_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download, "RETRIES", 1)
    src = download.SOURCES["mnist"]
    monkeypatch.setitem(
        download.SOURCES, "mnist", download.DatasetSource(src.folder, (dead_url,), src.files)
    )
    with pytest.raises(
        DataError,
        match=r"mnist/train-images-idx3-ubyte\.gz: file not found "
        r"and could not be downloaded",
    ):
        mnist(tmp_path)
    assert list((tmp_path / "mnist").iterdir()) == []


def test_label_image_mismatch_in_dataset(
    fake_mnist: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = fake_mnist
    labels = root / "mnist" / MNIST_FILES[1]
    write_idx(labels, np.zeros(39, dtype=np.uint8))
    src = download.SOURCES["mnist"]
    files = dict(src.files)
    files[MNIST_FILES[1]] = download.Checksum("sha256", download.file_digest(labels))
    monkeypatch.setitem(
        download.SOURCES, "mnist", download.DatasetSource(src.folder, src.mirrors, files)
    )
    with pytest.raises(
        DataError,
        match=r"train-labels-idx1-ubyte\.gz: 39 labels do not match "
        r"the 40 images",
    ):
        mnist(root)


def test_bad_val_fraction(fake_mnist: tuple[Path, dict]) -> None:
    with pytest.raises(DataError, match=r"val_fraction must be in \[0, 1\)"):
        mnist(fake_mnist[0], val_fraction=1.5)


# --- the real MNIST (once per module) ---------------------------------------------------


@functools.cache
def _real_mnist(root: str) -> DatasetBundle:
    return mnist(root, val_fraction=0.1, seed=0)


@pytest.mark.realdata
def test_real_mnist_checksums(data_dir: Path) -> None:
    for name in MNIST_FILES:
        verify_file(
            data_dir / "mnist" / name, download.SOURCES["mnist"].files[name], use_stamp=False
        )


@pytest.mark.realdata
def test_real_mnist_counts_and_shapes(data_dir: Path) -> None:
    b = _real_mnist(str(data_dir))
    assert len(b.train) == 54000 and len(b.val) == 6000 and len(b.test) == 10000
    assert b.train.x.shape[1:] == (1, 28, 28)
    train_counts = np.bincount(np.concatenate([b.train.y, b.val.y]), minlength=10)
    assert train_counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    test_counts = np.bincount(b.test.y, minlength=10)
    assert test_counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert b.test.y.min() == 0 and b.test.y.max() == 9
    assert float(b.test.x.min()) == 0.0 and float(b.test.x.max()) == 1.0
    assert abs(float(b.train.x.mean()) - 0.1307) < 2e-3


@pytest.mark.realdata
def test_real_mnist_train_pixels_match_published_stats(data_dir: Path) -> None:
    b = _real_mnist(str(data_dir))
    # every split is drawn from the real files: the first test digit is a 7
    assert int(b.test.y[0]) == 7
    assert (b.train.x.reshape(len(b.train), -1) > 0).any(axis=1).all()  # no blank images
