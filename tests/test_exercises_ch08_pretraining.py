"""Chapter 8's checks (``llmbook.exercises.checks.ch08_pretraining``): the table that
test_exercises_checks.py runs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llmbook.datasets import TokenWindows
from llmbook.generate import filtered_probs

CHAPTER = "08"


def next_token_pairs(tokens, context_length):
    t = torch.as_tensor(tokens, dtype=torch.long)
    n = (len(t) - 1) // context_length
    x = torch.stack([t[i * context_length: (i + 1) * context_length] for i in range(n)])
    y = torch.stack([t[i * context_length + 1: (i + 1) * context_length + 1] for i in range(n)])
    return x, y


def cross_entropy(logits, targets):
    keep = targets != -100
    z, t = logits[keep], targets[keep]
    m = z.max(dim=-1, keepdim=True).values
    log_probs = z - m - torch.log(torch.exp(z - m).sum(dim=-1, keepdim=True))
    return -log_probs[torch.arange(len(t)), t].mean()


def bits_per_byte(loss, n_tokens, n_bytes):
    return loss * n_tokens / n_bytes / math.log(2)


def top_k_probs(logits, temperature, k):
    z = logits / temperature
    k = min(k, z.size(-1))
    kth = torch.topk(z, k, dim=-1).values[..., -1:]
    return torch.softmax(z.masked_fill(z < kth, float("-inf")), dim=-1)


def top_p_probs(logits, p):
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs
    keep_sorted = before < p
    keep = keep_sorted.scatter(-1, order, keep_sorted)
    kept = probs * keep
    return kept / kept.sum(dim=-1, keepdim=True)


def _via_windows(tokens, T):
    ds = TokenWindows(list(tokens), T)
    return torch.stack([ds[i][0] for i in range(len(ds))]), torch.stack([ds[i][1] for i in range(len(ds))])


CORRECT = {
    "pretraining.next_token_pairs": [next_token_pairs, _via_windows],
    "pretraining.cross_entropy": [cross_entropy, lambda z, t: F.cross_entropy(z, t, ignore_index=-100)],
    "pretraining.bits_per_byte": [bits_per_byte, lambda loss, t, b: torch.tensor(loss * t / b / math.log(2))],
    "pretraining.top_k_probs": [top_k_probs, lambda z, t, k: filtered_probs(z, t, top_k=k)],
    "pretraining.top_p_probs": [top_p_probs, lambda z, p: filtered_probs(z, 1.0, top_p=p)],
}


def _pairs(offset_x=0, offset_y=1, stride=None, n_fn=lambda L, T: (L - 1) // T, dtype=torch.long):
    def fn(tokens, T):
        t = torch.as_tensor(list(tokens), dtype=dtype)
        s = stride or T
        n = n_fn(len(t), T)
        return (torch.stack([t[i * s + offset_x: i * s + offset_x + T] for i in range(n)]),
                torch.stack([t[i * s + offset_y: i * s + offset_y + T] for i in range(n)]))
    return fn


def _log_probs(z):
    return torch.log_softmax(z, dim=-1)


def _picked(logp, t):
    return logp[torch.arange(len(t)), t.clamp(min=0)]


def _cut(z, k):
    kth = torch.topk(z, min(k, z.size(-1)), dim=-1).values[..., -1:]
    return z.masked_fill(z < kth, float("-inf"))


def _top_k_in_place(z, t, k):
    z /= t
    return top_k_probs(z, 1.0, k)


def _top_p_with(rule):
    def fn(z, p):
        probs = torch.softmax(z, -1)
        sp, order = torch.sort(probs, dim=-1, descending=True)
        keep_sorted = rule(sp.cumsum(-1), sp, p)
        keep = keep_sorted.scatter(-1, order, keep_sorted)
        return torch.softmax(z.masked_fill(~keep, float("-inf")), -1)
    return fn


MISTAKES = {
    "pretraining.next_token_pairs": [
        # the feedback shows the input and the first windows
        (_pairs(offset_y=0), ("targets equal your inputs", "next_token_pairs(tokens=[10, 11, ..., 18]",
                              "expected: x [[10, 11, 12, 13], [14, 15, 16, 17]]")),
        (_pairs(offset_x=1, offset_y=0), "swapped"),
        (_pairs(n_fn=lambda L, T: (L - 1) // T - 1), "one window too few"),
        (_pairs(stride=1, n_fn=lambda L, T: L - T), "overlap"),
        (_pairs(n_fn=lambda L, T: L // T), "a window needs T + 1 tokens"),
        (_pairs(dtype=torch.float32), "torch.long"),
        (lambda tokens, T: next_token_pairs(tokens, T)[0], "two tensors"),
    ],
    "pretraining.cross_entropy": [
        (lambda z, t: -_picked(_log_probs(z), t)[t != -100].sum(), "summed"),
        (lambda z, t: -(_picked(_log_probs(z), t) * (t != -100)).sum() / len(t), "divided by all positions"),
        (lambda z, t: _picked(_log_probs(z), t)[t != -100].mean(), "sign"),
        (lambda z, t: -_picked(torch.log_softmax(z, 0), t)[t != -100].mean(), "wrong dimension"),
        (lambda z, t: F.cross_entropy(z, t, ignore_index=-100) / math.log(2), "nats"),
        (lambda z, t: -_picked(torch.log(torch.exp(z) / torch.exp(z).sum(-1, keepdim=True)), t)[t != -100].mean(),
         "overflows"),
        (lambda z, t: -_log_probs(z)[torch.arange(len(t)), t].mean(), "marks a position to ignore"),
        (lambda z, t: F.cross_entropy(z, t, ignore_index=-100, reduction="none"), "one number"),
        (lambda z, t: -_picked(_log_probs(z), t).mean(), "-100 must not count"),
    ],
    "pretraining.bits_per_byte": [
        (lambda loss, t, b: loss * t / b, "nats per byte"),
        (lambda loss, t, b: loss / math.log(2), "bits per TOKEN"),
        (lambda loss, t, b: loss * t / b * math.log(2), "DIVIDE"),
        (lambda loss, t, b: loss * b / t / math.log(2), "upside down"),
        (lambda loss, t, b: loss * t / b / math.log10(2), "log10"),
        (lambda loss, t, b: f"{loss * t / b / math.log(2):.3f}", "should return a number"),
    ],
    "pretraining.top_k_probs": [
        (lambda z, t, k: torch.softmax(_cut(z * t, k), -1), "multiplied the logits"),
        (lambda z, t, k: torch.softmax(_cut(z, k), -1), "temperature is missing"),
        (lambda z, t, k: torch.softmax(z / t, -1) * (_cut(z, k) > float("-inf")), "renormalise"),
        (lambda z, t, k: torch.softmax(_cut(z / t, k + 1), -1), "k + 1"),
        (lambda z, t, k: torch.softmax(_cut(z / t, max(k - 1, 1)), -1), "k - 1"),
        (lambda z, t, k: torch.softmax((z / t).masked_fill(_cut(z, k) > float("-inf"), float("-inf")), -1),
         "MOST likely"),
        (lambda z, t, k: torch.softmax(_cut(z / t, k).masked_fill(_cut(z, k) == float("-inf"), 0.0), -1),
         "-inf (not 0)"),
        (lambda z, t, k: torch.softmax(z, -1) / t, "before the softmax"),
        (lambda z, t, k: (z / t)[..., :k], "shape"),
        (_top_k_in_place, "in-place"),
        (lambda z, t, k: top_k_probs(z.reshape(-1), t, k).reshape(z.shape), "a batch of 3 rows"),
    ],
    "pretraining.top_p_probs": [
        (_top_p_with(lambda cum, sp, p: cum <= p), "crosses"),
        (lambda z, p: torch.softmax(z, -1) * (top_p_probs(z, p) > 0), "renormalised"),
        (lambda z, p: torch.softmax(z, -1), "nothing was cut"),
        (lambda z, p: top_p_probs(z, 1 - p), "is wrong"),
        (_top_p_with(lambda cum, sp, p: cum < p), "most likely token"),  # can keep nothing
    ],
}
