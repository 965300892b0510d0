"""Checks for chapter 5, "Attention".

Four functions carry the chapter: the causal mask (a token may look at itself and the
past, never the future), scaled dot-product attention (softmax(QKᵀ/√d)V, with the mask
applied before the softmax), splitting a vector into heads and merging them back, and
a whole causal multi-head attention forward pass that must agree with
``llmbook.attention.CausalSelfAttention`` given the same weights. Each check compares
the learner's function with a reference on several shapes and, when they differ, names
the input, shows expected and actual values, and recognises the usual mistakes (a
transposed mask, a missing √d, masking after the softmax, heads split along the wrong
axis, q/k/v taken in the wrong order) by recomputing the answer with that mistake.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from llmbook.attention import CausalSelfAttention
from llmbook.config import GPTConfig
from llmbook.exercises.compare import (
    first_rows,
    known_mistake,
    same,
    tensor_answer,
    unchanged,
)
from llmbook.exercises.core import CheckFailed, call, describe, mismatch, register

CHAPTER = "05"

ERROR_HINTS = [
    ("view size is not compatible",
     ("after a transpose the tensor is no longer contiguous in memory, so .view() "
      "refuses. Call .contiguous() before .view(...), or use .reshape(...).")),
    ("mat1 and mat2 shapes cannot be multiplied",
     ("check the order of a matrix product. An nn.Linear weight is stored as "
      "(out_features, in_features), so a linear layer computes x @ weight.T + bias.")),
    ("must match the size of tensor",
     ("two tensors' shapes do not line up. Print the shapes of q, k, v and of your "
      "scores; remember k.transpose(-2, -1) swaps only the last two dimensions.")),
    ("expected a matrix", ("use k.transpose(-2, -1) rather than k.T on tensors with more "
                           "than two dimensions.")),
]
"""The errors that attention code typically raises, and what to do about each."""


# --------------------------------------------------------------------------- causal mask


def reference_causal_mask(t: int) -> torch.Tensor:
    """(t, t) booleans, True where query i may look at key j, that is where j <= i."""
    return torch.tril(torch.ones(t, t, dtype=torch.bool))


def _mask_hint(t: int, got: torch.Tensor) -> str:
    ref = reference_causal_mask(t)
    if torch.is_floating_point(got):
        if torch.isinf(got).any():
            return (
                "you returned an additive mask of 0 and -inf. This exercise asks for a boolean "
                "mask: True where a token may look. (The -inf comes later, in masked_fill.)"
            )
        as_bool = got != 0
    else:
        as_bool = got.bool()
    if torch.equal(as_bool, ref.T) and t > 1:
        return (
            "your mask is transposed: it lets token i look at the later tokens j > i, the "
            "future. Rows are queries, columns are keys; keep the lower triangle: torch.tril."
        )
    if torch.equal(as_bool, ~ref):
        return (
            "True and False are swapped. True should mean 'may look', so the past and the "
            "token itself are True and the future is False."
        )
    if torch.equal(as_bool, torch.tril(torch.ones(t, t, dtype=torch.bool), diagonal=-1)):
        return "a token may look at itself: the diagonal must be True (torch.tril with diagonal=0)."
    if torch.equal(as_bool, ref):
        return (
            "the pattern is right but the dtype is not: return booleans (dtype=torch.bool), "
            "e.g. torch.tril(torch.ones(t, t, dtype=torch.bool))."
        )
    return "position (i, j) should be True exactly when j <= i."


@register("attention.causal_mask", chapter=CHAPTER, title="The causal mask")
def check_causal_mask(fn: Any) -> str:
    """Sizes 1 to 64: a (T, T) boolean lower triangle, diagonal included."""
    for t in (3, 5, 1, 2, 8, 64):
        label = f"causal_mask({t})"
        got = call(fn, t, label=label, hints=ERROR_HINTS)
        expected = reference_causal_mask(t)
        got = tensor_answer(got, label, expected=expected,
                            hint="build it with torch operations, e.g. torch.ones and torch.tril.")
        if tuple(got.shape) != (t, t):
            raise mismatch(f"{label} should have shape ({t}, {t}): one row per query, one column "
                           f"per key.", expected, got)
        if got.dtype != torch.bool or not torch.equal(got, expected):
            raise mismatch(f"{label} is not the causal mask.", expected if t <= 5 else
                           f"the lower triangle of a {t}x{t} boolean matrix",
                           got, _mask_hint(t, got))
    return (
        "Correct for sizes 1 to 64: True on and below the diagonal (the token itself and "
        "the past), False above it (the future)."
    )


# --------------------------------------------------------------------------- scaled dot product


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(q kᵀ / √d) v, with scores where ``mask`` is False set to -inf first."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def _attention_variants(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> list[tuple[torch.Tensor, str]]:
    """What the usual mistakes compute, each with the hint that fixes it."""
    d = q.shape[-1]
    raw = q @ k.transpose(-2, -1)

    def finish(scores: torch.Tensor, dim: int = -1, use_mask: bool = True) -> torch.Tensor:
        if mask is not None and use_mask:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=dim) @ v

    variants = [
        (finish(raw), ("you did not scale the scores: divide q @ kᵀ by √d, the square root of "
                      "the last dimension of q, before the softmax.")),
        (finish(raw / d), "you divided by d; divide by its square root, math.sqrt(d)."),
        (finish(raw * math.sqrt(d)), "multiply? No: divide the scores by √d."),
        (finish(raw / math.sqrt(q.shape[-2])), ("scale by √d where d is the size of each "
                                               "query vector (q.shape[-1]), not the number of "
                                               "tokens.")),
    ]
    if v.shape[-1] != d:
        variants.append((finish(raw / math.sqrt(v.shape[-1])),
                         "scale by √d with d = q.shape[-1] (the query/key size), not v's size."))
    if q.shape[-2] == k.shape[-2]:
        variants.append((finish(raw / math.sqrt(d), dim=-2),
                         ("take the softmax over the keys, the last dimension (dim=-1): each "
                         "query's weights must sum to 1.")))
    if mask is not None:
        weights = torch.softmax(raw / math.sqrt(d), dim=-1)
        variants += [
            (finish(raw / math.sqrt(d), use_mask=False),
             ("you ignored the mask: set the scores where mask is False to -inf before the "
             "softmax, e.g. scores.masked_fill(~mask, float('-inf')).")),
            ((weights * mask) @ v,
             ("you masked after the softmax, so the remaining weights no longer sum to 1. "
             "Mask the scores (with -inf) before the softmax instead.")),
            (torch.softmax((raw / math.sqrt(d)).masked_fill(~mask, 0.0), dim=-1) @ v,
             ("a score of 0 still gets weight exp(0) = 1 after the softmax; fill the masked "
             "scores with float('-inf'), not 0.")),
            (torch.softmax((raw / math.sqrt(d)).masked_fill(mask, float("-inf")), dim=-1) @ v,
             ("you masked where mask is True. True means 'may look': fill where it is False "
             "(masked_fill(~mask, ...) or torch.where(mask, scores, -inf)).")),
        ]
    return variants


def _attention_case(
    fn: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, what: str
) -> None:
    mask_text = "None" if mask is None else f"a {tuple(mask.shape)} causal mask"
    label = (f"scaled_dot_product(q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, "
             f"mask={mask_text})")
    given = [t.clone() for t in (q, k, v)]
    got = call(fn, *given, mask, label=label, hints=ERROR_HINTS)
    expected = reference_attention(q, k, v, mask)
    if isinstance(got, tuple):
        raise CheckFailed(f"{label} returned a tuple; return only the output tensor "
                          f"(weights @ v), of shape {tuple(expected.shape)}.")
    got = tensor_answer(got, label, expected=expected)
    unchanged(label, given, (q, k, v), ("q", "k", "v"))
    if tuple(got.shape) != tuple(expected.shape):
        hint = "the output has one row per query and the size of a value vector: weights @ v."
        if got.shape[-1] == k.shape[-2] and got.shape[-2] == q.shape[-2]:
            hint = ("that is the shape of the attention weights; multiply them by v to get "
                    "the output.")
        raise CheckFailed(f"{label} ({what}) returned shape {tuple(got.shape)}, expected "
                          f"{tuple(expected.shape)}.\nHint: {hint}")
    if not same(got, expected):
        hint = "compute softmax(q @ k.transpose(-2, -1) / math.sqrt(d)) @ v, masking before the softmax."
        if not torch.isfinite(got).all():
            hint = ("your output has nan or inf. Fill masked scores with float('-inf') only "
                    "where mask is False; a row must keep at least its own position.")
        else:
            hint = known_mistake(got, _attention_variants(q, k, v, mask)) or hint
        raise mismatch(f"{label} ({what}) gave the wrong output (first rows shown).",
                       first_rows(expected), first_rows(got), hint)


@register("attention.scaled_dot_product", chapter=CHAPTER,
          title="Scaled dot-product attention with an optional mask")
def check_scaled_dot_product(fn: Any) -> str:
    """Square and rectangular shapes, batches of heads, with and without a causal mask."""
    gen = torch.Generator().manual_seed(5)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return scale * torch.randn(*shape, generator=gen)

    def causal(t_q: int, t_k: int) -> torch.Tensor:
        return torch.ones(t_q, t_k, dtype=torch.bool).tril(diagonal=t_k - t_q)

    cases = [
        ("4 tokens, no mask", rand(4, 8), rand(4, 8), rand(4, 8), None),
        ("5 tokens, causal", rand(5, 16), rand(5, 16), rand(5, 16), causal(5, 5)),
        ("a batch of 2 x 3 heads", rand(2, 3, 6, 8), rand(2, 3, 6, 8), rand(2, 3, 6, 8), causal(6, 6)),
        ("2 queries, 5 keys, values of size 3", rand(2, 4), rand(5, 4), rand(5, 3), causal(2, 5)),
        ("d = 256, where scaling matters", rand(6, 256), rand(6, 256), rand(6, 256), causal(6, 6)),
        ("1 token", rand(1, 1, 4), rand(1, 1, 4), rand(1, 1, 4), causal(1, 1)),
    ]
    for what, q, k, v, mask in cases:
        _attention_case(fn, q, k, v, mask, what)
    return (
        "Matches softmax(QKᵀ/√d)V on 6 cases: with and without a causal mask, batches of "
        "heads, more keys than queries, values of another size, and d = 256."
    )


# --------------------------------------------------------------------------- split / merge heads


def reference_split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    b, t, c = x.shape
    return x.view(b, t, n_head, c // n_head).transpose(1, 2)


def reference_merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


def _split_hint(x: torch.Tensor, n_head: int, got: torch.Tensor) -> str:
    b, t, c = x.shape
    d = c // n_head
    if same(got, x.reshape(b, n_head, t, d)):
        return (
            "you reshaped straight to (B, n_head, T, head_dim), which mixes up tokens and "
            "heads. Reshape to (B, T, n_head, head_dim) first, then swap T and n_head with "
            ".transpose(1, 2)."
        )
    if same(got, x.view(b, t, d, n_head).permute(0, 3, 1, 2)):
        return (
            "each head must get a block of neighbouring channels: head h takes channels "
            "h*head_dim to (h+1)*head_dim - 1. View as (B, T, n_head, head_dim), not "
            "(B, T, head_dim, n_head)."
        )
    return "view x as (B, T, n_head, head_dim), then .transpose(1, 2)."


def _check_merge(merge: Any, x: torch.Tensor, h: int, contiguous: bool) -> None:
    b, t, c = x.shape
    heads = reference_split_heads(x, h)
    what = "a contiguous copy of " if contiguous else ""
    if contiguous:
        heads = heads.contiguous()
    label = f"merge_heads({what}split_heads(x, {h})) with x of shape {(b, t, c)}"
    merged = tensor_answer(call(merge, heads, label=label, hints=ERROR_HINTS), label,
                           shape=(b, t, c), expected=x, shape_hint="(B, T, n_head * head_dim).")
    if not same(merged, x):
        hint = "transpose(1, 2) back to (B, T, n_head, head_dim) before reshaping to (B, T, C)."
        if same(merged, heads.reshape(b, t, c)) and h > 1:
            hint = ("you reshaped without first swapping n_head and T back: "
                    ".transpose(1, 2), then .reshape(B, T, C) (or .contiguous().view).")
        raise mismatch(f"{label} did not give x back (first rows shown).",
                       first_rows(x), first_rows(merged), hint)


@register("attention.split_heads", chapter=CHAPTER,
          title="Split a tensor into heads and merge it back")
def check_split_heads(answer: Any) -> str:
    """split_heads then merge_heads on several shapes; merge must also undo a real split."""
    if not (isinstance(answer, (tuple, list)) and len(answer) == 2):
        raise CheckFailed(
            f"Pass both functions, in this order: check('attention.split_heads', "
            f"(split_heads, merge_heads)). Got {describe(answer)}."
        )
    split, merge = answer
    for b, t, c, h in [(1, 3, 4, 2), (2, 5, 12, 3), (2, 4, 8, 1), (3, 7, 16, 4), (1, 1, 6, 6)]:
        x = torch.arange(b * t * c, dtype=torch.float32).reshape(b, t, c)
        label = f"split_heads(x of shape {(b, t, c)}, n_head={h})"
        expected = reference_split_heads(x, h)
        got = tensor_answer(
            call(split, x.clone(), h, label=label, hints=ERROR_HINTS), label,
            shape=expected.shape, expected=expected,
            shape_hint=f"(B, n_head, T, head_dim) with head_dim = C // n_head = {c // h}.",
        )
        if not same(got, expected):
            raise mismatch(f"{label} put the numbers in the wrong places (x holds 0, 1, 2, ... so "
                           f"you can trace them; first rows of batch 0, head 0 shown).",
                           first_rows(expected), first_rows(got), _split_hint(x, h, got))
        # Attention's output is a fresh, contiguous (B, n_head, T, head_dim) tensor; the
        # split view is not contiguous. merge_heads must handle both.
        for contiguous in (False, True):
            _check_merge(merge, x, h, contiguous)
    return ("split_heads gives (B, n_head, T, head_dim) with each head holding its own block "
            "of channels, and merge_heads undoes it exactly, on 5 shapes.")


# --------------------------------------------------------------------------- multi-head forward


def _mha(
    x: torch.Tensor, w_attn: torch.Tensor, b_attn: torch.Tensor | None, w_proj: torch.Tensor,
    b_proj: torch.Tensor | None, n_head: int, *, causal: bool = True, proj: bool = True,
    attn_bias: bool = True, proj_bias: bool = True, order: tuple[int, int, int] = (0, 1, 2),
    heads: str = "right", scale: str = "head",
) -> torch.Tensor:
    """Multi-head attention, optionally with one of the usual mistakes built in."""
    b, t, c = x.shape
    d = c // n_head
    qkv = F.linear(x, w_attn, b_attn if attn_bias else None).split(c, dim=-1)
    q, k, v = (qkv[i] for i in order)
    if heads == "right":
        q, k, v = (z.view(b, t, n_head, d).transpose(1, 2) for z in (q, k, v))
    else:  # straight reshape, without the transpose
        q, k, v = (z.reshape(b, n_head, t, d) for z in (q, k, v))
    scores = q @ k.transpose(-2, -1)
    scores = scores / {"head": math.sqrt(d), "model": math.sqrt(c), "none": 1.0}[scale]
    if causal:
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v
    y = y.transpose(1, 2).reshape(b, t, c) if heads == "right" else y.reshape(b, t, c)
    return F.linear(y, w_proj, b_proj if proj_bias else None) if proj else y


_MHA_MISTAKES: list[tuple[dict[str, Any], str]] = [
    ({"causal": False}, ("no causal mask: every token could see the future. Mask the scores "
                        "with torch.tril before the softmax.")),
    ({"proj": False}, "you left out the output projection: finish with y @ w_proj.T + b_proj."),
    ({"attn_bias": False, "proj_bias": False},
     "you left out the biases: a linear layer is x @ weight.T + bias."),
    ({"proj_bias": False}, "you left out the output projection's bias, b_proj."),
    ({"attn_bias": False}, "you left out the bias of the q/k/v projection, b_attn."),
    ({"scale": "model"}, ("you scaled by √n_embd; each head's scores are dot products of "
                         "head_dim numbers, so divide by √head_dim = √(n_embd // n_head).")),
    ({"scale": "none"}, "you did not scale the scores: divide by √head_dim."),
    ({"heads": "wrong"}, ("the heads are split wrongly: view q, k and v as (B, T, n_head, "
                         "head_dim), then .transpose(1, 2); merge back the same way in reverse.")),
    ({"order": (1, 0, 2)}, ("queries and keys are swapped: the first n_embd outputs of the "
                           "joint projection are q, the next n_embd are k, the last are v.")),
    ({"order": (0, 2, 1)}, ("keys and values are swapped: the projection's outputs are q, k, v "
                           "in that order.")),
    ({"order": (2, 1, 0)}, ("q and v are swapped: the projection's outputs are q, k, v in that "
                           "order.")),
]


@register("attention.multi_head", chapter=CHAPTER,
          title="Causal multi-head attention that matches llmbook")
def check_multi_head(fn: Any) -> str:
    """Random weights, compared with llmbook's CausalSelfAttention loaded with them."""
    gen = torch.Generator().manual_seed(11)
    shapes = [(2, 5, 12, 3), (1, 7, 16, 4), (2, 6, 8, 1), (1, 1, 8, 2), (3, 9, 24, 6)]
    for b, t, c, h in shapes:
        x = torch.randn(b, t, c, generator=gen)
        w_attn = 0.5 * torch.randn(3 * c, c, generator=gen)
        b_attn = 0.1 * torch.randn(3 * c, generator=gen)
        w_proj = 0.5 * torch.randn(c, c, generator=gen)
        b_proj = 0.1 * torch.randn(c, generator=gen)
        module = CausalSelfAttention(GPTConfig(n_embd=c, n_head=h, n_positions=max(t, 1),
                                               vocab_size=1, dropout=0.0)).eval()
        with torch.no_grad():
            module.c_attn.weight.copy_(w_attn)
            module.c_attn.bias.copy_(b_attn)
            module.c_proj.weight.copy_(w_proj)
            module.c_proj.bias.copy_(b_proj)
            expected = module(x)
        assert torch.allclose(expected, _mha(x, w_attn, b_attn, w_proj, b_proj, h), atol=1e-5)
        args = [z.clone() for z in (x, w_attn, b_attn, w_proj, b_proj)]
        label = (f"multi_head_attention(x of shape {(b, t, c)}, w_attn {(3 * c, c)}, "
                 f"b_attn {(3 * c,)}, w_proj {(c, c)}, b_proj {(c,)}, n_head={h})")
        with torch.no_grad():
            got = call(fn, *args, h, label=label, hints=ERROR_HINTS)
        got = tensor_answer(got, label, shape=(b, t, c), expected=expected,
                            shape_hint="one output vector of n_embd numbers per token.")
        if not same(got, expected):
            mistakes = [(partial(_mha, **mistake), why) for mistake, why in _MHA_MISTAKES]
            hint = known_mistake(got, mistakes, x, w_attn, b_attn, w_proj, b_proj, h) or (
                "follow the steps: project, split into q, k, v, split heads, scaled and "
                "masked attention, merge heads, output projection.")
            raise mismatch(f"{label} does not match llmbook's CausalSelfAttention with the same "
                           f"weights (first rows of the first sequence shown).",
                           first_rows(expected), first_rows(got), hint)
    return ("Your multi-head attention matches llmbook.attention.CausalSelfAttention to float "
            "precision on 5 shapes (1 to 6 heads, 1 to 9 tokens, batches of 1 to 3).")

