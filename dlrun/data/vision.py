"""MNIST and Fashion-MNIST from their original four IDX files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlrun.data.bundle import DatasetBundle, Split, check_fraction, random_split
from dlrun.data.download import MNIST_FILES, Progress, fetch
from dlrun.data.idx import read_image_label_pair
from dlrun.errors import DataError

FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def _to_float(images: np.ndarray, flatten: bool) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 in [0, 1], shaped (N, 1, 28, 28) or (N, 784)."""
    n, rows, cols = images.shape
    x = images.astype(np.float32)
    x *= np.float32(1.0 / 255.0)
    return x.reshape(n, rows * cols) if flatten else x.reshape(n, 1, rows, cols)


def _normalize(name: str, normalize: bool | tuple[float, float], train: Split,
               splits: list[Split | None]) -> dict[str, float] | None:
    """Standardise the splits' pixels in place with the training split's mean and std (True)
    or a given (mean, std); what was used, for meta (None: not normalised)."""
    if normalize is False or normalize is None:
        return None
    if normalize is True:
        mean, std = float(train.x.mean(dtype=np.float64)), float(train.x.std())
    else:
        try:
            mean, std = (float(v) for v in normalize)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise DataError(
                f"dataset {name!r}: normalize must be true/false or [mean, std], "
                f"got {normalize!r}"
            ) from None
        if std <= 0:
            raise DataError(f"dataset {name!r}: normalize std must be > 0, got {std}")
    for s in splits:
        if s is not None:
            s.x -= np.float32(mean)
            s.x *= np.float32(1.0 / std)
    return {"mean": mean, "std": std}


def idx_image_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    normalize: bool | tuple[float, float] = False,
    flatten: bool = False,
    download: bool = True,
    progress: Progress | None = None,
    class_names: tuple[str, ...] | None = None,
) -> DatasetBundle:
    """An MNIST-format dataset: own test split, seeded validation fraction of train.

    Pixels are float32 in [0, 1]. `normalize=True` standardises with the mean/std of the
    training split (after the validation rows are taken out); a `(mean, std)` pair uses
    those values. Both are recorded in meta['normalize'].
    """
    val_fraction = check_fraction("val_fraction", val_fraction, name)
    paths = [fetch(name, f, root, progress=progress, download=download) for f in MNIST_FILES]
    train_images, train_labels = read_image_label_pair(paths[0], paths[1], num_classes=10)
    test_images, test_labels = read_image_label_pair(paths[2], paths[3], num_classes=10)
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(
            f"{paths[2]}: test images are {test_images.shape[1:]}, train images "
            f"{train_images.shape[1:]} in {paths[0]}"
        )
    train = Split(_to_float(train_images, flatten), train_labels.astype(np.int64))
    test = Split(_to_float(test_images, flatten), test_labels.astype(np.int64))
    train_part, val = random_split(train, (val_fraction,), seed, name)
    assert train_part is not None

    norm = _normalize(name, normalize, train_part, [train_part, val, test])

    rows, cols = train_images.shape[1:]
    meta: dict[str, Any] = {
        "name": name,
        "task": "classification",
        "input_shape": [rows * cols] if flatten else [1, rows, cols],
        "input_dtype": "float32",
        "num_classes": 10,
        "output_dim": 10,
        "classes": list(class_names) if class_names else [str(i) for i in range(10)],
        "normalize": norm,
        "files": [str(p) for p in paths],
    }
    return DatasetBundle(train_part, val, test, meta)


def mnist(
    root: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    normalize: bool | tuple[float, float] = False,
    flatten: bool = False,
    download: bool = True,
    progress: Progress | None = None,
) -> DatasetBundle:
    """MNIST handwritten digits: 60k train (minus validation) and 10k test, 28x28, 10 classes."""
    return idx_image_dataset(
        "mnist",
        root,
        val_fraction=val_fraction,
        seed=seed,
        normalize=normalize,
        flatten=flatten,
        download=download,
        progress=progress,
    )


def fashion_mnist(
    root: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    normalize: bool | tuple[float, float] = False,
    flatten: bool = False,
    download: bool = True,
    progress: Progress | None = None,
) -> DatasetBundle:
    """Fashion-MNIST (Zalando): same format and sizes as MNIST, 10 clothing classes."""
    return idx_image_dataset(
        "fashion_mnist",
        root,
        val_fraction=val_fraction,
        seed=seed,
        normalize=normalize,
        flatten=flatten,
        download=download,
        progress=progress,
        class_names=FASHION_CLASSES,
    )
