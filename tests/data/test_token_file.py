"""Token folders: `prepare_text` writes nanoGPT's train.bin/val.bin with tokenizer.json and
meta.json, `token_file` reads them through np.memmap, prepares on first use, and rejects
files that do not belong together."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from dlrun.data import build_dataset
from dlrun.data.text import text
from dlrun.data.token_file import prepare_text, token_file
from dlrun.data.tokenize import load_tokenizer
from dlrun.errors import DataError

needs_bpe = pytest.mark.skipif(importlib.util.find_spec("tokenizers") is None,
                               reason="the BPE needs tokenizers (dlrun[text])")


def _ids(folder: Path, split: str, dtype: str = "uint16") -> np.ndarray:
    return np.fromfile(folder / f"{split}.bin", dtype=np.dtype(dtype).newbyteorder("<"))


@needs_bpe
def test_bpe_folder_round_trips_the_corpus(shakespeare_slice: Path, tmp_path: Path) -> None:
    out = tmp_path / "bpe"
    meta = prepare_text(shakespeare_slice, "bpe", out, vocab_size=300, val_fraction=0.1)
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "tokenizer.json",
                                                     "train.bin", "val.bin"]
    assert json.loads((out / "meta.json").read_text()) == meta
    assert (meta["tokenizer"], meta["vocab_size"], meta["dtype"]) == ("bpe", 300, "uint16")
    corpus = shakespeare_slice.read_text()
    tok = load_tokenizer(out / "tokenizer.json")
    train, val = _ids(out, "train"), _ids(out, "val")
    assert tok.decode(train) + tok.decode(val) == corpus  # nothing lost, nothing added
    assert meta["splits"]["val"]["chars"] == round(len(corpus) * 0.1)
    for split, ids in (("train", train), ("val", val)):
        info = meta["splits"][split]
        assert info["tokens"] == len(ids) and info["max_id"] == ids.max() < 300
        assert info["chars_per_token"] == pytest.approx(info["chars"] / len(ids))
    bundle = token_file(out, seq_len=32)
    assert bundle.meta["chars_per_token"]["val"] == meta["splits"]["val"]["chars_per_token"]
    assert np.array_equal(bundle.train.x[5], train[5:37])  # stride 1: every offset
    assert np.array_equal(bundle.val.y[1], val[33:65])  # validation: non-overlapping


def test_char_folder_is_the_text_dataset(shakespeare_slice: Path, tmp_path: Path) -> None:
    prepare_text(shakespeare_slice, "char", tmp_path / "char")
    tokens = build_dataset("token_file", path=str(tmp_path / "char"), seq_len=16, stride=16)
    chars = text(shakespeare_slice, seq_len=16, stride=16)
    assert tokens.meta["vocab_size"] == chars.meta["vocab_size"]
    assert np.array_equal(tokens.train.x, chars.train.x)
    assert np.array_equal(tokens.val.y, chars.val.y)
    assert load_tokenizer(tmp_path / "char" / "tokenizer.json").vocab == chars.meta["vocab"]


def test_the_windows_are_views_of_a_memory_map(shakespeare_slice: Path, tmp_path: Path) -> None:
    prepare_text(shakespeare_slice, "char", tmp_path / "char")
    x = token_file(tmp_path / "char", seq_len=16).train.x
    base = x
    while not isinstance(base, np.memmap):
        base = base.base
    assert Path(base.filename) == (tmp_path / "char" / "train.bin").resolve()
    assert not x.flags.owndata and not x.flags.writeable


def test_a_vocabulary_past_uint16_is_stored_as_uint32(tmp_path: Path) -> None:
    corpus = tmp_path / "wide.txt"
    chars = "".join(chr(c) for c in range(0x20000, 0x20000 + 70_000))  # 70,000 distinct
    corpus.write_text(chars + chars[:1000], encoding="utf-8")
    meta = prepare_text(corpus, "char", tmp_path / "wide", val_fraction=0.0)
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == 70_000
    ids = _ids(tmp_path / "wide", "train", "uint32")
    assert (tmp_path / "wide" / "train.bin").stat().st_size == 4 * len(ids) == 4 * 71_000
    assert load_tokenizer(tmp_path / "wide" / "tokenizer.json").decode(ids[-3:]) == chars[997:1000]
    bundle = token_file(tmp_path / "wide", seq_len=8)
    assert bundle.val is None and bundle.train.x.dtype == np.uint32


def test_prepared_on_first_use_in_the_cache(shakespeare_slice: Path, tmp_path: Path) -> None:
    first = token_file(corpus=str(shakespeare_slice), tokenizer="char", seq_len=16,
                       root=tmp_path / "cache")
    folder = Path(first.meta["files"][0]).parent
    assert folder.parent == tmp_path / "cache" / "tokenized"
    stamp = (folder / "train.bin").stat().st_mtime_ns
    again = token_file(corpus=str(shakespeare_slice), tokenizer="char", seq_len=16,
                       root=tmp_path / "cache")
    assert (folder / "train.bin").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert np.array_equal(again.train.x, first.train.x)
    with pytest.raises(DataError, match="prepared with other settings.*val_fraction"):
        token_file(folder, corpus=str(shakespeare_slice), tokenizer="char", val_fraction=0.2)


def _folder(shakespeare_slice: Path, tmp_path: Path) -> Path:
    prepare_text(shakespeare_slice, "char", tmp_path / "tok")
    return tmp_path / "tok"


def test_a_bin_of_a_partial_token(shakespeare_slice: Path, tmp_path: Path) -> None:
    folder = _folder(shakespeare_slice, tmp_path)
    with open(folder / "train.bin", "ab") as f:
        f.write(b"\x01")
    with pytest.raises(DataError, match="train.bin: .* not a whole number of uint16"):
        token_file(folder)


def test_ids_outside_the_vocabulary(shakespeare_slice: Path, tmp_path: Path) -> None:
    folder = _folder(shakespeare_slice, tmp_path)
    ids = _ids(folder, "val")
    ids[3] = 500
    ids.tofile(folder / "val.bin")
    with pytest.raises(DataError, match="val.bin: token id 500 does not fit the vocabulary"):
        token_file(folder)


def test_a_tokenizer_of_another_folder(shakespeare_slice: Path, tmp_path: Path) -> None:
    folder = _folder(shakespeare_slice, tmp_path)
    other = tmp_path / "other.txt"
    other.write_text("another corpus altogether\n" * 40)
    prepare_text(other, "char", tmp_path / "other")
    (folder / "tokenizer.json").write_bytes((tmp_path / "other" / "tokenizer.json").read_bytes())
    with pytest.raises(DataError, match="tokenizer.json: does not match the token files"):
        token_file(folder)


def test_failures_write_nothing(shakespeare_slice: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="char tokenizer"):
        prepare_text(shakespeare_slice, "char", tmp_path / "new" / "out", vocab_size=300)
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a token folder"):
        prepare_text(shakespeare_slice, "char", tmp_path / "mine")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_a_folder_another_rank_prepared_meanwhile_is_kept(shakespeare_slice: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "tok"
    prepare_text(shakespeare_slice, "char", out)
    first = (out / "train.bin").stat().st_ino
    prepare_text(shakespeare_slice, "char", out, replace=False)  # as token_file's first use
    assert (out / "train.bin").stat().st_ino == first
    prepare_text(shakespeare_slice, "char", out)  # `dlrun prepare` makes it again
    assert (out / "train.bin").stat().st_ino != first
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
