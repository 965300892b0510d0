"""Chapter 3's checks (``llmbook.exercises.checks.ch03_tokenization``): the table that
test_exercises_checks.py runs."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import torch

CHAPTER = "03"


def count_pairs(ids):
    return Counter(pairwise(ids))


def merge(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def bytes_per_token(texts, encode):
    return sum(len(t.encode("utf-8")) for t in texts) / sum(len(encode(t)) for t in texts)


def make_windows(tokens, context_length, stride):
    xs, ys = [], []
    for start in range(0, len(tokens) - context_length, stride):
        xs.append(tokens[start : start + context_length])
        ys.append(tokens[start + 1 : start + context_length + 1])
    return torch.tensor(xs), torch.tensor(ys)


def _dict_pairs(ids):
    counts = {}
    for i in range(len(ids) - 1):
        counts[(ids[i], ids[i + 1])] = counts.get((ids[i], ids[i + 1]), 0) + 1
    return counts


CORRECT = {
    "tokenization.count_pairs": [count_pairs, _dict_pairs],
    "tokenization.merge": [merge, lambda ids, pair, new_id: tuple(merge(ids, pair, new_id))],
    "tokenization.bytes_per_token": [
        bytes_per_token,
        lambda texts, enc: torch.tensor(bytes_per_token(texts, enc), dtype=torch.float64),
    ],
    "tokenization.windows": [make_windows, lambda t, c, s: tuple(x.tolist() for x in make_windows(t, c, s))],
}


def _first_only(ids, pair, new_id):
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == pair:
            return [*ids[:i], new_id, *ids[i + 2:]]
    return ids


def _no_skip(ids, pair, new_id):
    out = [new_id if (ids[i], ids[i + 1]) == pair else ids[i] for i in range(len(ids) - 1)]
    return out + ids[-1:]


def _drop_last(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def _in_place(ids, pair, new_id):
    i = 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == pair:
            ids[i : i + 2] = [new_id]
        i += 1
    return ids


def _right_to_left(ids, pair, new_id):
    return merge(ids[::-1], pair[::-1], new_id)[::-1]


def _windows_with(start_stop, shift=1, step=None):
    def fn(tokens, t, s):
        xs, ys = [], []
        for start in range(0, len(tokens) - start_stop(t), step(t, s) if step else s):
            xs.append(tokens[start : start + t])
            ys.append(tokens[start + shift : start + t + shift])
        return torch.tensor(xs), torch.tensor(ys)
    return fn


def _lists_one_too_many(tokens, t, s):
    starts = range(0, len(tokens) - t + 1, s)
    return [tokens[i : i + t] for i in starts], [tokens[i + 1 : i + t + 1] for i in starts]


def _shifted_backwards(tokens, t, s):
    x, _ = make_windows(tokens, t, s)
    return x, torch.cat([x[:, :1] * 0 - 1, x[:, :-1]], dim=1)


MISTAKES = {
    "tokenization.count_pairs": [
        (lambda ids: Counter(pairwise(ids[:-1])), "last pair is missing"),
        (lambda ids: Counter(pairwise(ids + ids[:1])) if ids else {}, "wrap around"),
        (lambda ids: Counter(zip(ids[::2], ids[1::2])), "pairs overlap"),
        (lambda ids: Counter(tuple(sorted(p)) for p in pairwise(ids)), "order matters"),
        (lambda ids: list(pairwise(ids)), "count them"),
        (lambda ids: Counter(f"{a},{b}" for a, b in pairwise(ids)), "tuple"),
        (lambda ids: Counter(zip(ids, ids[2:])), "count every adjacent pair"),
    ],
    "tokenization.merge": [
        (_first_only, "only the first occurrence"),
        (_drop_last, "last id went missing"),
        (_in_place, "changed the list it was given"),
        (_right_to_left, "left to right"),
        (_no_skip, "skip both ids"),
        (lambda ids, pair, new_id: _no_skip(ids, pair, new_id)[:-1], "skip both ids"),
        (lambda ids, pair, new_id: None, "should return a list"),
    ],
    "tokenization.bytes_per_token": [
        (lambda texts, enc: sum(map(len, texts)) / sum(len(enc(t)) for t in texts), "characters, not bytes"),
        (lambda texts, enc: 1 / bytes_per_token(texts, enc), "upside down"),
        (lambda texts, enc: sum(bytes_per_token([t], enc) for t in texts) / len(texts), "averaged"),
        (lambda texts, enc: sum(len(t.encode()) for t in texts) // sum(len(enc(t)) for t in texts),
         "floor division"),
        (lambda texts, enc: "2.5", "should return a number"),
    ],
    "tokenization.windows": [
        (_windows_with(lambda t: t - 1), "one window too many"),
        (_windows_with(lambda t: t + 1), "one window too few"),
        (_windows_with(lambda t: t, shift=0), "targets equal the inputs"),
        (_windows_with(lambda t: t, step=lambda t, s: t), "not by the context length"),
        (lambda tokens, t, s: make_windows(tokens, t, s)[0], "pair (inputs, targets)"),
        (lambda tokens, t, s: (make_windows(tokens, t, s)[0].flatten(), make_windows(tokens, t, s)[1]),
         "2-D tensor"),
        (_lists_one_too_many, "one window too many"),
        (_shifted_backwards, "wrong way"),
    ],
}
