"""Chapter 3's checks (``llmbook.exercises.checks.ch03_tokenization``): the table that
test_exercises_checks.py runs."""

from __future__ import annotations

import codecs
import re
from bisect import bisect_left
from itertools import pairwise

import regex
import torch

from llmbook.bpe import BPETokenizer, merge_pair
from llmbook.tokenizers import GPT2_PATTERN

CHAPTER = "03"


def encode_with_merges(text, merges, byte_ids):
    rank = {pair: k for k, pair in enumerate(merges)}
    out = []
    for piece in regex.findall(GPT2_PATTERN, text):
        ids = [byte_ids[b] for b in piece.encode("utf-8")]
        while len(ids) > 1:
            best = min(pairwise(ids), key=lambda p: rank.get(p, len(merges)))
            if best not in rank:
                break
            ids = merge_pair(ids, best, 256 + rank[best])
        out.extend(ids)
    return out


def encode_by_token_bytes(text, merges, byte_ids):
    """Another way: rebuild each token's bytes, then join the lowest-ranked pair of parts."""
    token = {i: bytes([b]) for b, i in enumerate(byte_ids)}
    for k, (a, b) in enumerate(merges):
        token[256 + k] = token[a] + token[b]
    ranks = {t: i for i, t in token.items()}
    out = []
    for piece in regex.findall(GPT2_PATTERN, text):
        parts = [bytes([b]) for b in piece.encode("utf-8")]
        while True:
            joined = [(ranks.get(a + b, 10**9), i) for i, (a, b) in enumerate(pairwise(parts))]
            rank, i = min(joined, default=(10**9, 0))
            if rank == 10**9:
                break
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        out += [ranks[p] for p in parts]
    return out


def encode_special(text, encode_ordinary, special_ids, allowed):
    for s in special_ids:
        if s not in allowed and s in text:
            raise ValueError(f"the text contains the special token {s!r}, which is not allowed")
    if not allowed:
        return encode_ordinary(text)
    pattern = "(" + "|".join(re.escape(s) for s in allowed) + ")"
    ids = []
    for k, chunk in enumerate(re.split(pattern, text)):
        if k % 2:
            ids.append(special_ids[chunk])
        elif chunk:
            ids += encode_ordinary(chunk)
    return ids


def encode_special_by_find(text, encode_ordinary, special_ids, allowed):
    banned = [s for s in special_ids if s not in allowed and s in text]
    if banned:
        raise ValueError(banned[0])
    ids, start = [], 0
    while True:
        hits = [(text.find(s, start), s) for s in allowed if text.find(s, start) >= 0]
        if not hits:
            return ids + (encode_ordinary(text[start:]) if text[start:] else [])
        at, s = min(hits)
        if at > start:
            ids += encode_ordinary(text[start:at])
        ids.append(special_ids[s])
        start = at + len(s)


def stream_decode(ids, token_bytes):
    decoder = codecs.getincrementaldecoder("utf-8")()
    return [decoder.decode(token_bytes[i]) for i in ids]


def stream_decode_by_hand(ids, token_bytes):
    out, buffer = [], b""
    for i in ids:
        buffer += token_bytes[i]
        for cut in range(len(buffer), max(len(buffer) - 4, -1), -1):
            try:
                text = buffer[:cut].decode("utf-8")
            except UnicodeDecodeError:
                continue
            out.append(text)
            buffer = buffer[cut:]
            break
    return out


def bytes_per_token(texts, encode):
    return sum(len(t.encode("utf-8")) for t in texts) / sum(len(encode(t)) for t in texts)


def smallest_merges(train_text, held_out, target):
    tok = BPETokenizer.train(train_text, vocab_size=256 + 2000)
    n_bytes = len(held_out.encode("utf-8"))

    def bytes_per_token(n):
        sub = BPETokenizer({b: i for b, i in tok.ranks.items() if i < 256 + n})
        return n_bytes / len(sub.encode_ordinary(held_out))

    lo, hi = 0, 2000
    while lo < hi:
        mid = (lo + hi) // 2
        if bytes_per_token(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def smallest_merges_bisect(train_text, held_out, target):
    tok = BPETokenizer.train(train_text, vocab_size=256 + 1500)

    def reaches(n):
        sub = BPETokenizer({b: i for b, i in tok.ranks.items() if i < 256 + n})
        return len(held_out.encode()) / len(sub.encode_ordinary(held_out)) >= target

    return float(bisect_left(range(1501), True, key=reaches))


def _smallest_with(measure_text, size):
    def answer(train_text, held_out, target):
        text = train_text if measure_text == "train" else held_out
        tok = BPETokenizer.train(train_text, vocab_size=256 + 2000)

        def reaches(n):
            sub = BPETokenizer({b: i for b, i in tok.ranks.items() if i < 256 + n})
            return size(text) / len(sub.encode_ordinary(text)) >= target

        return bisect_left(range(2001), True, key=reaches)

    return answer


CORRECT = {
    "tokenization.encode_with_merges": [encode_with_merges, encode_by_token_bytes],
    "tokenization.special_tokens": [encode_special, encode_special_by_find],
    "tokenization.stream_decode": [stream_decode, stream_decode_by_hand],
    "tokenization.bytes_per_token": [
        bytes_per_token,
        lambda texts, enc: torch.tensor(bytes_per_token(texts, enc), dtype=torch.float64),
    ],
    "tokenization.smallest_merges": [smallest_merges, smallest_merges_bisect],
}


def _encode_leftmost(text, merges, byte_ids):
    rank = {pair: k for k, pair in enumerate(merges)}
    out = []
    for piece in regex.findall(GPT2_PATTERN, text):
        ids = [byte_ids[b] for b in piece.encode("utf-8")]
        while (found := next((p for p in pairwise(ids) if p in rank), None)) is not None:
            ids = merge_pair(ids, found, 256 + rank[found])
        out += ids
    return out


def _encode_whole(text, merges, byte_ids):
    return _one_piece(text, merges, byte_ids)


def _one_piece(text, merges, byte_ids):
    rank = {pair: k for k, pair in enumerate(merges)}
    ids = [byte_ids[b] for b in text.encode("utf-8")]
    while len(ids) > 1:
        best = min(pairwise(ids), key=lambda p: rank.get(p, len(merges)))
        if best not in rank:
            break
        ids = merge_pair(ids, best, 256 + rank[best])
    return ids


def _split_words(text, merges, byte_ids):
    return [i for word in text.split() for i in _one_piece(word, merges, byte_ids)]


def _raw_bytes(text, merges, byte_ids):
    return encode_with_merges(text, merges, list(range(256)))


def _off_by_one(text, merges, byte_ids):
    return [i if i < 256 else i - 1 for i in encode_with_merges(text, merges, byte_ids)]


def _special_dropped(text, enc, special_ids, allowed):
    return [i for i in encode_special(text, enc, special_ids, allowed) if i not in special_ids.values()]


def _special_never_raises(text, enc, special_ids, allowed):
    return encode_special(text, enc, special_ids, set(special_ids))


def _special_raises_always(text, enc, special_ids, allowed):
    if any(s in text for s in special_ids):
        raise ValueError("special token in text")
    return enc(text)


def _special_first_only(text, enc, special_ids, allowed):
    for s in special_ids:
        if s not in allowed and s in text:
            raise ValueError(s)
    hits = [(text.find(s), s) for s in allowed if s in text]
    if not hits:
        return enc(text)
    at, s = min(hits)
    before, after = text[:at], text[at + len(s) :]
    return (enc(before) if before else []) + [special_ids[s]] + (enc(after) if after else [])


def _decode_each(errors):
    return lambda ids, table: [table[i].decode("utf-8", errors=errors) for i in ids]


def _decode_running(ids, table):
    text = stream_decode(ids, table)
    return ["".join(text[: k + 1]) for k in range(len(text))]


def _decode_wait(ids, table):
    out, buffer = [], b""
    for i in ids:
        buffer += table[i]
        try:
            out.append(buffer.decode("utf-8"))
            buffer = b""
        except UnicodeDecodeError:
            out.append("")
    return out


ENCODE, SPECIAL, STREAM = "encode_with_merges(", "encode_special(", "stream_decode("
SMALLEST = "smallest_merges(train_text"
MISTAKES = {
    "tokenization.encode_with_merges": [
        (_encode_leftmost, (ENCODE, "LOWEST merge index", "expected:")),
        (_encode_whole, (ENCODE, "one piece")),
        (_split_words, (ENCODE, "str.split()")),
        (_raw_bytes, ("gpt2_byte_ids", "byte_ids[b]")),
        (_off_by_one, (ENCODE, "not 255 + k")),
        (
            lambda text, merges, byte_ids: "".join(map(chr, encode_with_merges(text, merges, byte_ids))),
            "list of token ids",
        ),
    ],
    "tokenization.special_tokens": [
        (lambda text, enc, special_ids, allowed: enc(text), (SPECIAL, "became ordinary text")),
        (_special_dropped, (SPECIAL, "went missing")),
        (_special_never_raises, (SPECIAL, "should raise ValueError")),
        (_special_raises_always, (SPECIAL, "NOT in `allowed`")),
        (_special_first_only, (SPECIAL, "only the first special token")),
    ],
    "tokenization.stream_decode": [
        (_decode_each("replace"), (STREAM, "replacement character")),
        (_decode_each("ignore"), (STREAM, "vanished")),
        (_decode_running, (STREAM, "NEW text")),
        (_decode_wait, (STREAM, "getincrementaldecoder")),
        (lambda ids, table: [s for s in stream_decode(ids, table) if s], (STREAM, "one string per token")),
        (lambda ids, table: "".join(stream_decode(ids, table)), (STREAM, "list of strings")),
    ],
    "tokenization.bytes_per_token": [
        (lambda texts, enc: sum(map(len, texts)) / sum(len(enc(t)) for t in texts), "characters, not bytes"),
        (lambda texts, enc: 1 / bytes_per_token(texts, enc), "upside down"),
        (lambda texts, enc: sum(bytes_per_token([t], enc) for t in texts) / len(texts), "averaged"),
        (lambda texts, enc: sum(len(t.encode()) for t in texts) // sum(len(enc(t)) for t in texts), "floor division"),
        (lambda texts, enc: "2.5", "should return a number"),
    ],
    "tokenization.smallest_merges": [
        (lambda *a: smallest_merges(*a) + 256, (SMALLEST, "vocabulary size")),
        (_smallest_with("train", lambda t: len(t.encode("utf-8"))), (SMALLEST, "TRAINING text")),
        (lambda *a: smallest_merges(*a) - 1, (SMALLEST, "first reaches", "expected:")),
        (lambda *a: smallest_merges(*a) + 1, (SMALLEST, "first reaches")),
        (lambda *a: 5000, (SMALLEST, "search between 0 and 2,000")),
        (lambda *a: "many", "whole number"),
    ],
}
