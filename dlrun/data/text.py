"""Character-level text datasets (Tiny Shakespeare by default) for next-character prediction.

The vocabulary is the sorted set of characters of the training part and is stored in
meta['vocab'], so evaluation and sampling decode with exactly the same mapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.data.bundle import DatasetBundle, Split, check_fraction, check_positive_int
from dlrun.data.download import Progress, fetch
from dlrun.errors import DataError


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """The whole file as text (universal newlines: CRLF becomes LF); DataError if unreadable."""
    path = Path(path)
    try:
        with open(path, encoding=encoding) as f:
            return f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not valid {encoding} text at byte {e.start}: {e.reason}"
        ) from None
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def build_vocab(text: str) -> list[str]:
    """Sorted distinct characters of `text`."""
    return sorted(set(text))


def encode(text: str, vocab: Sequence[str], *, drop_unknown: bool = False) -> np.ndarray:
    """Characters -> int64 ids in `vocab` (vectorised). Unknown characters are a DataError
    unless `drop_unknown`, which leaves them out."""
    cps = _codepoints(text)
    table = np.array([ord(c) for c in vocab], dtype=np.uint32)
    if len(table) == 0:
        raise DataError("cannot encode with an empty vocabulary")
    order = np.argsort(table)
    sorted_table = table[order]
    pos = np.minimum(np.searchsorted(sorted_table, cps), len(table) - 1)
    known = sorted_table[pos] == cps
    if not known.all():
        if not drop_unknown:
            bad = sorted({chr(c) for c in cps[~known][:100]})
            raise DataError(f"characters not in the vocabulary: {bad!r}")
        pos = pos[known]
    return order[pos].astype(np.int64)


def decode(ids: Sequence[int] | np.ndarray, vocab: Sequence[str]) -> str:
    """int ids -> text with `vocab` (what sampling and eval use)."""
    return "".join(vocab[int(i)] for i in np.asarray(ids).reshape(-1))


def windows(ids: np.ndarray, seq_len: int, stride: int) -> Split:
    """Next-token windows: x = ids[s:s+T], y = ids[s+1:s+T+1] for s = 0, stride, ...

    x and y are read-only strided views of `ids` (no copy: with stride 1 a copy would be T times
    the corpus); a loader gathers each batch from them, and only the batch is copied.
    """
    n = (len(ids) - seq_len - 1) // stride + 1
    view = np.lib.stride_tricks.sliding_window_view(ids, seq_len + 1)[::stride][:n]
    return Split(view[:, :-1], view[:, 1:])


def corpus_text(path: str | Path | None, dataset: str, root: str | Path | None, encoding: str,
            download: bool, progress: Progress | None) -> tuple[Path, str]:
    """The corpus file (Tiny Shakespeare fetched when no path is given) and its text."""
    if path is None:
        if dataset != "tinyshakespeare":
            raise DataError(
                f"dataset 'text': give a path, or dataset='tinyshakespeare' (got {dataset!r})"
            )
        path = fetch("tinyshakespeare", "input.txt", root, progress=progress, download=download)
    path = Path(path)
    content = read_text(path, encoding)
    if not content:
        raise DataError(f"{path}: the text file is empty")
    return path, content


def _part(ids: np.ndarray, seq_len: int, stride: int, what: str, hint: str) -> Split:
    """Windows of `seq_len` ids every `stride`; DataError when the part is too short."""
    if len(ids) < seq_len + 1:
        raise DataError(f"{what} has {len(ids)} characters, fewer than seq_len + 1 = "
                        f"{seq_len + 1}; use a shorter seq_len{hint}")
    return windows(ids, seq_len, stride)


def text(
    path: str | Path | None = None,
    *,
    seq_len: int = 64,
    stride: int | None = None,
    val_stride: int | None = None,
    val_fraction: float = 0.1,
    dataset: str = "tinyshakespeare",
    root: str | Path | None = None,
    encoding: str = "utf-8",
    download: bool = True,
    progress: Progress | None = None,
) -> DatasetBundle:
    """A character-level corpus split contiguously: the first (1 - val_fraction) for training.

    Samples are windows of `seq_len` ids with the next-character targets (x, y int64 (N, T)),
    training windows start every `stride` characters (default: `seq_len`, no overlap; 1 gives
    every offset, as nanoGPT samples), validation windows every `val_stride` (default:
    `seq_len`, so evaluation sees each validation character once whatever the training stride).
    The windows are strided views of the encoded text, not copies. Without `path`, the named
    `dataset` ('tinyshakespeare') is found in the cache or downloaded. Characters of the
    validation part that never occur in training are dropped (counted in meta).
    """
    name = "text" if path is not None else dataset
    seq_len = check_positive_int("seq_len", seq_len, name)
    stride = seq_len if stride is None else check_positive_int("stride", stride, name)
    val_stride = (seq_len if val_stride is None
                  else check_positive_int("val_stride", val_stride, name))
    val_fraction = check_fraction("val_fraction", val_fraction, name)
    path, content = corpus_text(path, dataset, root, encoding, download, progress)

    n_val = int(round(len(content) * val_fraction))
    train_text, val_text = content[: len(content) - n_val], content[len(content) - n_val :]
    vocab = build_vocab(train_text)
    train_ids = encode(train_text, vocab)
    val_ids = encode(val_text, vocab, drop_unknown=True)
    dropped = len(val_text) - len(val_ids)

    hint = " or another val_fraction" if val_fraction else ""
    train = _part(train_ids, seq_len, stride, f"{path}: the training part", hint)
    val = (_part(val_ids, seq_len, val_stride, f"{path}: the validation part", hint)
           if n_val > 0 else None)
    meta: dict[str, Any] = {
        "name": name,
        "task": "language_model",
        "sequence": True,
        "input_shape": [seq_len],
        "input_dtype": "int64",
        "vocab": vocab,
        "vocab_size": len(vocab),
        "num_classes": len(vocab),
        "output_dim": len(vocab),
        "seq_len": seq_len,
        "stride": stride,
        "val_stride": val_stride,
        "chars": {"train": len(train_text), "val": len(val_text)},
        "val_unknown_chars_dropped": dropped,
        "files": [str(path)],
    }
    return DatasetBundle(train, val, None, meta)


def tinyshakespeare(
    root: str | Path | None = None,
    *,
    seq_len: int = 64,
    stride: int | None = None,
    val_stride: int | None = None,
    val_fraction: float = 0.1,
    download: bool = True,
    progress: Progress | None = None,
) -> DatasetBundle:
    """Tiny Shakespeare (karpathy/char-rnn), 1.1M characters, 65 distinct."""
    return text(
        None,
        seq_len=seq_len,
        stride=stride,
        val_stride=val_stride,
        val_fraction=val_fraction,
        root=root,
        download=download,
        progress=progress,
    )
