"""Byte-level byte-pair encoding, trained from scratch or loaded from GPT-2 (chapter 3).

BPE starts from the 256 possible bytes, so any text can be encoded and nothing is ever
"unknown", then learns *merges*: again and again it joins the most frequent adjacent
pair of tokens into a new token (Sennrich et al., 2016; byte-level as in GPT-2, Radford
et al., 2019). Text is first cut into pre-tokens by GPT-2's regex (words with their
leading space, numbers, punctuation, whitespace), and merges never cross a pre-token.

A tokenizer is a *rank table*: token bytes -> id, where a lower id was learned earlier.
Encoding a pre-token repeatedly merges the adjacent pair whose concatenation has the
lowest rank, exactly as tiktoken does, so with GPT-2's ranks (``BPETokenizer.gpt2()``)
this pure-Python encoder gives tiktoken's ids, and with trained ranks it encodes in the
order the merges were learned.
"""

from __future__ import annotations

import base64
import heapq
import json
from collections import Counter
from collections.abc import Collection, Iterable
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import regex
from tqdm.auto import tqdm

from llmbook.tokenizers import ENDOFTEXT, GPT2_PATTERN

Pair = tuple[int, int]


def pretokenize(text: str, pattern: str = GPT2_PATTERN) -> list[str]:
    """Cut text into the pieces BPE works inside: ``"Hi there!"`` -> ``["Hi", " there", "!"]``."""
    return regex.findall(pattern, text)


def _any_of(strings: Iterable[str]) -> str:
    """A regex matching any of ``strings`` literally, longest first."""
    return "(" + "|".join(regex.escape(s) for s in sorted(strings, key=len, reverse=True)) + ")"


def pair_counts(ids: Iterable[int]) -> Counter[Pair]:
    """How often each adjacent pair occurs in one token list: the statistic BPE maximises."""
    return Counter(pairwise(ids))


def merge_pair(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` (left to right) by ``new_id``."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_merges(
    words: Counter[bytes], n_merges: int, progress: bool = False
) -> tuple[list[Pair], dict[int, bytes]]:
    """Learn up to ``n_merges`` merges from pre-tokens with their counts.

    Counting pairs afresh after every merge costs a pass over the whole corpus per merge.
    Instead we keep the pair counts of the *unique* words (weighted by how often each word
    occurs) and, after a merge, update only the words that contained the merged pair,
    with a heap to find the most frequent pair. Ties go to the smallest pair of ids, so
    training is deterministic. A pair whose bytes already form a token (made earlier by
    another split, as "a"+"bc" after "ab"+"c") is skipped, so every merge adds a new
    token. Training stops early when no pair is left to merge (a very short text).
    """
    seqs = [list(w) for w in words]
    counts = list(words.values())
    vocab = {i: bytes([i]) for i in range(256)}
    known = set(vocab.values())
    stats: dict[Pair, int] = Counter()
    where: dict[Pair, set[int]] = {}
    for wi, seq in enumerate(seqs):
        for p in pairwise(seq):
            stats[p] += counts[wi]
            where.setdefault(p, set()).add(wi)
    heap = [(-c, p) for p, c in stats.items()]
    heapq.heapify(heap)
    merges: list[Pair] = []
    bar = tqdm(total=n_merges, desc="BPE merges", disable=not progress)
    while len(merges) < n_merges and heap:
        neg, pair = heapq.heappop(heap)
        if stats.get(pair, 0) != -neg or neg == 0:
            continue  # stale heap entry: the count changed since it was pushed
        token = vocab[pair[0]] + vocab[pair[1]]
        if token in known:
            stats[pair] = 0  # never pick it again
            continue
        new_id = 256 + len(merges)
        merges.append(pair)
        vocab[new_id] = token
        known.add(token)
        changed: set[Pair] = set()
        for wi in where.pop(pair, ()):
            seq, c = seqs[wi], counts[wi]
            new = merge_pair(seq, pair, new_id)
            if len(new) == len(seq):
                continue  # an old index: this word no longer holds the pair
            for p in pairwise(seq):
                stats[p] -= c
                changed.add(p)
            for p in pairwise(new):
                stats[p] += c
                changed.add(p)
                where.setdefault(p, set()).add(wi)
            seqs[wi] = new
        stats.pop(pair, None)
        for p in changed - {pair}:
            if stats.get(p, 0) > 0:
                heapq.heappush(heap, (-stats[p], p))
        bar.update(1)
    bar.close()
    return merges, vocab


class BPETokenizer:
    """A byte-level BPE tokenizer: a rank table, a pre-tokenisation regex, special tokens.

    ``ranks`` maps every token's bytes to its id; it must hold all 256 single bytes so
    that any text can be encoded. ``special_tokens`` (e.g. ``{"<|endoftext|>": 50256}``)
    are strings that are never split and only encoded when explicitly allowed.
    """

    def __init__(
        self,
        ranks: dict[bytes, int],
        special_tokens: dict[str, int] | None = None,
        pattern: str = GPT2_PATTERN,
        merges: list[Pair] | None = None,
    ) -> None:
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            raise ValueError(
                f"the rank table lacks {len(missing)} single bytes (e.g. {bytes([missing[0]])!r}); "
                f"a byte-level BPE needs all 256 so that every text can be encoded"
            )
        self.ranks = dict(ranks)
        self.special_tokens = dict(special_tokens or {})
        self.pattern = pattern
        self.merges = list(merges) if merges is not None else None
        self._bytes = {i: b for b, i in self.ranks.items()}
        if len(self._bytes) != len(self.ranks):
            raise ValueError("two tokens share an id in the rank table; every id must be unique")
        clash = [s for s, i in self.special_tokens.items() if i in self._bytes]
        if clash:
            raise ValueError(f"special token {clash[0]!r} reuses the id of an ordinary token")
        self._special_by_id = {i: s for s, i in self.special_tokens.items()}
        self._regex = regex.compile(pattern)
        self._cache: dict[str, tuple[int, ...]] = {}

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        special_tokens: Iterable[str] = (ENDOFTEXT,),
        pattern: str = GPT2_PATTERN,
        progress: bool = False,
    ) -> BPETokenizer:
        """Learn ``vocab_size - 256`` merges from ``text``.

        ``vocab_size`` counts the 256 byte tokens plus one token per merge; the special
        tokens come on top, with the next ids (as in GPT-2: 256 + 50,000 merges, then
        ``<|endoftext|>`` = 50256). Special tokens in ``text`` are cut out before training.
        With too little text, training stops when no pair is left (see ``len(merges)``).
        """
        if not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(
                f"vocab_size={vocab_size!r} is too small: a byte-level BPE starts with the 256 "
                f"single bytes, so ask for 256 + the number of merges you want (e.g. 256 + 1000)"
            )
        specials = list(dict.fromkeys(special_tokens))
        if specials:
            text = regex.sub(_any_of(specials), " ", text)
        words = Counter(p.encode("utf-8") for p in regex.findall(pattern, text))
        merges, vocab = train_merges(words, vocab_size - 256, progress=progress)
        ranks = {b: i for i, b in vocab.items()}
        special = {s: len(vocab) + k for k, s in enumerate(specials)}
        return cls(ranks, special, pattern, merges)

    @classmethod
    def gpt2(cls) -> BPETokenizer:
        """GPT-2's tokenizer (r50k ranks from the course data), in pure Python."""
        from llmbook import data
        from llmbook.tokenizers import load_bpe_ranks

        ranks = load_bpe_ranks(data.data_path("tokenizers/gpt2/r50k_base.tiktoken"))
        return cls(ranks, {ENDOFTEXT: 50256}, GPT2_PATTERN)

    @property
    def n_vocab(self) -> int:
        """Every id the tokenizer can produce, specials included: the embedding table's size."""
        return max([*self._bytes, *self._special_by_id]) + 1

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (a special token's text, UTF-8 encoded)."""
        if token_id in self._bytes:
            return self._bytes[token_id]
        if token_id in self._special_by_id:
            return self._special_by_id[token_id].encode("utf-8")
        raise ValueError(f"token id {token_id!r} is not in this vocabulary of {self.n_vocab} ids")

    def _encode_piece(self, piece: bytes) -> list[int]:
        """tiktoken's rule: merge the adjacent pair with the lowest-ranked concatenation."""
        if piece in self.ranks:
            return [self.ranks[piece]]
        parts = [piece[i : i + 1] for i in range(len(piece))]
        while len(parts) > 1:
            best, best_rank = -1, None
            for i in range(len(parts) - 1):
                rank = self.ranks.get(parts[i] + parts[i + 1])
                if rank is not None and (best_rank is None or rank < best_rank):
                    best, best_rank = i, rank
            if best_rank is None:
                break
            parts[best : best + 2] = [parts[best] + parts[best + 1]]
        return [self.ranks[p] for p in parts]

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text with no special-token handling (``<|endoftext|>`` is just 13 characters)."""
        ids: list[int] = []
        cache = self._cache
        for piece in self._regex.findall(text):
            hit = cache.get(piece)
            if hit is None:
                if len(cache) > 200_000:
                    cache.clear()
                hit = cache[piece] = tuple(self._encode_piece(piece.encode("utf-8")))
            ids.extend(hit)
        return ids

    def encode(
        self,
        text: str,
        allowed_special: Collection[str] | Literal["all"] = frozenset(),
        disallowed_special: Collection[str] | Literal["all"] = "all",
    ) -> list[int]:
        """Encode text; special tokens follow tiktoken's rules.

        A special token in ``allowed_special`` becomes its one id. One in
        ``disallowed_special`` (by default every special not allowed) raises, because
        user text that spells ``<|endoftext|>`` should not end a document by accident.
        Pass ``disallowed_special=()`` to encode such text as ordinary characters.
        """
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        banned = (set(self.special_tokens) - allowed if disallowed_special == "all"
                  else set(disallowed_special))
        unknown = sorted((allowed | banned) - set(self.special_tokens))
        if unknown:
            raise ValueError(
                f"unknown special token(s) {unknown}; this tokenizer's special tokens are "
                f"{sorted(self.special_tokens)}"
            )
        if banned:
            found = regex.search(_any_of(banned), text)
            if found:
                raise ValueError(
                    f"the text contains the special token {found.group()!r} at character "
                    f"{found.start()}. Pass allowed_special={{{found.group()!r}}} to encode it as "
                    f"its special id, or disallowed_special=() to encode it as ordinary text"
                )
        if not allowed:
            return self.encode_ordinary(text)
        ids: list[int] = []
        for k, chunk in enumerate(regex.split(_any_of(allowed), text)):
            if k % 2:
                ids.append(self.special_tokens[chunk])
            elif chunk:
                ids.extend(self.encode_ordinary(chunk))
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The exact bytes behind the ids (a token may hold part of a UTF-8 character)."""
        return b"".join(self.token_bytes(int(i)) for i in ids)

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Ids back to text; incomplete UTF-8 sequences become U+FFFD (``errors="replace"``)."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: tokens (base64, in id order), specials, pattern, merges."""
        n = len(self._bytes)
        if sorted(self._bytes) != list(range(n)):
            raise ValueError("only a rank table with ids 0 .. n-1 can be saved")
        return {
            "kind": "byte-level-bpe",
            "pattern": self.pattern,
            "tokens": [base64.b64encode(self._bytes[i]).decode("ascii") for i in range(n)],
            "special_tokens": self.special_tokens,
            "merges": [list(p) for p in self.merges] if self.merges is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BPETokenizer:
        if d.get("kind") != "byte-level-bpe":
            raise ValueError(f"not a saved BPETokenizer (kind={d.get('kind')!r})")
        ranks = {base64.b64decode(t): i for i, t in enumerate(d["tokens"])}
        merges = [tuple(p) for p in d["merges"]] if d.get("merges") is not None else None
        return cls(ranks, d["special_tokens"], d["pattern"], merges)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def __repr__(self) -> str:
        return f"BPETokenizer(n_vocab={self.n_vocab}, special_tokens={self.special_tokens})"
