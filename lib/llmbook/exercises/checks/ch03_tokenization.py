"""Checks for chapter 3, "Tokenization: from text to numbers".

Four small functions carry the chapter: counting adjacent pairs (the statistic BPE
maximises), applying one merge to a token list, measuring how well a tokenizer
compresses text (UTF-8 bytes per token, over several documents), and cutting a token
stream into (input, target) training windows with a stride. Each check compares the
learner's function with a reference (``llmbook.bpe`` and ``llmbook.datasets.TokenWindows``)
on ordinary and edge-case inputs and, when they differ, names the input, shows what was
expected and what came back, and recognises the usual mistakes by recomputing the answer
with that mistake built in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import torch

from llmbook.bpe import merge_pair, pair_counts
from llmbook.datasets import TokenWindows
from llmbook.exercises.compare import close, known_mistake, number, unchanged
from llmbook.exercises.core import CheckFailed, call, mismatch, register

CHAPTER = "03"


# --------------------------------------------------------------------------- count pairs


def _pair_mistakes(ids: list[int]) -> list[tuple[dict, str]]:
    """What the usual mistakes compute for ``count_pairs(ids)``, with the hint that fixes each."""
    wrapped = Counter(pairwise(ids + ids[:1])) if ids else Counter()
    non_overlapping = Counter(zip(ids[::2], ids[1::2], strict=False))
    short = Counter(pairwise(ids[:-1]))
    unordered = Counter(tuple(sorted(p)) for p in pairwise(ids))
    return [
        (dict(short), ("the last pair is missing: a list of n ids has n - 1 adjacent pairs, "
                       "at positions (0, 1), (1, 2), ..., (n - 2, n - 1). Check the range of "
                       "your loop.")),
        (dict(wrapped), ("you counted a pair from the last id back to the first; the list does "
                         "not wrap around, so stop at the last adjacent pair.")),
        (dict(non_overlapping), ("pairs overlap: [7, 7, 7] holds the pair (7, 7) twice, at "
                                 "positions 0-1 and 1-2. Step through the list one id at a time, "
                                 "not two (itertools.pairwise(ids) does it).")),
        (dict(unordered), ("order matters: (1, 2) and (2, 1) are different pairs, so do not sort "
                           "the two ids.")),
    ]


@register("tokenization.count_pairs", chapter=CHAPTER, title="Count adjacent pairs")
def check_count_pairs(fn: Any) -> str:
    """Short lists with repeats and overlaps, empty and one-element lists, and a long list."""
    gen = torch.Generator().manual_seed(3)
    long = torch.randint(0, 6, (400,), generator=gen).tolist()
    cases = [[1, 2, 3, 1, 2], [7, 7, 7], [1, 2, 2, 1], [5], [], [104, 105, 32, 104, 105], long]
    for ids in cases:
        label = f"count_pairs({ids if len(ids) <= 8 else f'[{len(ids)} ids]'})"
        got = call(fn, list(ids), label=label)
        expected = dict(pair_counts(ids))
        if not isinstance(got, dict):
            hint = "return a dict (or collections.Counter) from pair to count."
            if isinstance(got, list) and all(isinstance(p, tuple) for p in got):
                hint = ("you returned the pairs themselves; count them: "
                        "collections.Counter(pairs) or a dict with d[p] = d.get(p, 0) + 1.")
            raise mismatch(f"{label} should return a dict of counts.", expected, got, hint)
        bad_keys = [k for k in got if not (isinstance(k, tuple) and len(k) == 2)]
        if bad_keys:
            raise mismatch(f"{label}: every key should be a pair (a tuple of two ids), but "
                           f"{bad_keys[0]!r} is not.", expected, got,
                           "use tuples such as (ids[i], ids[i + 1]) as keys.")
        cleaned = {k: v for k, v in got.items() if v != 0}
        if cleaned != expected:
            hint = known_mistake(cleaned, _pair_mistakes(ids)) or (
                "count every adjacent pair (ids[i], ids[i + 1]) for i from 0 to len(ids) - 2.")
            if len(ids) > 8:
                diff = {p: (expected.get(p, 0), got.get(p, 0))
                        for p in set(expected) | set(got) if expected.get(p, 0) != got.get(p, 0)}
                raise CheckFailed(f"{label} counted {len(diff)} pairs wrongly, e.g. "
                                  f"(pair: (expected, got)) {dict(list(diff.items())[:4])}.\n"
                                  f"Hint: {hint}")
            raise mismatch(f"{label} gave the wrong counts.", expected, got, hint)
    return (f"Correct on {len(cases)} lists, including overlapping repeats [7, 7, 7], a single "
            f"id, an empty list and 400 random ids.")


# --------------------------------------------------------------------------- merge


def _merge_mistakes(ids: list[int], pair: tuple[int, int], new_id: int) -> list[tuple[list, str]]:
    def first_only() -> list[int]:
        for i in range(len(ids) - 1):
            if (ids[i], ids[i + 1]) == pair:
                return [*ids[:i], new_id, *ids[i + 2 :]]
        return list(ids)

    def overlapping() -> list[int]:  # new_id where the pair starts, but nothing skipped
        out = [new_id if (ids[i], ids[i + 1]) == pair else ids[i] for i in range(len(ids) - 1)]
        return out + ids[-1:]

    def dropped_last() -> list[int]:
        out, i = [], 0
        while i < len(ids) - 1:
            if (ids[i], ids[i + 1]) == pair:
                out.append(new_id)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        return out

    right_to_left = merge_pair(ids[::-1], pair[::-1], new_id)[::-1]
    return [
        (first_only(), ("only the first occurrence was merged; replace every occurrence, "
                        "scanning left to right.")),
        (dropped_last(), ("the last id went missing: when the loop stops one short of the end, "
                          "append the final id if it was not part of a merge.")),
        (overlapping(), ("after writing new_id, skip both ids of the pair (i += 2): the second "
                         "id of the pair is part of new_id and must not be copied as well.")),
        (overlapping()[:-1], ("after writing new_id, skip both ids of the pair (i += 2), and "
                              "keep the ids that are not merged, the last one included.")),
        (right_to_left, ("scan from left to right: in [7, 7, 7] the merge of (7, 7) takes the "
                         "first two sevens, giving [new_id, 7].")),
    ]


@register("tokenization.merge", chapter=CHAPTER, title="Apply one merge to a token list")
def check_merge(fn: Any) -> str:
    """Repeats, overlaps, a pair at either end, no occurrence, empty input; input untouched."""
    cases = [
        ([1, 2, 3, 1, 2], (1, 2), 9),
        ([7, 7, 7], (7, 7), 256),
        ([7, 7, 7, 7], (7, 7), 256),
        ([3, 1, 2], (1, 2), 9),
        ([1, 2, 1, 3, 2, 1], (2, 1), 300),
        ([4, 5, 6], (6, 4), 9),
        ([5], (5, 5), 9),
        ([], (1, 2), 9),
        ([104, 101, 108, 108, 111, 32, 104, 101], (104, 101), 256),
    ]
    for ids, pair, new_id in cases:
        label = f"merge({ids}, {pair}, {new_id})"
        given = list(ids)
        got = call(fn, given, pair, new_id, label=label)
        expected = merge_pair(ids, pair, new_id)
        unchanged(label, [given], [ids], ["ids"])
        if isinstance(got, tuple):
            got = list(got)
        if not isinstance(got, list):
            raise mismatch(f"{label} should return a list of ids.", expected, got,
                           "collect the ids in a new list and return it.")
        if got != expected:
            hint = known_mistake(got, _merge_mistakes(ids, pair, new_id)) or (
                "walk through ids with an index i: where (ids[i], ids[i + 1]) == pair, "
                "append new_id and move on by 2; otherwise append ids[i] and move on by 1.")
            raise mismatch(f"{label} gave the wrong list.", expected, got, hint)
    return (f"Correct on {len(cases)} cases: repeated and overlapping pairs, a pair at the "
            f"start, middle and end, no occurrence, one id, an empty list; the input is untouched.")


# --------------------------------------------------------------------------- bytes per token


def _encoders() -> list[tuple[str, Callable[[str], list[int]]]]:
    return [
        ("a byte encoder, list(text.encode('utf-8'))", lambda t: list(t.encode("utf-8"))),
        ("a character encoder, [ord(c) for c in text]", lambda t: [ord(c) for c in t]),
        ("a word encoder, one id per whitespace-separated word",
         lambda t: [len(w) for w in t.split()]),
    ]


@register("tokenization.bytes_per_token", chapter=CHAPTER,
          title="Bytes per token: how well a tokenizer compresses")
def check_bytes_per_token(fn: Any) -> str:
    """Several encoders and document sets, ASCII and not; total bytes over total tokens."""
    doc_sets = [
        ["hello world"],
        ["The cat sat on the mat.", "A much longer document than the first one, with many words."],
        ["naïve café", "日本語のテキスト", "emoji 🙂🙂"],
        ["a", "short", "document set", "with unequal lengths and a very long last one " * 5],
    ]
    for name, encode in _encoders():
        for docs in doc_sets:
            label = f"bytes_per_token({docs!r}, encode) with {name}"
            if len(label) > 200:
                label = f"bytes_per_token([{len(docs)} documents], encode) with {name}"
            n_bytes = sum(len(d.encode("utf-8")) for d in docs)
            n_tokens = sum(len(encode(d)) for d in docs)
            expected = n_bytes / n_tokens
            got = number(call(fn, list(docs), encode, label=label), label, expected)
            if close(got, expected, rel=1e-9):
                continue
            n_chars = sum(len(d) for d in docs)
            hint = "divide the total number of UTF-8 bytes by the total number of tokens."
            mean_ratio = sum(len(d.encode("utf-8")) / len(encode(d)) for d in docs) / len(docs)
            if isinstance(got, int) and got in (n_bytes // n_tokens, n_chars // n_tokens):
                hint = "use true division, /, not floor division, //."
            elif close(got, n_chars / n_tokens):
                hint = ("you counted characters, not bytes: non-ASCII characters take 2 to 4 "
                        "bytes in UTF-8. Use len(text.encode('utf-8')).")
            elif got and close(got, n_tokens / n_bytes):
                hint = "the ratio is upside down: bytes divided by tokens, not tokens by bytes."
            elif close(got, mean_ratio):
                hint = ("you averaged each document's ratio, which gives a short document as "
                        "much weight as a long one. Add up all the bytes and all the tokens "
                        "first, then divide once.")
            raise mismatch(f"{label} is wrong.", round(expected, 6), got, hint)
    return ("Correct for byte, character and word encoders on English, accented, Japanese and "
            "emoji text, with documents of very different lengths.")


# --------------------------------------------------------------------------- windows


def reference_windows(tokens: list[int], context_length: int, stride: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    ds = TokenWindows(tokens, context_length, stride)
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return torch.stack(xs), torch.stack(ys)


def _as_matrix(value: Any) -> torch.Tensor | None:
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return t if t.dim() == 2 else None


_RAGGED = ("a window came out shorter than context_length: one window too many. The last "
           "window's target needs the token after it, so a window may start at most at "
           "len(tokens) - context_length - 1.")


@register("tokenization.windows", chapter=CHAPTER,
          title="Training windows: inputs and targets with a stride")
def check_windows(fn: Any) -> str:
    """Compared with ``llmbook.datasets.TokenWindows`` for strides below, at and above the context."""
    cases = [(list(range(10)), 4, 4), (list(range(10)), 4, 1), (list(range(11)), 3, 2),
             (list(range(100, 109)), 4, 4), (list(range(5)), 4, 1), (list(range(20)), 2, 5)]
    for tokens, t, s in cases:
        label = f"make_windows({tokens}, context_length={t}, stride={s})"
        got = call(fn, list(tokens), t, s, label=label,
                   hints=[("expected sequence of length", _RAGGED)])
        x_ref, y_ref = reference_windows(tokens, t, s)
        if not (isinstance(got, (tuple, list)) and len(got) == 2):
            raise mismatch(f"{label} should return a pair (inputs, targets).", (x_ref, y_ref), got,
                           "end with `return inputs, targets`.")
        x, y = (_as_matrix(v) for v in got)
        ragged = [v for v in got if isinstance(v, (list, tuple)) and v
                  and len({len(row) for row in v if hasattr(row, "__len__")}) > 1]
        if ragged:
            raise CheckFailed(f"{label}: the windows have different lengths.\nHint: {_RAGGED}")
        if x is None or y is None:
            raise mismatch(f"{label}: inputs and targets should each be a 2-D tensor (or a list "
                           f"of equal-length lists), one row per window.", x_ref, got[0])
        n = len(x_ref)
        if x.shape != x_ref.shape or y.shape != y_ref.shape:
            hint = f"each row is one window of {t} tokens, so expect shape {tuple(x_ref.shape)}."
            if x.shape[0] == n + 1:
                hint = (f"one window too many: the last window's target needs the token after "
                        f"it, so a window may start at most at len(tokens) - {t} - 1.")
            elif x.shape[0] == n - 1:
                hint = (f"one window too few: a window may start at any multiple of the stride "
                        f"up to and including len(tokens) - {t} - 1.")
            elif x.shape[0] == (len(tokens) - t - 1) // t + 1 and s != t:
                hint = "the windows move by the stride, not by the context length."
            raise mismatch(f"{label} returned {x.shape[0]} windows of shape {tuple(x.shape)}; "
                           f"expected {n} windows.", tuple(x_ref.shape), tuple(x.shape), hint)
        if not torch.equal(x.long(), x_ref):
            raise mismatch(f"{label}: the inputs are wrong.", x_ref.tolist(), x.tolist(),
                           f"window i starts at i * stride and holds {t} tokens: "
                           f"tokens[i * stride : i * stride + {t}].")
        if not torch.equal(y.long(), y_ref):
            hint = ("each target is its input shifted one token to the left: "
                    "tokens[start + 1 : start + 1 + T].")
            if torch.equal(y.long(), x_ref):
                hint = ("the targets equal the inputs. The model predicts the next token, so the "
                        "targets are the inputs shifted by one: tokens[start + 1 : start + T + 1].")
            elif n and torch.equal(y[:, 1:].long(), x_ref[:, :-1]):
                hint = ("the targets are shifted the wrong way: the target of position j is "
                        "token j + 1.")
            raise mismatch(f"{label}: the targets are wrong.", y_ref.tolist(), y.tolist(), hint)
    return (f"Matches llmbook.datasets.TokenWindows on {len(cases)} cases: strides smaller than, "
            f"equal to and larger than the context, and a stream with room for one window only.")
