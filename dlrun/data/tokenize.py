"""Tokenizers for language-model corpora: characters (the vocabulary of `data.text`) and a
byte-level BPE trained locally with Hugging Face `tokenizers` (the `text` extra).

A tokenizer is one JSON file, `tokenizer.json`: a BPE as Hugging Face writes it (it loads with
`tokenizers.Tokenizer.from_file` anywhere), the characters as `{"dlrun_tokenizer": "char",
"vocab": [...]}`. The SHA-256 of that text is its fingerprint: a token folder's meta.json and a
run directory keep it, so token ids are always decoded with the tokenizer that made them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlrun.data.text import build_vocab, decode, encode
from dlrun.errors import DataError

KINDS = ("char", "bpe")
SPECIAL_TOKENS = ("<|endoftext|>",)  # GPT-2's document separator, kept for corpora of documents
MIN_BPE_VOCAB = 256 + len(SPECIAL_TOKENS)  # the byte alphabet and the specials
DEFAULT_BPE_VOCAB = 512
CHUNK_CHARS = 1 << 20  # text encoded per call, so a corpus's ids never exist as one list
# A chunk ends after a newline that follows a non-space and precedes one: the byte-level
# pre-tokenizer splits there anyway, so encoding in chunks gives the ids of encoding it whole.
_SAFE_BREAK = re.compile(r"(?<=\S\n)(?=\S)")


def fingerprint(content: str | bytes) -> str:
    """SHA-256 hex digest of a tokenizer's JSON text (what meta.json records)."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    return hashlib.sha256(data).hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (nanoGPT's format), else uint32."""
    if vocab_size > 1 << 32:
        raise DataError(f"a vocabulary of {vocab_size} tokens does not fit 32-bit token ids")
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def chunks(text: str, size: int = CHUNK_CHARS) -> Iterator[str]:
    """`text` in pieces of about `size` characters, cut only where tokenization does not change."""
    start = 0
    while len(text) - start > size:
        cut = _SAFE_BREAK.search(text, start + size)
        if cut is None:
            break
        yield text[start:cut.start()]
        start = cut.start()
    if start < len(text) or not text:
        yield text[start:]


class Tokenizer:
    """Text <-> token ids; `to_json()` is the tokenizer.json content."""

    kind = ""

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str, *, drop_unknown: bool = False) -> np.ndarray:
        """int64 ids of `text` (unknown characters: DataError, or left out if `drop_unknown`)."""
        raise NotImplementedError

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        raise NotImplementedError

    def to_json(self) -> str:
        raise NotImplementedError

    def default_prompt(self) -> str:
        """What sampling starts from without --prompt: a newline."""
        return "\n"


class CharTokenizer(Tokenizer):
    """One id per character: the sorted characters of the training text, as `data.text`."""

    kind = "char"

    def __init__(self, vocab: Sequence[str]) -> None:
        self.vocab = list(vocab)

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        return cls(build_vocab(text))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, *, drop_unknown: bool = False) -> np.ndarray:
        return encode(text, self.vocab, drop_unknown=drop_unknown)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return decode(ids, self.vocab)

    def to_json(self) -> str:
        return json.dumps({"dlrun_tokenizer": "char", "vocab": self.vocab}, ensure_ascii=False)

    def default_prompt(self) -> str:
        return "\n" if "\n" in self.vocab else self.vocab[0]


class BPETokenizer(Tokenizer):
    """A Hugging Face byte-level BPE: any text encodes (bytes are the base alphabet)."""

    kind = "bpe"

    def __init__(self, hf: Any) -> None:
        self.hf = hf

    @property
    def vocab_size(self) -> int:
        return int(self.hf.get_vocab_size())

    def encode(self, text: str, *, drop_unknown: bool = False) -> np.ndarray:
        pieces = self.hf.encode_batch(list(chunks(text)))
        return np.array([i for p in pieces for i in p.ids], dtype=np.int64)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self.hf.decode([int(i) for i in np.asarray(ids).reshape(-1)])

    def to_json(self) -> str:
        return self.hf.to_str()


def _hf() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise DataError("the BPE tokenizer needs Hugging Face tokenizers: "
                        "pip install 'dlrun[text]'") from None
    return tokenizers


def train_bpe(text: str, vocab_size: int = DEFAULT_BPE_VOCAB, where: str = "corpus"
              ) -> BPETokenizer:
    """A byte-level BPE of exactly `vocab_size` tokens learnt from `text` (locally, no download);
    DataError when the size is below the byte alphabet or above what the text allows."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or \
            vocab_size < MIN_BPE_VOCAB:
        raise DataError(f"vocab size {vocab_size!r}: a byte-level BPE needs at least "
                        f"{MIN_BPE_VOCAB} tokens (256 bytes + {len(SPECIAL_TOKENS)} special)")
    hf = _hf()
    tok = hf.Tokenizer(hf.models.BPE())
    tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = hf.decoders.ByteLevel()
    trainer = hf.trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=hf.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(chunks(text), trainer=trainer)
    if tok.get_vocab_size() < vocab_size:
        raise DataError(f"vocab size {vocab_size}: {where} allows at most "
                        f"{tok.get_vocab_size()} tokens (no pair is left to merge); use a "
                        "smaller vocab size")
    return BPETokenizer(tok)


def fit_tokenizer(kind: str, text: str, vocab_size: int | None = None, where: str = "corpus"
                  ) -> Tokenizer:
    """A `kind` tokenizer learnt from `text` (vocab_size: BPE only, default 512)."""
    if kind not in KINDS:
        raise DataError(f"tokenizer {kind!r}: expected one of {', '.join(KINDS)}")
    if kind == "char":
        if vocab_size is not None:
            raise DataError("vocab size: the char tokenizer's vocabulary is the corpus's "
                            "characters; give a vocab size only with the bpe tokenizer")
        return CharTokenizer.fit(text)
    return train_bpe(text, DEFAULT_BPE_VOCAB if vocab_size is None else vocab_size, where)


def tokenizer_from_json(content: str, where: str = "tokenizer.json") -> Tokenizer:
    """The tokenizer a tokenizer.json text describes (DataError naming `where` if neither)."""
    try:
        data = json.loads(content)
    except ValueError as e:
        raise DataError(f"{where}: not a JSON tokenizer ({e})") from None
    if isinstance(data, dict) and data.get("dlrun_tokenizer") == "char":
        vocab = data.get("vocab")
        if not isinstance(vocab, list) or not vocab or \
                not all(isinstance(c, str) and len(c) == 1 for c in vocab):
            raise DataError(f"{where}: a char tokenizer needs a list of characters 'vocab'")
        return CharTokenizer(vocab)
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        try:
            return BPETokenizer(_hf().Tokenizer.from_str(content))
        except Exception as e:  # the library's own parse errors
            raise DataError(f"{where}: not a Hugging Face tokenizer ({e})") from None
    raise DataError(f"{where}: neither a dlrun char tokenizer nor a Hugging Face tokenizer")


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a tokenizer.json file."""
    path = Path(path)
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the tokenizer ({e})") from None
    return tokenizer_from_json(content, str(path))


def tokenizer_json(meta: dict[str, Any]) -> str | None:
    """The tokenizer.json text of a dataset (its `meta`): the token folder's file, checked
    against its fingerprint, or the character vocabulary of a text dataset; None if neither."""
    info = meta.get("tokenizer")
    if isinstance(info, dict) and info.get("path"):
        path = Path(info["path"])
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read the tokenizer ({e})") from None
        if info.get("sha256") and fingerprint(content) != info["sha256"]:
            raise DataError(f"{path}: changed since the dataset was opened")
        return content
    if meta.get("vocab"):
        return CharTokenizer(meta["vocab"]).to_json()
    return None
