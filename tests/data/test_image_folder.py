"""image_folder: real PNG/JPEG/BMP folders written with Pillow, the memory-mapped cache (reused,
rebuilt on change, outside a read-only folder), the splits, the statistics, augmentation."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlrun.data import cache, image_folder
from dlrun.data.bundle import BatchKey
from dlrun.data.image_folder import channel_stats
from dlrun.data.transforms import Augment
from dlrun.errors import DataError
from tests.conftest import BAD_FOLDERS

image_folder_module = sys.modules["dlrun.data.image_folder"]  # the name is also the function


def _decoded(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert("L")
        if size is not None:
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        return np.asarray(im)


def test_classes_labels_and_pixels_of_png_jpeg_bmp(image_folder_factory) -> None:
    root = image_folder_factory(per_class=6, classes=("zebra", "ant", "moth"))
    bundle = image_folder(root, val_fraction=0.0, normalize=False)
    assert bundle.meta["classes"] == ["ant", "moth", "zebra"]  # sorted: their index the label
    assert bundle.meta["input_shape"] == [1, 12, 12] and bundle.meta["num_classes"] == 3
    train = bundle.train
    assert isinstance(train.x, np.memmap) and train.x.dtype == np.uint8
    assert np.array_equal(np.bincount(train.y), [6, 6, 6])
    files = sorted((root / "moth").iterdir())
    row = int(train.index[np.flatnonzero(train.y == 1)[0]])
    assert np.array_equal(train.x[row, 0], _decoded(files[0]))  # bmp, jpg and png decoded
    assert {f.suffix for f in files} == {".png", ".jpg", ".bmp"}
    x = train.inputs(slice(0, 4))  # scaled to [0, 1] (normalize: false)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0


def test_resize_rgb_and_normalisation_with_training_statistics(image_folder_factory) -> None:
    root = image_folder_factory(per_class=8, mode="RGB", formats=("png",))
    bundle = image_folder(root, size=[8, 6], channels=3, val_fraction=0.25, seed=1)
    assert bundle.meta["input_shape"] == [3, 8, 6]
    train, val = bundle.train, bundle.val
    assert len(train) == 12 and len(val) == 4
    assert not set(train.index) & set(val.index)  # rows of one shared array, not copies
    assert val.x is train.x
    raw = np.asarray(train.x[np.sort(train.index)], np.float64) / 255
    mean, std = raw.mean(axis=(0, 2, 3)), raw.std(axis=(0, 2, 3))
    assert np.allclose(bundle.meta["normalize"]["mean"], mean)
    assert np.allclose(bundle.meta["normalize"]["std"], std)
    x = train.inputs(np.arange(len(train)))
    assert np.allclose(x.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    assert np.allclose(x.std(axis=(0, 2, 3)), 1, atol=1e-4)
    given = image_folder(root, size=[8, 6], channels=3, val_fraction=0.25, seed=1,
                         normalize=bundle.meta["resolved_options"]["normalize"])
    assert np.array_equal(given.val.inputs(slice(None)), val.inputs(slice(None)))


def test_channel_stats_reads_in_chunks() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(50, 2, 4, 4), dtype=np.uint8)
    rows = np.arange(3, 50, 2)
    whole = channel_stats(pixels, rows)
    chunked = channel_stats(pixels, rows, chunk_values=4 * 32)  # 4 rows per chunk
    assert np.allclose(whole[0], chunked[0]) and np.allclose(whole[1], chunked[1])


def test_given_train_val_test_folders(image_folder_factory) -> None:
    image_folder_factory("split", per_class=6, split="train")
    image_folder_factory("split", per_class=2, split="val")
    root = image_folder_factory("split", per_class=3, split="test", classes=("b",))
    bundle = image_folder(root, val_fraction=0.5)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (12, 4, 3)
    assert set(bundle.test.y) == {1}  # test/ has only class b, labelled as in train/


def test_the_cache_is_reused_and_rebuilt_for_changed_files(image_folder_factory,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    root = image_folder_factory(per_class=4)
    first = image_folder(root, val_fraction=0.0)
    array = Path(first.meta["cache"])
    assert array.parent == root / ".dlrun-cache"
    manifest = json.loads(array.with_suffix(".json").read_text())
    assert [f[0] for f in manifest["files"]] == [f"a/{i:03d}.{e}" for i, e in
                                                 enumerate(("png", "jpg", "bmp", "png"))] + [
        f"b/{i:03d}.{e}" for i, e in enumerate(("png", "jpg", "bmp", "png"))]
    decoded: list[Path] = []
    real = image_folder_module._decode
    monkeypatch.setattr(image_folder_module, "_decode",
                        lambda image, path, *a: decoded.append(path) or real(image, path, *a))
    image_folder(root, val_fraction=0.0)
    assert decoded == []  # unchanged folder: read from the cache
    changed = root / "b" / "002.bmp"
    Image.fromarray(np.full((12, 12), 77, np.uint8), "L").save(changed)
    os.utime(changed, ns=(1, 1))  # a different mtime even on a coarse clock
    again = image_folder(root, val_fraction=0.0)
    assert decoded == [changed]  # only the changed file is decoded again
    assert np.all(again.train.x[6] == 77)
    assert np.array_equal(again.train.x[:6], first.train.x[:6])
    (root / "a" / "000.png").unlink()
    assert len(image_folder(root, val_fraction=0.0).train) == 7


def test_a_read_only_folder_caches_under_dlrun_data_cache(image_folder_factory, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = image_folder_factory(per_class=3)
    monkeypatch.setenv("DLRUN_DATA_CACHE", str(tmp_path / "elsewhere"))
    real = os.access  # tests run as root here, for whom chmod 555 would change nothing
    monkeypatch.setattr(cache.os, "access",
                        lambda p, m: False if Path(p) == root else real(p, m))
    bundle = image_folder(root, val_fraction=0.0)
    assert Path(bundle.meta["cache"]).parent.parent == tmp_path / "elsewhere"
    assert bundle.meta["warnings"] == [f"{root}: its folder is not writable; the decoded cache "
                                       f"is {bundle.meta['cache']}"]
    assert not (root / ".dlrun-cache").exists()


def test_mixed_modes_are_converted_and_said_once(image_folder_factory) -> None:
    root = image_folder_factory(per_class=4, formats=("png",))
    Image.fromarray(np.zeros((12, 12, 3), np.uint8), "RGB").save(root / "a" / "rgb.png")
    Image.fromarray(np.zeros((12, 12, 3), np.uint8), "RGB").save(root / "b" / "rgb.jpg")
    bundle = image_folder(root, channels=1, val_fraction=0.0)
    assert bundle.meta["warnings"] == [f"{root}: converted 2 of 10 images to L (2 RGB)"]
    assert image_folder(root, channels=1, val_fraction=0.0).meta["warnings"] == \
        bundle.meta["warnings"]  # said again from the cache


@pytest.mark.parametrize("setup", sorted(BAD_FOLDERS))
def test_bad_folders_name_the_problem_and_write_nothing(bad_image_folder, setup: str) -> None:
    root = bad_image_folder(setup)
    with pytest.raises(DataError, match=BAD_FOLDERS[setup]):
        image_folder(root)
    assert not (root / ".dlrun-cache").exists()


def test_augmentation_is_a_function_of_seed_epoch_and_batch() -> None:
    x = np.random.default_rng(0).integers(0, 256, size=(8, 1, 6, 6), dtype=np.uint8)
    aug = Augment(flip=True, crop_padding=2)
    key = BatchKey(seed=0, epoch=1, batch=3, lo=0, rows=8)
    a = aug(x, key)
    assert np.array_equal(a, aug(x, key))  # the same key replays the same batch
    assert not np.array_equal(a, aug(x, BatchKey(0, 2, 3, 0, 8)))
    assert not np.array_equal(a, x)
    # rank 1 of 2 holding rows 4..8 of the global batch draws what one process draws there
    assert np.array_equal(aug(x[4:], BatchKey(0, 1, 3, 4, 8)), a[4:])
    flip_only = Augment(flip=True)(x, key)
    flipped = [np.array_equal(f, r[..., ::-1]) and not np.array_equal(f, r)
               for f, r in zip(flip_only, x, strict=True)]
    kept = [np.array_equal(f, r) for f, r in zip(flip_only, x, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped)
    crop = Augment(crop_padding=1)(np.ones((4, 1, 5, 5), np.uint8), key)
    assert crop.sum() < 4 * 25  # shifted in some zero padding


@pytest.mark.parametrize(("options", "message"), [
    ({"size": [0, 4]}, "size must be"),
    ({"channels": 2}, "channels must be 1 or 3"),
    ({"augment": {"flip": "yes"}}, "augment.flip"),
    ({"augment": {"rotate": 3}}, "augment must be"),
    ({"normalize": {"mean": [0.1]}}, "normalize must be"),
])
def test_bad_options(image_folder_factory, options: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        image_folder(image_folder_factory(per_class=2), **options)
