"""Write the MNIST test set as an image folder (one PNG per image), for the image_folder dataset.

The first `--train` images go to DIR/train/<digit>/, the rest to DIR/test/<digit>/ (10000 in
all: 8000 / 2000 by default), named by their index in the IDX file.

    python benchmarks/mnist_folder.py DIR [--mnist-root ../shared/data] [--train 8000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from dlrun.data.download import fetch  # noqa: E402
from dlrun.data.idx import read_image_label_pair  # noqa: E402


def write_folder(out: Path, mnist_root: str | None, train: int) -> int:
    """The PNG files written (none when the folder holds them already)."""
    images_path = fetch("mnist", "t10k-images-idx3-ubyte.gz", mnist_root, download=False)
    labels_path = fetch("mnist", "t10k-labels-idx1-ubyte.gz", mnist_root, download=False)
    images, labels = read_image_label_pair(images_path, labels_path, num_classes=10)
    written = 0
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        target = out / ("train" if i < train else "test") / str(int(label)) / f"{i:05d}.png"
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, "L").save(target)
        written += 1
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--mnist-root", default=None, help="folder with mnist/ (default: the cache)")
    ap.add_argument("--train", type=int, default=8000)
    args = ap.parse_args()
    n = write_folder(args.out, args.mnist_root, args.train)
    print(f"{args.out}: wrote {n} PNG files")


if __name__ == "__main__":
    main()
