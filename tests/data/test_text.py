"""Character-level text: vocabulary, contiguous split, next-character windows, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dlrun.data import download
from dlrun.data.text import decode, encode, text, tinyshakespeare, windows
from dlrun.errors import DataError

CORPUS = "hello world, the quick brown fox jumps over the lazy dog.\n" * 20


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS)
    return path


def test_vocab_windows_and_targets(corpus: Path) -> None:
    b = text(corpus, seq_len=16, val_fraction=0.1)
    vocab = b.meta["vocab"]
    n_val = round(len(CORPUS) * 0.1)
    assert vocab == sorted(set(CORPUS[: len(CORPUS) - n_val]))
    assert b.meta["vocab_size"] == b.meta["num_classes"] == b.meta["output_dim"] == len(vocab)
    assert b.train.x.dtype == np.int64 and b.train.y.dtype == np.int64
    assert b.train.x.shape[1] == 16 and b.train.y.shape == b.train.x.shape
    # y is x shifted by one character; non-overlapping windows cover the training text
    np.testing.assert_array_equal(b.train.x[:, 1:], b.train.y[:, :-1])
    assert decode(b.train.x[0], vocab) == CORPUS[:16]
    assert decode(b.train.y[0], vocab) == CORPUS[1:17]
    assert decode(b.train.x[1], vocab) == CORPUS[16:32]
    assert len(b.train) == (len(CORPUS) - n_val - 17) // 16 + 1
    # validation is the contiguous tail
    assert decode(b.val.x[0], vocab) == CORPUS[len(CORPUS) - n_val :][:16]
    assert b.test is None
    json.dumps(b.meta)


def test_stride_gives_overlapping_windows(corpus: Path) -> None:
    b = text(corpus, seq_len=8, stride=1, val_fraction=0.0)
    assert b.val is None
    assert len(b.train) == len(CORPUS) - 8
    np.testing.assert_array_equal(b.train.x[1], b.train.y[0])


def test_encode_decode_round_trip() -> None:
    vocab = sorted(set(CORPUS))
    ids = encode(CORPUS, vocab)
    assert decode(ids, vocab) == CORPUS
    with pytest.raises(DataError, match="not in the vocabulary"):
        encode("hello Z", vocab)
    assert decode(encode("hello Z", vocab, drop_unknown=True), vocab) == "hello "


def test_unseen_validation_characters_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("abcabcabcabcabcabc" + "abcZ")
    b = text(path, seq_len=2, val_fraction=0.2)
    assert b.meta["vocab"] == ["a", "b", "c"] and b.meta["val_unknown_chars_dropped"] == 1


def test_crlf_is_normalised(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes(b"line one\r\nline two\r\n" * 10)
    b = text(path, seq_len=4, val_fraction=0.0)
    assert "\r" not in b.meta["vocab"]


def test_empty_text_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("")
    with pytest.raises(DataError, match=r"empty\.txt: the text file is empty"):
        text(path)


def test_text_too_short_for_seq_len(tmp_path: Path) -> None:
    path = tmp_path / "short.txt"
    path.write_text("abcdefghij")
    with pytest.raises(
        DataError,
        match=r"short\.txt: the training part has 9 characters, "
        r"fewer than seq_len \+ 1 = 65",
    ):
        text(path, seq_len=64)


def test_invalid_utf8_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "bin.txt"
    path.write_bytes(b"abc\xff\xfeabc")
    with pytest.raises(DataError, match=r"bin\.txt: not valid utf-8 text at byte 3"):
        text(path)
    with pytest.raises(DataError, match=r"nope\.txt: file not found"):
        text(tmp_path / "nope.txt")


def test_bad_options(corpus: Path) -> None:
    with pytest.raises(DataError, match="seq_len must be an integer >= 1"):
        text(corpus, seq_len=0)
    with pytest.raises(DataError, match="give a path"):
        text(None, dataset="war_and_peace")


def test_tinyshakespeare_missing_with_no_network(
    tmp_path: Path, dead_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download, "RETRIES", 1)
    src = download.SOURCES["tinyshakespeare"]
    monkeypatch.setitem(
        download.SOURCES,
        "tinyshakespeare",
        download.DatasetSource(src.folder, (dead_url,), src.files),
    )
    with pytest.raises(
        DataError,
        match=r"tinyshakespeare/input\.txt: file not found and "
        r"could not be downloaded",
    ):
        tinyshakespeare(tmp_path)


@pytest.mark.realdata
def test_real_tinyshakespeare(data_dir: Path) -> None:
    path = data_dir / "tinyshakespeare" / "input.txt"
    download.verify_file(
        path, download.SOURCES["tinyshakespeare"].files["input.txt"], use_stamp=False
    )
    b = tinyshakespeare(data_dir, seq_len=100)
    assert b.meta["vocab_size"] == 65
    assert b.meta["chars"]["train"] + b.meta["chars"]["val"] == 1_115_394
    assert b.meta["val_unknown_chars_dropped"] == 0
    assert (
        "".join(b.meta["vocab"])
        == "\n !$&',-.3:;?" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "abcdefghijklmnopqrstuvwxyz"
    )
    assert decode(b.train.x[0], b.meta["vocab"]).startswith("First Citizen:")
    assert b.train.x.max() < 65 and b.val.x.max() < 65


def test_windows_are_views_of_the_corpus_not_copies() -> None:
    ids = np.arange(1000, dtype=np.int64)
    split = windows(ids, seq_len=64, stride=1)
    assert len(split) == 1000 - 64
    assert np.shares_memory(split.x, ids) and np.shares_memory(split.y, ids)
    assert not split.x.flags.writeable  # a view into the corpus: nobody may write through it
    np.testing.assert_array_equal(split.x[7], ids[7:71])
    np.testing.assert_array_equal(split.y[7], ids[8:72])
    # the default stride (seq_len) gives a view too, and it is laid out contiguously
    blocks = windows(ids, seq_len=64, stride=64)
    assert np.shares_memory(blocks.x, ids) and blocks.x.flags.c_contiguous
    assert len(blocks) == (1000 - 65) // 64 + 1


def test_stride_one_training_keeps_non_overlapping_validation(corpus: Path) -> None:
    b = text(corpus, seq_len=8, stride=1, val_fraction=0.2)
    n_val = round(len(CORPUS) * 0.2)
    assert len(b.train) == len(CORPUS) - n_val - 8
    assert len(b.val) == (n_val - 9) // 8 + 1  # evaluation cost does not grow with stride 1
    assert b.meta["stride"] == 1 and b.meta["val_stride"] == 8
    assert len(text(corpus, seq_len=8, stride=1, val_stride=1, val_fraction=0.2).val) == n_val - 8
    with pytest.raises(DataError, match="val_stride must be an integer >= 1"):
        text(corpus, seq_len=8, val_stride=0)
