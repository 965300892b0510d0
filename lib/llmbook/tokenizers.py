"""From text to token ids and back (chapter 1 meets them, chapter 3 builds them).

Two tokenizers live here: a character tokenizer, whose vocabulary is simply the
characters of a text, and GPT-2's byte-level BPE through ``tiktoken``. The GPT-2 ranks
come through ``llmbook.data`` (``$LLMBOOK_DATA``, the cache, or a verified download),
so the tokenizer works with no network once the file is local.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import tiktoken

from llmbook import data

ENDOFTEXT = "<|endoftext|>"
# GPT-2's pre-tokenisation pattern, as tiktoken defines it for "gpt2"/"r50k_base".
try:
    from tiktoken_ext.openai_public import r50k_pat_str as GPT2_PATTERN
except ImportError:  # pragma: no cover - older tiktoken
    GPT2_PATTERN = (
        r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    )


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters seen."""

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = sorted(set(chars))
        if not self.chars:
            raise ValueError("a CharTokenizer needs at least one character")
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(text)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as err:
            raise ValueError(
                f"character {err.args[0]!r} is not in this tokenizer's vocabulary of "
                f"{self.vocab_size} characters; build the tokenizer from text that contains it"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "char", "chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CharTokenizer:
        return cls(d["chars"])


def load_bpe_ranks(path) -> dict[bytes, int]:
    """Read a ``.tiktoken`` file: one ``base64(token) rank`` pair per line."""
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    return ranks


@lru_cache(maxsize=1)
def gpt2_tokenizer() -> tiktoken.Encoding:
    """GPT-2's tokenizer (50,257 tokens, ``<|endoftext|>`` = 50256), built from local files.

    ``gpt2_tokenizer().encode("Hello, world") == [15496, 11, 995]``.
    """
    ranks = load_bpe_ranks(data.data_path("tokenizers/gpt2/r50k_base.tiktoken"))
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: 50256},
        explicit_n_vocab=50257,
    )
