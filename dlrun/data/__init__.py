"""Datasets and data loading: real formats (IDX, CSV, text), verified downloads, a fast loader.

Pure NumPy: builders return `DatasetBundle`s of NumPy arrays and the `DataLoader` yields
NumPy or CuPy batches; the runner wraps them in tensors.
"""

from dlrun.data.bundle import DatasetBundle, Split, Standardizer
from dlrun.data.datasets import (
    DATASETS,
    available_datasets,
    build_dataset,
    dataset_options,
    register_dataset,
)
from dlrun.data.download import SOURCES, Checksum, DatasetSource, cache_dir, fetch, verify_file
from dlrun.data.idx import read_idx, read_image_label_pair, read_images, read_labels, write_idx
from dlrun.data.image_folder import image_folder
from dlrun.data.loader import DataLoader
from dlrun.data.synthetic import adding, blobs, linear, sine, spirals
from dlrun.data.tabular import csv_dataset, read_csv, series
from dlrun.data.text import decode, encode, text, tinyshakespeare
from dlrun.data.vision import fashion_mnist, mnist

__all__ = [
    "DATASETS",
    "SOURCES",
    "Checksum",
    "DataLoader",
    "DatasetBundle",
    "DatasetSource",
    "Split",
    "Standardizer",
    "adding",
    "available_datasets",
    "blobs",
    "build_dataset",
    "cache_dir",
    "csv_dataset",
    "dataset_options",
    "decode",
    "encode",
    "fashion_mnist",
    "fetch",
    "image_folder",
    "linear",
    "mnist",
    "read_csv",
    "read_idx",
    "read_image_label_pair",
    "read_images",
    "read_labels",
    "register_dataset",
    "series",
    "sine",
    "spirals",
    "text",
    "tinyshakespeare",
    "verify_file",
    "write_idx",
]
