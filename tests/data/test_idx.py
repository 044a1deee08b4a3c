"""IDX parser: round trips and every bad file (truncated gzip, wrong magic, bad counts)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from dlrun.data.idx import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    read_idx,
    read_image_label_pair,
    read_images,
    read_labels,
    write_idx,
)
from dlrun.errors import DataError


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(7, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("name", ["imgs-idx3-ubyte.gz", "imgs-idx3-ubyte"])
def test_images_round_trip_gzip_and_raw(tmp_path: Path, images: np.ndarray, name: str) -> None:
    path = write_idx(tmp_path / name, images)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    out = read_images(path)
    assert out.dtype == np.uint8 and out.shape == (7, 28, 28)
    np.testing.assert_array_equal(out, images)


def test_header_is_big_endian_with_published_magic(tmp_path: Path, images: np.ndarray) -> None:
    raw = write_idx(tmp_path / "i", images).read_bytes()
    assert int.from_bytes(raw[:4], "big") == IMAGES_MAGIC
    assert [int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12)] == [7, 28, 28]
    assert len(raw) == 16 + 7 * 784
    labels = write_idx(tmp_path / "l", np.arange(5, dtype=np.uint8)).read_bytes()
    assert int.from_bytes(labels[:4], "big") == LABELS_MAGIC and len(labels) == 8 + 5


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.float32, np.float64, np.int8])
def test_other_idx_types_round_trip(tmp_path: Path, dtype: type) -> None:
    a = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    out = read_idx(write_idx(tmp_path / "a.gz", a))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, a)


def test_truncated_gzip_names_the_file(tmp_path: Path, images: np.ndarray) -> None:
    path = write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: truncated gzip"):
        read_images(path)


def test_corrupt_gzip_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00" + b"garbage" * 20)
    with pytest.raises(DataError, match=r"x\.gz: corrupt gzip"):
        read_idx(path)


def test_wrong_magic_for_the_kind(tmp_path: Path) -> None:
    labels = write_idx(tmp_path / "labels.gz", np.arange(5, dtype=np.uint8))
    with pytest.raises(DataError, match=r"labels\.gz: wrong magic number 2049.*expected 2051"):
        read_images(labels)


def test_not_an_idx_file(tmp_path: Path) -> None:
    path = tmp_path / "page.html.gz"
    path.write_bytes(gzip.compress(b"<html>404 Not Found</html>"))
    with pytest.raises(DataError, match=r"page\.html\.gz: .*wrong magic number"):
        read_idx(path)
    with pytest.raises(DataError, match=r"page\.html\.gz: wrong magic"):
        read_labels(path)


def test_too_short_for_a_header(tmp_path: Path) -> None:
    path = tmp_path / "tiny"
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="tiny: not an IDX file: only 2 bytes"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(path)


def test_item_count_checked_against_size(tmp_path: Path, images: np.ndarray) -> None:
    path = tmp_path / "imgs"
    raw = write_idx(path, images).read_bytes()
    path.write_bytes(raw[:-784])  # header still says 7 images
    with pytest.raises(DataError, match=r"imgs: IDX file truncated: header says 7 items"):
        read_images(path)
    path.write_bytes(raw + b"\x00" * 3)
    with pytest.raises(DataError, match="trailing bytes"):
        read_images(path)


def test_label_count_must_match_images(tmp_path: Path, images: np.ndarray) -> None:
    img = write_idx(tmp_path / "img.gz", images)
    lab = write_idx(tmp_path / "lab.gz", np.zeros(6, dtype=np.uint8))
    with pytest.raises(DataError, match=r"lab\.gz: 6 labels do not match the 7 images in .*img"):
        read_image_label_pair(img, lab)


def test_label_range_checked(tmp_path: Path, images: np.ndarray) -> None:
    img = write_idx(tmp_path / "img.gz", images)
    lab = write_idx(tmp_path / "lab.gz", np.array([0, 1, 2, 3, 4, 5, 10], dtype=np.uint8))
    with pytest.raises(DataError, match=r"lab\.gz: label 10 out of range 0\.\.9"):
        read_image_label_pair(img, lab, num_classes=10)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.gz: file not found"):
        read_idx(tmp_path / "nope.gz")
