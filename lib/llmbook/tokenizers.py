"""From text to token ids and back (chapter 1 meets them, chapter 3 builds them).

Two tokenizers live here: a character tokenizer, whose vocabulary is simply the
characters of a text, and GPT-2's byte-level BPE through ``tiktoken``. The GPT-2 ranks
come through ``llmbook.data`` (``$LLMBOOK_DATA``, the cache, or a verified download),
so the tokenizer works with no network once the file is local.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from functools import lru_cache
from typing import Any, ClassVar

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


def load_bpe_ranks(path: str | os.PathLike) -> dict[bytes, int]:
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


class ByteTokenizer:
    """Byte-level tokens: ids 0-255 are the UTF-8 bytes of the text, 256 is ``<|endoftext|>``.

    It is GPT-2's tokenizer with no merges learned: it can encode any text at all (no
    unknown tokens), at the price of about four times as many tokens as GPT-2 needs for
    English. The CPU base model of the fine-tuning chapters uses it, because a 257-token
    output layer is cheap where GPT-2's 50,257 would dominate a small model's compute.
    Its interface follows ``tiktoken.Encoding`` so chapters can use either.
    """

    name = "bytes"
    eot_token = 256
    n_vocab = 257
    special_tokens: ClassVar[dict[str, int]] = {ENDOFTEXT: 256}

    @property
    def vocab_size(self) -> int:
        return self.n_vocab

    def encode(self, text: str, allowed_special: str | AbstractSet[str] = frozenset()) -> list[int]:
        """UTF-8 bytes of ``text``; ``<|endoftext|>`` becomes id 256 only where allowed.

        As in tiktoken, the special token in text you did not allow is an error, because
        user text that smuggles in an end-of-text marker is almost always a bug.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        allowed = allowed_special == "all" or ENDOFTEXT in allowed_special
        pieces = text.split(ENDOFTEXT)
        if len(pieces) > 1 and not allowed:
            raise ValueError(
                f"the text contains the special token {ENDOFTEXT!r}; pass "
                f"allowed_special={{{ENDOFTEXT!r}}} to encode it as id {self.eot_token}"
            )
        ids: list[int] = []
        for i, piece in enumerate(pieces):
            if i:
                ids.append(self.eot_token)
            ids.extend(piece.encode("utf-8"))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text from ids; byte sequences cut mid-character decode to U+FFFD rather than failing."""
        out, run = [], bytearray()
        for i in ids:
            i = int(i)
            if not 0 <= i < self.n_vocab:
                raise ValueError(f"token id {i} is outside this tokenizer's vocabulary (0-{self.n_vocab - 1})")
            if i == self.eot_token:
                out.append(run.decode("utf-8", errors="replace") + ENDOFTEXT)
                run = bytearray()
            else:
                run.append(i)
        out.append(run.decode("utf-8", errors="replace"))
        return "".join(out)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "bytes"}


def tokenizer_from_dict(d: dict[str, Any]) -> Any:
    """Rebuild a tokenizer saved with a model: ``{"kind": "char" | "bytes" | "gpt2"}``."""
    kind = d.get("kind")
    if kind == "char":
        return CharTokenizer.from_dict(d)
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "gpt2":
        return gpt2_tokenizer()
    raise ValueError(f"unknown tokenizer kind {kind!r}; expected 'char', 'bytes' or 'gpt2'")
