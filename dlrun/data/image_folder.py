"""`image_folder`: your own images, one sub-folder per class (torchvision's ImageFolder layout).

```
DIR/cat/001.png  DIR/cat/002.jpg  DIR/dog/x.bmp ...        classes: sorted folder names
DIR/train/<class>/...  [DIR/val/<class>/...]  [DIR/test/<class>/...]   or given splits
```

PNG, JPEG and BMP files are read with Pillow, converted to `channels` (1: greyscale, 3: RGB;
images of other modes are converted, and said once), resized to `size` and decoded once into a
uint8 cache (data.cache: a memory-mapped .npy beside the data plus a manifest of the files'
sizes and modification times; changed files are decoded again, the others reused). The splits
are row indices into that one array, never copies, so a folder larger than memory trains: the
loader reads each batch's rows and scales them to [0, 1], normalised per channel with the
training split's mean and std (data.transforms.Normalize), augmenting training batches when
`augment` asks. The statistics (and the size and channels) are recorded in
meta['resolved_options'], which the run's saved config keeps, so `dlrun eval`, `dlrun export`
and `--resume` use the same values.
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.data.bundle import DatasetBundle, Split, check_fraction, chunked_stats, random_split
from dlrun.data.cache import (
    cache_folder,
    fallback_note,
    file_entries,
    open_array,
    read_manifest,
    write_cache,
)
from dlrun.data.transforms import Augment, Normalize
from dlrun.errors import DataError

NAME = "image_folder"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SPLITS = ("train", "val", "test")
MODES = {1: "L", 3: "RGB"}
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")
CACHE_VERSION = 1


@dataclass
class Listing:
    """The images of a folder in cache-row order, their class ids and split (index in SPLITS;
    all 0 without train/ val/ test/ sub-folders)."""

    root: Path
    classes: list[str]
    files: list[str]
    labels: np.ndarray
    parts: np.ndarray
    given_splits: tuple[str, ...]


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise DataError("dataset 'image_folder' reads images with Pillow: "
                        "pip install 'dlrun[images]'") from None
    return Image


def _class_folders(base: Path) -> list[str]:
    return sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))


def _images(root: Path, folder: Path) -> list[str]:
    """The image files under `folder` (recursively), relative to `root`, sorted."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        out += [Path(dirpath, f).relative_to(root).as_posix() for f in filenames
                if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith(".")]
    return sorted(out)


def scan(root: Path) -> Listing:
    """The folder's classes and images; DataError for an empty folder or an empty class."""
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (data.options.path of {NAME!r})")
    given = tuple(s for s in SPLITS if (root / s).is_dir()) if (root / "train").is_dir() else ()
    classes = _class_folders(root / "train" if given else root)
    if not classes:
        raise DataError(f"{root / 'train' if given else root}: no class folders; put each "
                        f"class's images ({', '.join(IMAGE_SUFFIXES)}) in a sub-folder of its own")
    files: list[str] = []
    labels: list[int] = []
    parts: list[int] = []
    for top in given or ("",):
        base = root / top
        unknown = sorted(set(_class_folders(base)) - set(classes))
        if unknown:
            raise DataError(f"{base / unknown[0]}: class {unknown[0]!r} has no folder in "
                            f"{root / 'train'}")
        for label, name in enumerate(classes):
            if not (base / name).is_dir():
                continue  # a val/ or test/ without some class
            found = _images(root, base / name)
            if not found:
                raise DataError(f"{base / name}: a class folder without images "
                                f"({', '.join(IMAGE_SUFFIXES)})")
            files += found
            labels += [label] * len(found)
            parts += [SPLITS.index(top) if top else 0] * len(found)
    return Listing(root, classes, files, np.array(labels, np.int64), np.array(parts), given)


def _decode(image: Any, path: Path, size: tuple[int, int], mode: str) -> tuple[np.ndarray, str]:
    """(C, H, W) uint8 pixels of one file and its original mode; DataError naming the file when
    it cannot be read (not an image, truncated, unreadable)."""
    try:
        with image.open(path) as im:
            im.load()
            source = im.mode
            if im.mode != mode:
                im = im.convert(mode)
            if im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), image.Resampling.BILINEAR)
            pixels = np.asarray(im, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read the image ({e})") from None
    return (pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)), source


def _geometry(listing: Listing, size: Any, channels: Any, image: Any) -> tuple[tuple[int, int],
                                                                               int]:
    """((H, W), C): as given, else those of the first image."""
    if size is None or channels is None:
        first = listing.root / listing.files[0]
        try:
            with image.open(first) as im:
                w, h = im.size
                mode = im.mode
        except (OSError, SyntaxError, ValueError) as e:
            raise DataError(f"{first}: cannot read the image ({e})") from None
        size = (h, w) if size is None else size
        channels = (1 if mode in GREY_MODES else 3) if channels is None else channels
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, list | tuple) or len(size) != 2 or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise DataError(f"dataset {NAME!r}: size must be [height, width] in pixels, got {size!r}")
    if channels not in MODES:
        raise DataError(f"dataset {NAME!r}: channels must be 1 or 3, got {channels!r}")
    return (int(size[0]), int(size[1])), int(channels)


def _conversion_warning(listing: Listing, modes: list[str], mode: str) -> list[str]:
    """One line saying how many images were converted from which modes (none: no line)."""
    counts = collections.Counter(m for m in modes if m != mode)
    if not counts:
        return []
    what = ", ".join(f"{n} {m}" for m, n in sorted(counts.items()))
    return [f"{listing.root}: converted {sum(counts.values())} of {len(modes)} images to {mode} "
            f"({what})"]


def cached_pixels(listing: Listing, size: tuple[int, int], channels: int, image: Any
                  ) -> tuple[np.memmap, list[str], Path]:
    """The (N, C, H, W) uint8 pixels of the listing, memory-mapped from the cache (decoded into
    it first when missing or stale), the conversion warning, the cache's path."""
    folder = cache_folder(listing.root)
    stem = f"{NAME}-{size[0]}x{size[1]}x{channels}"
    array_path, manifest_path = folder / f"{stem}.npy", folder / f"{stem}.json"
    entries = file_entries(listing.root, listing.files)
    shape = (len(entries), channels, *size)
    mode = MODES[channels]
    old = read_manifest(manifest_path) or {}
    if old.get("version") == CACHE_VERSION and old.get("files") == entries:
        pixels = open_array(array_path, shape, np.uint8)
        if pixels is not None:
            return pixels, _conversion_warning(listing, old["modes"], mode), array_path
    manifest: dict[str, Any] = {"version": CACHE_VERSION, "root": str(listing.root),
                                "size": list(size), "channels": channels, "files": entries}

    def fill(out: np.memmap) -> None:
        previous = {tuple(e): (i, m) for i, (e, m) in enumerate(
            zip(old.get("files") or [], old.get("modes") or [], strict=False))}
        prev = open_array(array_path, (len(old.get("files") or []), *shape[1:]), np.uint8) \
            if previous else None
        modes = []
        for i, entry in enumerate(entries):
            hit = previous.get(tuple(entry)) if prev is not None else None
            if hit is not None:
                out[i], source = prev[hit[0]], hit[1]
            else:
                out[i], source = _decode(image, listing.root / entry[0], size, mode)
            modes.append(source)
        manifest["modes"] = modes

    pixels = write_cache(array_path, manifest_path, shape, np.uint8, fill, manifest)
    return pixels, _conversion_warning(listing, manifest["modes"], mode), array_path


def channel_stats(pixels: np.ndarray, rows: np.ndarray, chunk_values: int = 1 << 24
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the [0, 1]-scaled pixels of `rows`, read in chunks (the
    array may be larger than memory); a constant channel gets std 1."""
    mean, std = chunked_stats(pixels, rows, (0, 2, 3), chunk_values)
    return mean / 255.0, np.where(std > 1e-12, std / 255.0, 1.0)


def _normalization(normalize: Any, pixels: np.ndarray, rows: np.ndarray, channels: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std): fitted on the training rows (true), none (false: 0 and 1) or
    given ({mean: [...], std: [...]}, one value or one per channel)."""
    if normalize is True:
        return channel_stats(pixels, rows)
    if normalize is False or normalize is None:
        return np.zeros(channels), np.ones(channels)
    try:
        mean, std = (np.broadcast_to(np.asarray(normalize[k], np.float64).reshape(-1),
                                     (channels,)).copy() for k in ("mean", "std"))
    except (TypeError, KeyError, ValueError, IndexError):
        raise DataError(f"dataset {NAME!r}: normalize must be true, false or {{mean: [...], "
                        f"std: [...]}} with 1 or {channels} values each, got {normalize!r}"
                        ) from None
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise DataError(f"dataset {NAME!r}: normalize needs finite means and stds > 0, "
                        f"got {normalize!r}")
    return mean, std


def _splits(listing: Listing, pixels: np.ndarray, val_fraction: float, seed: int
            ) -> dict[str, Split | None]:
    """Row-index splits: the given train/ val/ test/ folders, else a seeded val_fraction."""
    def part(name: str) -> Split | None:
        if name not in (listing.given_splits or ("train",)):
            return None
        rows = np.flatnonzero(listing.parts == SPLITS.index(name))
        return Split(pixels, listing.labels[rows], rows)

    train, val, test = part("train"), part("val"), part("test")
    assert train is not None
    if val is None and val_fraction > 0:
        train, val = random_split(train, (val_fraction,), seed, NAME)
        assert train is not None
    return {"train": train, "val": val, "test": test}


def image_folder(
    path: str | Path,
    *,
    size: int | list[int] | None = None,
    channels: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    normalize: bool | dict[str, Any] = True,
    augment: dict[str, Any] | None = None,
) -> DatasetBundle:
    """Images in class sub-folders: x (C, H, W) pixels scaled to [0, 1] and normalised per
    channel with the training split's statistics, y the class id (classes sorted by name).

    `size` [H, W] and `channels` (1 or 3) default to the first image's; `augment`
    ({flip: true, crop_padding: 4}) flips and crops training batches; `val_fraction` splits
    the training images (seeded) when there is no val/ folder.
    """
    image = _pillow()
    val_fraction = check_fraction("val_fraction", val_fraction, NAME)
    aug = Augment.from_options(augment, NAME)
    listing = scan(Path(path).expanduser())
    size_hw, c = _geometry(listing, size, channels, image)
    pixels, warnings, cache = cached_pixels(listing, size_hw, c, image)
    splits = _splits(listing, pixels, val_fraction, seed)
    train = splits["train"]
    assert train is not None and train.index is not None
    mean, std = _normalization(normalize, pixels, train.index, c)
    plain = Normalize(mean.reshape(c, 1, 1), std.reshape(c, 1, 1), 1.0 / 255.0)
    for key, s in splits.items():
        if s is not None:
            s.transform = replace(plain, augment=aug) if key == "train" else plain
    stats = {"mean": mean.tolist(), "std": std.tolist()}
    meta: dict[str, Any] = {
        "name": NAME, "task": "classification", "input_shape": [c, *size_hw],
        "input_dtype": "float32", "num_classes": len(listing.classes),
        "output_dim": len(listing.classes), "classes": listing.classes, "normalize": stats,
        "files": [str(listing.root)], "cache": str(cache),
        "warnings": warnings + fallback_note(listing.root, cache),
        "resolved_options": {"size": list(size_hw), "channels": c, "normalize": stats},
    }
    return DatasetBundle(train, splits["val"], splits["test"], meta)
