"""Tokenized corpora on disk, nanoGPT's format: `train.bin` and `val.bin` hold the raw
little-endian token ids (uint16, or uint32 when the vocabulary needs it; no header), beside
`tokenizer.json` and `meta.json` (vocabulary size, dtype, tokenizer kind and fingerprint, token
and character counts per split, the corpus's SHA-256).

`prepare_text` writes such a folder from a text file; `token_file` (the dataset `token_file`)
reads one through `np.memmap`, so opening a 10 GB `train.bin` reads nothing: the training
windows are strided views of the mapping, drawn at random offsets per batch (nanoGPT's
get_batch), and only the batch is ever copied.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.data.bundle import DatasetBundle, Split, check_fraction, check_positive_int
from dlrun.data.download import Progress, cache_dir, file_digest
from dlrun.data.text import corpus_text, read_text, windows
from dlrun.data.tokenize import Tokenizer, chunks, fingerprint, fit_tokenizer, token_dtype
from dlrun.errors import DataError

FORMAT = "dlrun-tokens"
FORMAT_VERSION = 1
SPLITS = ("train", "val")
SCAN_BYTES = 256 << 20  # a split up to this size has every id checked when it is opened


# ----- writing ----------------------------------------------------------------------------------
def _write_split(path: Path, tok: Tokenizer, text: str, dtype: np.dtype) -> dict[str, Any]:
    """Encode `text` chunk by chunk into `path`; the split's counts for meta.json."""
    tokens = max_id = 0
    with open(path, "wb") as f:
        for piece in chunks(text):
            ids = tok.encode(piece, drop_unknown=True)
            if len(ids):
                max_id = max(max_id, int(ids.max()))
                ids.astype(dtype.newbyteorder("<")).tofile(f)
                tokens += len(ids)
    return {"tokens": tokens, "chars": len(text),
            "chars_per_token": len(text) / tokens if tokens else None, "max_id": max_id}


def _install(tmp: Path, out: Path, replace: bool) -> None:
    """Move the finished folder `tmp` to `out`, replacing a token folder already there; with
    `replace` False one that appeared meanwhile (another rank's, same settings) is kept."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp made it private
    old = None
    if replace and out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except OSError:
        if replace or not (out / "meta.json").is_file():
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _check_out(out: Path) -> None:
    """`out` may be new, empty or a token folder (replaced); anything else is kept."""
    if out.exists() and (not out.is_dir() or (
            any(out.iterdir()) and not (out / "meta.json").is_file())):
        raise DataError(f"{out}: exists and is not a token folder (no meta.json); "
                        "choose another output folder")


def prepare_text(corpus: str | Path, tokenizer: str, out: str | Path, *,
                 vocab_size: int | None = None, val_fraction: float = 0.1,
                 encoding: str = "utf-8", content: str | None = None, replace: bool = True
                 ) -> dict[str, Any]:
    """Tokenize the text file `corpus` into the folder `out`; returns its meta.json content.

    The text is split as the `text` dataset splits it (the last `val_fraction` of the
    characters is validation), the tokenizer ('char' or 'bpe', `vocab_size` tokens) is learnt on
    the training part. Everything is checked and encoded in a temporary folder beside `out`
    that replaces it at the end (unless `replace` is False and a token folder is there by
    then), so a failure leaves `out` as it was.
    """
    out = Path(out)
    val_fraction = check_fraction("val_fraction", val_fraction, Path(corpus).name)
    _check_out(out)
    if content is None:
        content = read_text(corpus, encoding)
    if not content:
        raise DataError(f"{corpus}: the text file is empty")
    n_val = int(round(len(content) * val_fraction))
    parts = {"train": content[: len(content) - n_val], "val": content[len(content) - n_val:]}
    tok = fit_tokenizer(tokenizer, parts["train"], vocab_size, str(corpus))
    dtype = token_dtype(tok.vocab_size)
    tok_json = tok.to_json()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        splits = {s: _write_split(tmp / f"{s}.bin", tok, parts[s], dtype) for s in SPLITS}
        meta = {"format": FORMAT, "version": FORMAT_VERSION, "tokenizer": tok.kind,
                "vocab_size": tok.vocab_size, "dtype": dtype.name,
                "tokenizer_sha256": fingerprint(tok_json), "corpus": str(Path(corpus).resolve()),
                "corpus_sha256": file_digest(corpus), "val_fraction": val_fraction,
                "encoding": encoding, "splits": splits}
        (tmp / "tokenizer.json").write_bytes(tok_json.encode("utf-8"))  # the fingerprinted bytes
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        _install(tmp, out, replace)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


# ----- reading ----------------------------------------------------------------------------------
def read_meta(folder: str | Path) -> dict[str, Any]:
    """A token folder's meta.json, checked; DataError naming the file."""
    path = Path(folder) / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found; make the token folder with `dlrun prepare text`"
                        ) from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable ({e})") from None
    ok = (isinstance(meta, dict) and meta.get("format") == FORMAT
          and isinstance(meta.get("vocab_size"), int) and meta["vocab_size"] > 0
          and meta.get("dtype") in ("uint16", "uint32") and isinstance(meta.get("splits"), dict)
          and all(isinstance(meta["splits"].get(s, {}).get("tokens"), int) for s in SPLITS))
    if not ok:
        raise DataError(f"{path}: not a dlrun token folder's meta.json")
    if meta.get("version") != FORMAT_VERSION:
        raise DataError(f"{path}: format version {meta.get('version')!r}; this dlrun reads "
                        f"{FORMAT_VERSION}")
    return meta


def _check_tokenizer(folder: Path, meta: dict[str, Any]) -> Path:
    path = folder / "tokenizer.json"
    try:
        digest = fingerprint(path.read_bytes())
    except OSError as e:
        raise DataError(f"{path}: cannot read the tokenizer ({e.strerror or e})") from None
    if digest != meta.get("tokenizer_sha256"):
        raise DataError(f"{path}: does not match the token files (meta.json records tokenizer "
                        f"{str(meta.get('tokenizer_sha256'))[:12]}..., this file is "
                        f"{digest[:12]}...); prepare the folder again")
    return path


def open_split(folder: str | Path, split: str, meta: dict[str, Any]) -> np.ndarray:
    """The ids of `split` as a read-only memmap (empty array for no tokens), after checking the
    file's size against the token width and meta.json, and its ids against the vocabulary
    (every id for files up to SCAN_BYTES, else the maximum meta.json records)."""
    path = Path(folder) / f"{split}.bin"
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DataError(f"{path}: {e.strerror or e}") from None
    if size % dtype.itemsize:
        raise DataError(f"{path}: {size} bytes is not a whole number of {meta['dtype']} token "
                        f"ids ({dtype.itemsize} bytes each)")
    n, expected = size // dtype.itemsize, meta["splits"][split]["tokens"]
    if n != expected:
        raise DataError(f"{path}: holds {n} tokens, meta.json says {expected}; the folder's "
                        "files do not belong together (prepare it again)")
    if n == 0:
        return np.zeros(0, dtype=dtype)
    ids = np.memmap(path, dtype=dtype, mode="r", shape=(n,))
    top = int(ids.max()) if size <= SCAN_BYTES else int(meta["splits"][split].get("max_id", 0))
    if top >= meta["vocab_size"]:
        raise DataError(f"{path}: token id {top} does not fit the vocabulary of "
                        f"{meta['vocab_size']} tokens (meta.json)")
    return ids


# ----- the dataset ------------------------------------------------------------------------------
def _settings_differ(meta: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return [f"{k} {meta.get(k)!r} (wanted {v!r})" for k, v in wanted.items()
            if v is not None and meta.get(k) != v]


def prepared_folder(corpus: str | Path, tokenizer: str | None, vocab_size: int | None,
                    val_fraction: float, path: str | Path | None = None,
                    root: str | Path | None = None, encoding: str = "utf-8",
                    download: bool = True, progress: Progress | None = None) -> Path:
    """The token folder of `corpus` (a text file, or 'tinyshakespeare' from the data cache)
    with these settings, prepared on first use: into `path`, or else into the data cache
    (`<root or $DLRUN_DATA_DIR>/tokenized/<name>-<tokenizer>[<vocab>]-<settings digest>/`)."""
    if tokenizer is None:
        raise DataError("dataset 'token_file': options.corpus needs options.tokenizer "
                        "(char or bpe)")
    named = str(corpus) == "tinyshakespeare" and not Path(corpus).exists()
    corpus_path, content = corpus_text(None if named else corpus, "tinyshakespeare", root,
                                       encoding, download, progress)
    wanted = {"corpus_sha256": file_digest(corpus_path), "tokenizer": tokenizer,
              "vocab_size": vocab_size, "val_fraction": val_fraction}
    if path is None:
        name = "tinyshakespeare" if named else corpus_path.stem
        key = fingerprint(json.dumps(wanted, sort_keys=True))[:12]
        path = (Path(root) if root else cache_dir()) / "tokenized" / \
            f"{name}-{tokenizer}{vocab_size or ''}-{key}"
    folder = Path(path)
    if (folder / "meta.json").is_file():
        differ = _settings_differ(read_meta(folder), wanted)
        if not differ:
            return folder
        raise DataError(f"{folder}: prepared with other settings ({'; '.join(differ)}); "
                        "delete it or give another options.path")
    prepare_text(corpus_path, tokenizer, folder, vocab_size=vocab_size,
                 val_fraction=val_fraction, encoding=encoding, content=content, replace=False)
    return folder


def _windows(ids: np.ndarray, seq_len: int, stride: int, path: Path) -> Split:
    if len(ids) < seq_len + 1:
        raise DataError(f"{path}: {len(ids)} tokens, fewer than seq_len + 1 = {seq_len + 1}; "
                        "use a shorter seq_len")
    return windows(ids, seq_len, stride)


def token_file(
    path: str | Path | None = None,
    *,
    seq_len: int = 64,
    stride: int = 1,
    val_stride: int | None = None,
    corpus: str | Path | None = None,
    tokenizer: str | None = None,
    vocab_size: int | None = None,
    val_fraction: float = 0.1,
    root: str | Path | None = None,
    encoding: str = "utf-8",
    download: bool = True,
    progress: Progress | None = None,
) -> DatasetBundle:
    """A token folder (`dlrun prepare text`): windows of `seq_len` ids and their next ids.

    Training draws windows at random offsets every step (train.sampling does not apply; start
    offsets every `stride` ids, default 1: every offset, as nanoGPT); validation takes windows
    every `val_stride` (default `seq_len`: each id once). With `corpus` and `tokenizer`
    (and `vocab_size`, `val_fraction`) the folder is prepared on first use (see
    `prepared_folder`); `path` then names where it goes.
    """
    name = "token_file"
    seq_len = check_positive_int("seq_len", seq_len, name)
    stride = check_positive_int("stride", stride, name)
    val_stride = seq_len if val_stride is None else check_positive_int("val_stride", val_stride,
                                                                       name)
    if corpus is not None:
        path = prepared_folder(corpus, tokenizer, vocab_size,
                               check_fraction("val_fraction", val_fraction, name), path, root,
                               encoding, download, progress)
    elif path is None:
        raise DataError(f"dataset {name!r}: give options.path (a folder made by `dlrun prepare "
                        "text`), or options.corpus and options.tokenizer to prepare one")
    elif tokenizer is not None or vocab_size is not None:
        raise DataError(f"dataset {name!r}: options.tokenizer and options.vocab_size prepare "
                        "options.corpus; without a corpus the folder's tokenizer is used")
    folder = Path(path)
    meta = read_meta(folder)
    tok_path = _check_tokenizer(folder, meta)
    ids = {s: open_split(folder, s, meta) for s in SPLITS}
    train = _windows(ids["train"], seq_len, stride, folder / "train.bin")
    val = _windows(ids["val"], seq_len, val_stride, folder / "val.bin") if len(ids["val"]) \
        else None
    vocab = meta["vocab_size"]
    info: dict[str, Any] = {
        "name": name, "task": "language_model", "sequence": True, "input_shape": [seq_len],
        "input_dtype": "int64", "vocab_size": vocab, "num_classes": vocab,
        "output_dim": vocab, "seq_len": seq_len, "stride": stride, "val_stride": val_stride,
        "sampling": "random",
        "tokenizer": {"kind": meta.get("tokenizer"), "path": str(tok_path),
                      "sha256": meta["tokenizer_sha256"]},
        "chars_per_token": {s: meta["splits"][s].get("chars_per_token") for s in SPLITS},
        "tokens": {s: len(ids[s]) for s in SPLITS},
        "files": [str(folder / f"{s}.bin") for s in SPLITS],
    }
    return DatasetBundle(train, val, None, info)
