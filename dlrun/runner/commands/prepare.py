"""`dlrun prepare text`: a text file -> a token folder that the `token_file` dataset trains on.

The folder is nanoGPT's: train.bin and val.bin (raw uint16/uint32 token ids), plus
tokenizer.json and meta.json (see dlrun.data.token_file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlrun.data.token_file import prepare_text as write_token_folder


def prepare_text(corpus: Path | str, tokenizer: str, out: Path | str, *,
                 vocab_size: int | None = None, val_fraction: float = 0.1) -> dict[str, Any]:
    """Tokenize `corpus` ('char' or 'bpe' with `vocab_size` tokens) into the folder `out`;
    returns what was written (meta.json's content, the folder and its files)."""
    meta = write_token_folder(corpus, tokenizer, out, vocab_size=vocab_size,
                              val_fraction=val_fraction)
    folder = Path(out)
    files = ["train.bin", "val.bin", "tokenizer.json", "meta.json"]
    return {**meta, "out": str(folder), "files": [str(folder / f) for f in files]}
