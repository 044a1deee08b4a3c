"""IDX file parser (the MNIST / Fashion-MNIST format), gzip-compressed or raw.

An IDX file is a big-endian header (magic number, then one uint32 per dimension) followed by
the items. Every bad file -- a truncated gzip, a wrong magic number, a size that does not
match the header -- raises a DataError that names the file, so a corrupt cache is diagnosed in
one line instead of surfacing later as a shape error.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from dlrun.errors import DataError

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, rows, cols)
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N,)

# IDX type code (third magic byte) -> big-endian NumPy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

_GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: str | Path) -> bytes:
    """The file's content, gunzipped when it is gzip (detected by content, not by name)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise DataError(
            f"{path}: truncated gzip file (the compressed stream ends early; "
            "delete it and download it again)"
        ) from None
    except (gzip.BadGzipFile, zlib.error, OSError) as e:
        raise DataError(f"{path}: corrupt gzip file: {e}") from None


def parse_idx(data: bytes, source: str | Path = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into an array of the shape the header declares (native byte order)."""
    if len(data) < 4:
        raise DataError(f"{source}: not an IDX file: only {len(data)} bytes")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    magic = int.from_bytes(data[:4], "big")
    if zero != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{source}: not an IDX file: wrong magic number {magic} (0x{magic:08x}); "
            f"expected {IMAGES_MAGIC} for images or {LABELS_MAGIC} for labels"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(
            f"{source}: truncated IDX header: {ndim} dimensions need {header_len} bytes, "
            f"file has {len(data)}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(
            f"{source}: IDX file {what}: header says {dims[0]} items of shape "
            f"{tuple(dims[1:])} ({expected} data bytes), file has {actual} data bytes"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    if dtype.byteorder == ">":
        array = array.astype(dtype.newbyteorder("="))
    return array


def read_idx(path: str | Path, expected_magic: int | None = None) -> np.ndarray:
    """Read one IDX file; with `expected_magic`, a file of another kind is a DataError."""
    data = read_bytes(path)
    if expected_magic is not None and len(data) >= 4:
        magic = int.from_bytes(data[:4], "big")
        if magic != expected_magic:
            kind = {IMAGES_MAGIC: "an image", LABELS_MAGIC: "a label"}.get(expected_magic, "an")
            raise DataError(
                f"{path}: wrong magic number {magic} (0x{magic:08x}); "
                f"expected {expected_magic} for {kind} IDX file"
            )
    return parse_idx(data, path)


def read_images(path: str | Path) -> np.ndarray:
    """An image IDX file (magic 2051) -> uint8 array (N, rows, cols)."""
    return read_idx(path, IMAGES_MAGIC)


def read_labels(path: str | Path) -> np.ndarray:
    """A label IDX file (magic 2049) -> uint8 array (N,)."""
    return read_idx(path, LABELS_MAGIC)


def read_image_label_pair(
    images_path: str | Path, labels_path: str | Path, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read matching image and label files, checking counts agree and labels are in range."""
    images = read_images(images_path)
    labels = read_labels(labels_path)
    if len(images) != len(labels):
        raise DataError(
            f"{labels_path}: {len(labels)} labels do not match the {len(images)} images "
            f"in {images_path}"
        )
    if num_classes is not None and len(labels) and int(labels.max()) >= num_classes:
        raise DataError(
            f"{labels_path}: label {int(labels.max())} out of range 0..{num_classes - 1}"
        )
    return images, labels


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write an array as an IDX file (gzip when `compress` or the name ends in .gz).

    Used by tests and tools to make small files in the original format.
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise DataError(f"{path}: IDX cannot store dtype {array.dtype}")
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    body = np.ascontiguousarray(array, dtype=np.dtype(_IDX_DTYPES[code])).tobytes()
    data = header + body
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        data = gzip.compress(data, mtime=0)
    path.write_bytes(data)
    return path
