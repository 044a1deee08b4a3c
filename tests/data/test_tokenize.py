"""Tokenizers: the char tokenizer is data.text's vocabulary, the byte-level BPE round-trips any
text, encoding in chunks gives the ids of encoding whole, and the vocabulary limits are checked."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from dlrun.data.text import build_vocab, encode
from dlrun.data.tokenize import (
    MIN_BPE_VOCAB,
    CharTokenizer,
    chunks,
    fit_tokenizer,
    token_dtype,
    tokenizer_from_json,
)
from dlrun.errors import DataError

needs_bpe = pytest.mark.skipif(importlib.util.find_spec("tokenizers") is None,
                               reason="the BPE needs tokenizers (dlrun[text])")


def test_char_tokenizer_is_the_text_datasets_vocabulary(shakespeare_slice: Path) -> None:
    text = shakespeare_slice.read_text()
    tok = fit_tokenizer("char", text)
    assert tok.vocab == build_vocab(text)
    assert np.array_equal(tok.encode(text), encode(text, build_vocab(text)))
    assert tok.decode(tok.encode(text)) == text
    again = tokenizer_from_json(tok.to_json())
    assert isinstance(again, CharTokenizer) and again.vocab == tok.vocab


@needs_bpe
def test_bpe_round_trips_and_compresses(shakespeare_slice: Path) -> None:
    text = shakespeare_slice.read_text()
    tok = fit_tokenizer("bpe", text, 300)
    assert tok.vocab_size == 300
    ids = tok.encode(text)
    assert ids.max() < 300 and len(text) / len(ids) > 1.3  # merges made tokens longer
    assert tok.decode(ids) == text
    unseen = "Grüße, naïve café — 東京\r\n"  # bytes never seen in training still encode
    assert tok.decode(tok.encode(unseen)) == unseen
    again = tokenizer_from_json(tok.to_json())
    assert np.array_equal(again.encode(text), ids)


@needs_bpe
def test_encoding_in_chunks_gives_the_ids_of_the_whole(shakespeare_slice: Path) -> None:
    text = shakespeare_slice.read_text()
    tok = fit_tokenizer("bpe", text, 280)
    pieces = list(chunks(text, 1000))
    assert len(pieces) > 10 and "".join(pieces) == text
    whole = np.array(tok.hf.encode(text).ids)
    assert np.array_equal(np.concatenate([tok.hf.encode(p).ids for p in pieces]), whole)


def test_token_dtype_widens_past_uint16() -> None:
    assert token_dtype(65) == np.uint16 and token_dtype(1 << 16) == np.uint16
    assert token_dtype((1 << 16) + 1) == np.uint32


@needs_bpe
@pytest.mark.parametrize(("size", "needle"), [(100, f"at least {MIN_BPE_VOCAB}"),
                                              (50_000, "allows at most")])
def test_bpe_vocab_size_limits(size: int, needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        fit_tokenizer("bpe", "to be or not to be\n" * 20, size)


def test_not_a_tokenizer(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="neither"):
        tokenizer_from_json('{"hello": 1}')
    with pytest.raises(DataError, match="not a JSON"):
        tokenizer_from_json("{", "x/tokenizer.json")
