"""Chapter 5's checks (``llmbook.exercises.checks.ch05_attention``): the table that
test_exercises_checks.py runs."""

from __future__ import annotations

import math

import torch

CHAPTER = "05"


def causal_mask(t: int) -> torch.Tensor:
    return torch.tril(torch.ones(t, t, dtype=torch.bool))


def scaled_dot_product(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def split_heads(x, n_head):
    b, t, c = x.shape
    return x.view(b, t, n_head, c // n_head).transpose(1, 2)


def merge_heads(x):
    b, h, t, d = x.shape
    return x.transpose(1, 2).contiguous().view(b, t, h * d)


def multi_head_attention(x, w_attn, b_attn, w_proj, b_proj, n_head, *, scale=None, causal=True):
    c = x.shape[-1]
    q, k, v = (x @ w_attn.T + b_attn).split(c, dim=-1)
    q, k, v = (split_heads(z, n_head) for z in (q, k, v))
    scores = q @ k.transpose(-2, -1) / (scale or math.sqrt(c // n_head))
    if causal:
        scores = scores.masked_fill(~causal_mask(x.shape[1]), float("-inf"))
    return merge_heads(torch.softmax(scores, dim=-1) @ v) @ w_proj.T + b_proj


CORRECT = {
    "attention.causal_mask": [causal_mask],
    "attention.scaled_dot_product": [scaled_dot_product],
    "attention.split_heads": [(split_heads, merge_heads), (split_heads, lambda x: x.transpose(1, 2).flatten(2))],
    "attention.multi_head": [multi_head_attention],
}


def _no_scale(q, k, v, mask=None):
    return scaled_dot_product(q * math.sqrt(q.shape[-1]), k, v, mask)


def _scale_by_d(q, k, v, mask=None):
    return scaled_dot_product(q / math.sqrt(q.shape[-1]), k, v, mask)


def _mask_after_softmax(q, k, v, mask=None):
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return (weights if mask is None else weights * mask) @ v


def _mask_with_zero(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, 0.0)
    return torch.softmax(scores, dim=-1) @ v


def _weights_only(q, k, v, mask=None):
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


def _k_dot_t(q, k, v, mask=None):
    """k.T is right for one matrix but reverses every dimension of a batch."""
    scores = q @ k.T / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def _in_place(q, k, v, mask=None):
    q /= math.sqrt(q.shape[-1])
    return scaled_dot_product(q * math.sqrt(q.shape[-1]), k, v, mask)


def _no_proj_bias(x, wa, ba, wp, bp, h):
    return multi_head_attention(x, wa, ba, wp, bp, h) - bp


def _swapped_qk(x, wa, ba, wp, bp, h):
    c = x.shape[-1]
    order = torch.cat([torch.arange(c, 2 * c), torch.arange(c), torch.arange(2 * c, 3 * c)])
    return multi_head_attention(x, wa[order], ba[order], wp, bp, h)


MISTAKES = {
    "attention.causal_mask": [
        (lambda t: torch.triu(torch.ones(t, t, dtype=torch.bool)), "transposed"),
        (lambda t: ~torch.tril(torch.ones(t, t, dtype=torch.bool)), "swapped"),
        (lambda t: torch.tril(torch.ones(t, t, dtype=torch.bool), diagonal=-1), "look at itself"),
        (lambda t: torch.tril(torch.ones(t, t)), "dtype"),
        (lambda t: torch.zeros(t, t).masked_fill(~causal_mask(t), float("-inf")), "additive"),
        (lambda t: [[j <= i for j in range(t)] for i in range(t)], "torch.Tensor"),
    ],
    "attention.scaled_dot_product": [
        (_no_scale, "did not scale"),
        (_scale_by_d, "divided by d"),
        (_mask_after_softmax, "masked after the softmax"),
        (_mask_with_zero, "exp(0)"),
        (lambda q, k, v, mask=None: scaled_dot_product(q, k, v, None), "ignored the mask"),
        (_weights_only, "multiply them by v"),
        (lambda q, k, v, mask=None: (scaled_dot_product(q, k, v, mask), None), "tuple"),
        (_k_dot_t, "transpose(-2, -1)"),
        (_in_place, "in place"),
    ],
    "attention.split_heads": [
        ((lambda x, h: x.reshape(x.shape[0], h, x.shape[1], -1), merge_heads), "(B, T, n_head, head_dim) first"),
        ((lambda x, h: x.view(x.shape[0], x.shape[1], -1, h).permute(0, 3, 1, 2), merge_heads),
         "neighbouring channels"),
        ((split_heads, lambda x: x.transpose(1, 2).view(x.shape[0], x.shape[2], -1)), ".contiguous()"),
        ((split_heads, lambda x: x.reshape(x.shape[0], x.shape[2], -1)), "without first swapping"),
        ((lambda x, h: x.view(x.shape[0], x.shape[1], h, -1), merge_heads), "(B, n_head, T, head_dim)"),
        (split_heads, "Pass both functions"),
    ],
    "attention.multi_head": [
        (lambda x, wa, ba, wp, bp, h: multi_head_attention(x, wa, ba, wp, bp, h, scale=math.sqrt(x.shape[-1])),
         "√n_embd"),
        (lambda x, wa, ba, wp, bp, h: multi_head_attention(x, wa, ba, wp, bp, h, causal=False), "no causal mask"),
        (_no_proj_bias, "b_proj"),
        (_swapped_qk, "queries and keys are swapped"),
        (lambda x, wa, ba, wp, bp, h: x @ wa + ba, "x @ weight.T + bias"),
    ],
}
