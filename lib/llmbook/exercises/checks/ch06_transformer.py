"""Checks for chapter 6, "The transformer: encoder, decoder, and the half that GPT kept".

Five exercises build what the chapter explained but did not write. The linear map that
moves a sinusoidal positional encoding k places along (the reason, in Vaswani et al.
(2017), that relative positions are easy to attend to) is a block-diagonal matrix of
rotations. The decoder's self-attention mask joins the causal and the padding rules.
Multi-head cross-attention takes its queries from the decoder and its keys and values
from the encoder. A whole encoder block, post-norm or pre-norm, is written as one function
of its weights. The experiment hands the check the settings of a one-block encoder
(which positional encoding, which mask, width, heads, learning rate) that must learn to
reverse a sequence; the check trains it on two seeds and measures held-out accuracy.

Each check compares the learner's answer with a reference on ordinary and edge-case
inputs and, when they differ, names the input, shows what was expected and what came
back, and recognises the usual mistakes (a rotation that turns backwards, one speed for
every pair, a mask upside down, keys taken from the wrong sequence, an encoder blind to
order or to the future) to say which one it is.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from llmbook.exercises.compare import (
    first_row,
    first_rows,
    is_int,
    known_mistake,
    one_thread,
    same,
    tensor_answer,
    unchanged,
)
from llmbook.exercises.core import CheckFailed, call, describe, mismatch, register

CHAPTER = "06"
ATOL = 1e-4  # these references are computed in float64, the answers usually in float32


def _as_tensor(value: Any, label: str) -> torch.Tensor:
    """The learner's result as a tensor (NumPy arrays are accepted), or a clear failure."""
    if type(value).__module__ == "numpy":
        value = torch.as_tensor(value)
    return tensor_answer(value, label, hint="build the result with torch operations and `return` it.")


# --------------------------------------------------------------------------- position shift


def reference_sinusoidal(n_positions: int, d_model: int) -> torch.Tensor:
    """The encoding of Vaswani et al. (2017) for an even ``d_model``, in float64: column 2i
    holds sin(pos / 10000 ** (2i / d)), column 2i + 1 the cos of the same angle."""
    pos = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)
    angle = pos * 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    pe = torch.zeros(n_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe


def reference_shift(k: int, d_model: int, *, exponent: str = "2i", backwards: bool = False) -> torch.Tensor:
    """(d_model, d_model) M with PE[pos + k] = PE[pos] @ M: a 2x2 rotation by k * omega_i
    on every (sin, cos) pair. The keywords recompute the usual mistakes."""
    pair = torch.arange(d_model // 2, dtype=torch.float64)
    if exponent == "2i":
        omega = 10000.0 ** (-2 * pair / d_model)
    elif exponent == "i":
        omega = 10000.0 ** (-pair / d_model)
    else:  # "one": every pair turns at the same speed, one radian per position
        omega = torch.ones_like(pair)
    theta = (-k if backwards else k) * omega
    c, s = torch.cos(theta), torch.sin(theta)
    m = torch.zeros(d_model, d_model, dtype=torch.float64)
    m[0::2, 0::2] = torch.diag(c)
    m[1::2, 1::2] = torch.diag(c)
    m[1::2, 0::2] = torch.diag(s)  # cos(x) feeds sin(x + k w) with +sin(k w)
    m[0::2, 1::2] = torch.diag(-s)  # sin(x) feeds cos(x + k w) with -sin(k w)
    return m


def _shift_hint(got: torch.Tensor, k: int, d: int) -> str:
    variants = [
        (
            reference_shift(k, d, backwards=True),
            (
                "your matrix moves the encoding k places *back*: the signs of the sines are "
                "swapped (or the blocks transposed). With row vectors, pe @ M, the block of a pair "
                "is [[cos kw, -sin kw], [sin kw, cos kw]]: sin(x + kw) = sin x cos kw + cos x sin "
                "kw."
            ),
        ),
        (
            reference_shift(k, d, exponent="i"),
            (
                "pair i (columns 2i and 2i + 1) turns at w_i = 1 / 10000 ** (2i / d_model); you "
                "used i / d_model in the exponent, which makes the waves too slow."
            ),
        ),
        (
            reference_shift(k, d, exponent="one"),
            (
                "every pair turns at its own speed: the angle of pair i is k * w_i with w_i = "
                "1 / 10000 ** (2i / d_model), not k radians for all of them."
            ),
        ),
        (
            torch.eye(d, dtype=torch.float64),
            "that is the identity, which moves the encoding 0 places; build the rotations.",
        ),
    ]
    hint = known_mistake(got, [(v.float(), why) for v, why in variants], atol=ATOL)
    return hint or (
        "M is zero outside the 2x2 blocks on the diagonal; block i holds "
        "[[cos kw_i, -sin kw_i], [sin kw_i, cos kw_i]], w_i = 10000 ** (-2i / d)."
    )


@register(
    "transformer.position_shift",
    chapter=CHAPTER,
    kind="build",
    title="The matrix that moves a sinusoidal encoding k positions along",
)
def check_position_shift(fn: Any) -> str:
    """Shifts of 0 to 100 places, backwards too, widths 2 to 64; the matrix is unique."""
    for k, d in [(1, 4), (3, 8), (0, 6), (-2, 16), (10, 64), (100, 32), (7, 2)]:
        label = f"position_shift({k}, {d})"
        got = _as_tensor(call(fn, k, d, label=label), label)
        expected = reference_shift(k, d).float()
        if got.shape != expected.shape:
            raise mismatch(
                f"{label} should have shape ({d}, {d}): it maps one encoding vector (a row of {d} numbers) to another.",
                expected,
                got,
            )
        if not got.is_floating_point():
            raise mismatch(
                f"{label} should hold floats.",
                expected,
                got,
                "cos and sin give floats; build the matrix with torch.zeros.",
            )
        if not same(got, expected, atol=ATOL):
            pe = reference_sinusoidal(max(k, 0) + 12, d)
            p = 5 if k >= 0 else 11
            moved = (pe[p] @ got.double()).float()
            r, c = divmod(int((got.double() - expected.double()).abs().argmax()), d)
            raise mismatch(
                f"{label} is wrong, most at M[{r}, {c}] (expected {float(expected[r, c]):.4f}"
                f", got {float(got[r, c]):.4f}): PE[{p}] @ M should be PE[{p + k}] (first "
                f"numbers shown), and M's first rows are shown below.",
                first_row(pe[p + k], 6),
                first_row(moved, 6),
                f"{_shift_hint(got, k, d)}\n  expected M[:2, :4]: "
                f"{first_rows(expected, 2, 4)}\n  got      M[:2, :4]: {first_rows(got, 2, 4)}",
            )
    return (
        "PE[pos] @ position_shift(k, d) = PE[pos + k] for shifts of -2 to 100 places: "
        "each (sin, cos) pair turns by k times its own frequency, whatever pos is."
    )


# --------------------------------------------------------------------------- decoder mask


def reference_decoder_mask(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    T = ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    real = (ids != pad_id)[:, None, None, :]
    return causal & real


def _mask_hint(got: torch.Tensor, ids: torch.Tensor, pad_id: int) -> str:
    T = ids.shape[1]
    ref = reference_decoder_mask(ids, pad_id)
    causal = torch.ones(T, T, dtype=torch.bool).tril().expand_as(ref)
    real_keys = (ids != pad_id)[:, None, None, :].expand_as(ref)
    real_queries = (ids != pad_id)[:, None, :, None].expand_as(ref)
    variants = [
        (
            ~ref,
            (
                "your mask is upside down: True must mean 'may look' (the convention of "
                "F.scaled_dot_product_attention's boolean masks and of this course)."
            ),
        ),
        (
            causal,
            (
                "you built the causal part only; padding keys must also be hidden: combine it "
                "with (ids != pad_id) using &."
            ),
        ),
        (
            real_keys,
            (
                "you built the padding part only; the decoder must also never look ahead: "
                "combine it with the causal (lower-triangular) mask using &."
            ),
        ),
        (
            causal.transpose(-1, -2) & real_keys,
            ("your triangle points the wrong way: query i may look at keys j <= i (torch.tril), not j >= i."),
        ),
        (
            torch.ones(T, T, dtype=torch.bool).tril(-1).expand_as(ref) & real_keys,
            "a position may look at itself: use torch.tril(...) with the diagonal, not tril(..., -1).",
        ),
        (
            causal & real_queries,
            (
                "you hid padding *queries* (rows) instead of padding *keys* (columns): the padding mask "
                "has shape (B, 1, 1, T) so that it broadcasts over the query dimension."
            ),
        ),
        (causal | real_keys, "combine the two masks with & (both must allow a look), not |."),
    ]
    return known_mistake(got.bool(), variants) or (
        "mask[b, 0, i, j] is True exactly when j <= i and ids[b, j] != pad_id."
    )


@register(
    "transformer.decoder_mask",
    chapter=CHAPTER,
    kind="build",
    title="The decoder's self-attention mask: causal and padding together",
)
def check_decoder_mask(fn: Any) -> str:
    """No padding, right padding, left padding, a different pad id, a single token."""
    cases = [
        (torch.tensor([[5, 6, 7, 8]]), 0),
        (torch.tensor([[5, 6, 7, 0, 0], [4, 4, 4, 4, 4]]), 0),
        (torch.tensor([[9, 9, 3, 4], [1, 2, 3, 4], [9, 1, 9, 2]]), 9),
        (torch.tensor([[3]]), 0),
        (torch.tensor([[1, 2, 3, 4, 5, 6, 0]]), 0),
    ]
    for ids, pad_id in cases:
        label = f"decoder_mask(torch.tensor({ids.tolist()}), pad_id={pad_id})"
        before = ids.clone()
        got = _as_tensor(call(fn, ids, pad_id, label=label), label)
        unchanged(label, [ids], [before], ["ids"])
        expected = reference_decoder_mask(ids, pad_id)
        B, T = ids.shape
        if got.shape != expected.shape:
            if got.shape == (B, T, T):
                hint = "add the head dimension: mask[:, None] gives (B, 1, T, T), which broadcasts over heads."
            elif got.shape == (T, T):
                hint = "the mask depends on each sequence's padding, so it needs a batch dimension: (B, 1, T, T)."
            else:
                hint = "the shape is (batch, 1, queries, keys) = (B, 1, T, T)."
            raise mismatch(f"{label} should have shape {tuple(expected.shape)}.", expected, got, hint)
        if got.dtype != torch.bool:
            if torch.equal(got.bool(), expected) and not got.is_floating_point():
                raise mismatch(
                    f"{label} should be a boolean tensor.",
                    expected,
                    got,
                    "the values are right; return a bool tensor (comparisons and & give one).",
                )
            raise mismatch(
                f"{label} should be a boolean tensor (True = may look).",
                expected,
                got,
                "an additive float mask with -inf is another convention; here, return booleans.",
            )
        if not torch.equal(got, expected):
            raise mismatch(f"{label} is wrong.", expected, got, _mask_hint(got, ids, pad_id))
    return (
        "Right for every batch: each position sees itself and earlier positions, never a later "
        "one, and never a padding key; the (B, 1, T, T) shape broadcasts over the heads."
    )


# --------------------------------------------------------------------------- cross-attention


def reference_cross_attention(
    x: torch.Tensor,
    memory: torch.Tensor,
    w_q: torch.Tensor,
    w_k: torch.Tensor,
    w_v: torch.Tensor,
    w_o: torch.Tensor,
    n_head: int,
    memory_mask: torch.Tensor | None,
    *,
    scale: str = "head",
    softmax_dim: int = -1,
    project_out: bool = True,
) -> torch.Tensor:
    """Multi-head attention with queries from x and keys/values from memory, in float64."""
    x, memory = x.double(), memory.double()
    w_q, w_k, w_v, w_o = (w.double() for w in (w_q, w_k, w_v, w_o))
    B, Tq, d = x.shape
    Tk = memory.shape[1]
    hd = d // n_head

    def heads(t: torch.Tensor, T: int) -> torch.Tensor:
        return t.view(B, T, n_head, hd).transpose(1, 2)

    q, k, v = heads(x @ w_q, Tq), heads(memory @ w_k, Tk), heads(memory @ w_v, Tk)
    scores = q @ k.transpose(-2, -1)
    if scale == "head":
        scores = scores / math.sqrt(hd)
    elif scale == "model":
        scores = scores / math.sqrt(d)
    if memory_mask is not None:
        scores = scores.masked_fill(~memory_mask, float("-inf"))
    weights = torch.softmax(scores, dim=softmax_dim)
    out = (weights @ v).transpose(1, 2).reshape(B, Tq, d)
    return out @ w_o if project_out else out


def _xattn_hint(got: torch.Tensor, args: tuple) -> str:
    x, memory, w_q, w_k, w_v, w_o, n_head, mask = args
    ref = reference_cross_attention
    variants: list[tuple[Callable[[], torch.Tensor], str]] = [
        (
            lambda: ref(x, memory, w_q, w_k, w_v, w_o, n_head, None),
            (
                "the memory_mask was ignored: scores of keys where the mask is False must become -inf "
                "before the softmax (scores.masked_fill(~memory_mask, float('-inf')))."
            ),
        ),
        (
            lambda: ref(x, memory, w_q, w_k, w_v, w_o, n_head, None if mask is None else ~mask),
            "the mask is used upside down: True means 'may look', so fill -inf where the mask is False.",
        ),
        (
            lambda: ref(x, memory, w_q, w_k, w_v, w_o, n_head, mask, scale="model"),
            "divide the scores by sqrt(head_dim) = sqrt(d_model / n_head), not by sqrt(d_model).",
        ),
        (
            lambda: ref(x, memory, w_q, w_k, w_v, w_o, n_head, mask, scale="none"),
            "you forgot to scale the scores: divide q @ k^T by sqrt(head_dim).",
        ),
        (
            lambda: ref(x, memory, w_q, w_k, w_v, w_o, n_head, mask, project_out=False),
            "you forgot the output projection: after merging the heads, multiply by w_o.",
        ),
        (
            lambda: ref(x, memory, w_q, w_k, w_v, w_o, 1, mask),
            (
                "you computed a single head: split q, k and v into n_head heads of d_model // n_head "
                "features, attend in each head separately, then merge them back."
            ),
        ),
    ]
    if x.shape == memory.shape:
        variants.insert(
            0,
            (
                lambda: ref(x, x, w_q, w_k, w_v, w_o, n_head, mask),
                (
                    "you took the keys and values from x; in cross-attention only the queries come from "
                    "x (the decoder), the keys and values come from memory (the encoder's output)."
                ),
            ),
        )
        variants.insert(
            1,
            (
                lambda: ref(memory, x, w_q, w_k, w_v, w_o, n_head, mask),
                "x and memory are swapped: queries come from x, keys and values from memory.",
            ),
        )
    hint = known_mistake(got, variants, atol=ATOL)
    if hint:
        return hint
    return (
        "q = x @ w_q, k = memory @ w_k, v = memory @ w_v; split into heads; softmax(q k^T / "
        "sqrt(head_dim)) with -inf where the mask is False; weights @ v; merge the heads; @ w_o."
    )


def _xattn_case(
    gen: torch.Generator, B: int, Tq: int, Tk: int, d: int, n_head: int, lengths: list[int] | None
) -> tuple:
    x = torch.randn(B, Tq, d, generator=gen)
    memory = torch.randn(B, Tk, d, generator=gen)
    w_q, w_k, w_v, w_o = (torch.randn(d, d, generator=gen) / math.sqrt(d) for _ in range(4))
    mask = None
    if lengths is not None:
        mask = (torch.arange(Tk)[None, :] < torch.tensor(lengths)[:, None])[:, None, None, :]
    return x, memory, w_q, w_k, w_v, w_o, n_head, mask


@register(
    "transformer.cross_attention",
    chapter=CHAPTER,
    kind="build",
    title="Multi-head cross-attention with a padding mask",
)
def check_cross_attention(fn: Any) -> str:
    """Equal and unequal lengths, padding masks, no mask, one head, a single query."""
    gen = torch.Generator().manual_seed(6)
    cases = [
        _xattn_case(gen, 2, 5, 5, 16, 4, [5, 3]),
        _xattn_case(gen, 3, 4, 7, 24, 3, [7, 2, 5]),
        _xattn_case(gen, 1, 1, 6, 8, 2, None),
        _xattn_case(gen, 2, 3, 4, 12, 1, [4, 1]),
        _xattn_case(gen, 2, 6, 9, 32, 8, [9, 4]),
    ]
    for args in cases:
        x, memory, *_rest, n_head, mask = args
        mask_text = "None" if mask is None else f"a padding mask of shape {tuple(mask.shape)}"
        label = (
            f"cross_attention(x {tuple(x.shape)}, memory {tuple(memory.shape)}, w_q, w_k, w_v, w_o, "
            f"n_head={n_head}, memory_mask={mask_text})"
        )
        copies = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        got = _as_tensor(call(fn, *args, label=label), label)
        unchanged(label, args[:6], copies[:6], ("x", "memory", "w_q", "w_k", "w_v", "w_o"))
        expected = reference_cross_attention(*args).float()
        if got.shape != expected.shape:
            if got.shape == memory.shape and memory.shape != x.shape:
                hint = (
                    "the output has one row per *query*, i.e. per position of x, not per "
                    "position of memory; did you take the queries from memory?"
                )
            else:
                hint = "the result has the shape of x: (batch, queries, d_model)."
            raise mismatch(f"{label} should have shape {tuple(expected.shape)}.", expected, got, hint)
        if not torch.isfinite(got).all():
            hint = (
                "masked scores become -inf and softmax turns them into 0; a nan usually means "
                "a whole row of scores was masked."
            )
            if mask is not None:
                w_q, w_k, w_v, w_o = args[2:6]
                inverted = reference_cross_attention(x, memory, w_q, w_k, w_v, w_o, n_head, ~mask)
                if torch.equal(torch.isnan(inverted), torch.isnan(got)):
                    hint = (
                        "the mask is used upside down: True means 'may look', so fill -inf where "
                        "the mask is False (~memory_mask). With the mask inverted, a sequence "
                        "without padding has every key hidden, and softmax of all -inf is nan."
                    )
            raise mismatch(f"{label} returned nan or inf.", expected, got, hint)
        if not same(got, expected, atol=ATOL):
            raise CheckFailed(
                f"{label} is wrong.\n  expected (first row): {first_row(expected, 6)}\n"
                f"  got      (first row): {first_row(got, 6)}\n"
                f"Hint: {_xattn_hint(got, args)}"
            )
    return (
        "Right for every case: queries from x, keys and values from memory, n_head heads scaled "
        "by sqrt(head_dim), padding keys hidden, heads merged and projected by w_o."
    )


# --------------------------------------------------------------------------- encoder block

ENC_KEYS = (
    "w_q",
    "b_q",
    "w_k",
    "b_k",
    "w_v",
    "b_v",
    "w_o",
    "b_o",
    "ln1_w",
    "ln1_b",
    "w_up",
    "b_up",
    "w_down",
    "b_down",
    "ln2_w",
    "ln2_b",
)


def reference_encoder_block(
    x: torch.Tensor,
    params: dict[str, torch.Tensor],
    n_head: int,
    mask: torch.Tensor | None,
    norm_first: bool,
    *,
    order: str | None = None,
    attn_residual: bool = True,
    ff_residual: bool = True,
    swap_norms: bool = False,
    activation: str = "tanh",
    scale: str = "head",
    use_mask: bool = True,
) -> torch.Tensor:
    """The chapter's EncoderBlock as one function of plain tensors, in float64.

    Post-norm (2017): x = LN1(x + attn(x)); out = LN2(x + ff(x)). Pre-norm (GPT-2):
    x = x + attn(LN1(x)); out = x + ff(LN2(x)). The keywords recompute the usual mistakes."""
    p = {k: v.double() for k, v in params.items()}
    x = x.double()
    B, T, d = x.shape
    hd = d // n_head
    ln_a, ln_b = ("ln2", "ln1") if swap_norms else ("ln1", "ln2")

    def ln(t: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(t, (d,), p[f"{name}_w"], p[f"{name}_b"], 1e-5)

    def attn(t: torch.Tensor) -> torch.Tensor:
        q, k, v = ((t @ p[f"w_{n}"].T + p[f"b_{n}"]).view(B, T, n_head, hd).transpose(1, 2) for n in "qkv")
        scores = q @ k.transpose(-2, -1) / math.sqrt(hd if scale == "head" else d)
        if mask is not None and use_mask:
            scores = scores.masked_fill(~mask, float("-inf"))
        y = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, d)
        return y @ p["w_o"].T + p["b_o"]

    def ff(t: torch.Tensor) -> torch.Tensor:
        h = t @ p["w_up"].T + p["b_up"]
        h = F.relu(h) if activation == "relu" else F.gelu(h, approximate=activation)
        return h @ p["w_down"].T + p["b_down"]

    pre = norm_first if order is None else order == "pre"
    if pre:
        x = (x if attn_residual else 0) + attn(ln(x, ln_a))
        return (x if ff_residual else 0) + ff(ln(x, ln_b))
    x = ln((x if attn_residual else 0) + attn(x), ln_a)
    return ln((x if ff_residual else 0) + ff(x), ln_b)


def _encoder_case(
    gen: torch.Generator, B: int, T: int, d: int, n_head: int, lengths: list[int] | None, norm_first: bool
) -> tuple[Any, ...]:
    x = torch.randn(B, T, d, generator=gen)

    def w(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) / math.sqrt(shape[-1])

    def b(n: int, around: float = 0.0) -> torch.Tensor:
        return around + 0.1 * torch.randn(n, generator=gen)

    params = {
        "w_q": w(d, d),
        "b_q": b(d),
        "w_k": w(d, d),
        "b_k": b(d),
        "w_v": w(d, d),
        "b_v": b(d),
        "w_o": w(d, d),
        "b_o": b(d),
        "ln1_w": b(d, 1.0),
        "ln1_b": b(d),
        "w_up": w(4 * d, d),
        "b_up": b(4 * d),
        "w_down": w(d, 4 * d),
        "b_down": b(d),
        "ln2_w": b(d, 1.0),
        "ln2_b": b(d),
    }
    mask = None
    if lengths is not None:
        mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None])[:, None, None, :]
    return x, params, n_head, mask, norm_first


def _encoder_hint(got: torch.Tensor, args: tuple[Any, ...]) -> str:
    norm_first = args[4]
    ref = reference_encoder_block
    other = "pre" if not norm_first else "post"
    wanted = "pre-norm" if norm_first else "post-norm"
    variants: list[tuple[Callable[[], torch.Tensor], str]] = [
        (
            lambda: ref(*args, order=other),
            (
                f"norm_first={norm_first} asks for {wanted}: "
                + (
                    "normalise *before* each sub-layer and add its output to the unnormalised x: "
                    "x = x + attn(ln1(x)); out = x + ff(ln2(x))."
                    if norm_first
                    else "add each sub-layer's output to x, *then* normalise: x = ln1(x + attn(x)); "
                    "out = ln2(x + ff(x))."
                )
            ),
        ),
        (
            lambda: ref(*args, attn_residual=False),
            "the residual connection around attention is missing: add attention's output to x.",
        ),
        (
            lambda: ref(*args, ff_residual=False),
            "the residual connection around the feed-forward network is missing: add its output to x.",
        ),
        (
            lambda: ref(*args, swap_norms=True),
            "ln1 belongs to the attention sub-layer and ln2 to the feed-forward one; yours are swapped.",
        ),
        (
            lambda: ref(*args, activation="none"),
            "the feed-forward network uses GELU with approximate='tanh', as the chapter's "
            "FeedForward and GPT-2 do; you used the exact GELU.",
        ),
        (lambda: ref(*args, activation="relu"), "the feed-forward network uses GELU (approximate='tanh'), not ReLU."),
        (
            lambda: ref(*args, scale="model"),
            "divide the attention scores by sqrt(head_dim) = sqrt(d_model / n_head), not by sqrt(d_model).",
        ),
        (
            lambda: ref(*args, use_mask=False),
            "the padding mask was ignored: set the scores of keys where mask is False to -inf before the softmax.",
        ),
    ]
    hint = known_mistake(got, [(lambda f=f: f().float(), why) for f, why in variants], atol=ATOL)
    return hint or (
        "follow the chapter's EncoderBlock: attention (q, k, v, heads, scaled and masked "
        "softmax, merge, w_o), the feed-forward network (w_up, GELU tanh, w_down), residual "
        "connections and layer norms in the order norm_first asks for."
    )


@register(
    "transformer.encoder_block",
    chapter=CHAPTER,
    kind="build",
    title="An encoder block from its weights, post-norm and pre-norm",
)
def check_encoder_block(fn: Any) -> str:
    """Post-norm and pre-norm, with and without a padding mask, one to four heads."""
    gen = torch.Generator().manual_seed(66)
    cases = [
        _encoder_case(gen, 2, 5, 16, 4, None, False),
        _encoder_case(gen, 2, 5, 16, 4, None, True),
        _encoder_case(gen, 3, 6, 24, 3, [6, 2, 4], False),
        _encoder_case(gen, 3, 6, 24, 3, [6, 2, 4], True),
        _encoder_case(gen, 1, 1, 8, 1, None, True),
    ]
    for args in cases:
        x, params, n_head, mask, norm_first = args
        mask_text = "None" if mask is None else f"a padding mask of shape {tuple(mask.shape)}"
        label = f"encoder_block(x {tuple(x.shape)}, params, n_head={n_head}, mask={mask_text}, norm_first={norm_first})"
        given = (x.clone(), {k: v.clone() for k, v in params.items()})
        got = _as_tensor(call(fn, *given, n_head, mask, norm_first, label=label), label)
        unchanged(
            label, [given[0], *given[1].values()], [x, *params.values()], ["x", *(f"params[{k!r}]" for k in params)]
        )
        expected = reference_encoder_block(*args).float()
        if got.shape != expected.shape:
            raise mismatch(
                f"{label} should have the shape of x, {tuple(x.shape)}.",
                expected,
                got,
                "a block maps each token's vector to a new one.",
            )
        if not torch.isfinite(got).all():
            raise mismatch(
                f"{label} returned nan or inf.",
                first_rows(expected),
                first_rows(got),
                "a nan usually means every key of a row was masked: True in the "
                "mask means 'may look', so fill -inf where it is False.",
            )
        if not same(got, expected, atol=ATOL):
            raise mismatch(
                f"{label} is wrong (first rows of the first sequence shown).",
                first_rows(expected),
                first_rows(got),
                _encoder_hint(got, args),
            )
    return "Matches the chapter's EncoderBlock, post-norm and pre-norm, with and without padding, on 5 cases."


# --------------------------------------------------------------------------- experiment

RV_VOCAB, RV_T, RV_STEPS, RV_BATCH = 10, 10, 200, 32
RV_TARGET, RV_WORST = 0.95, 0.9
RV_SEEDS = (0, 1)
RV_KEYS = ("positions", "mask", "n_embd", "n_head", "lr")
RV_POSITIONS = ("none", "sinusoidal", "learned")
RV_MASKS = ("none", "causal")


def train_reverse(settings: dict[str, Any], seed: int) -> list[float]:
    """Train the experiment's one-block encoder with ``settings`` to write its input
    backwards, and return the held-out accuracy at each output position.

    The model: token embeddings plus the chosen positional encoding (none, the sinusoidal
    one, or learned vectors), one pre-norm block (multi-head self-attention with the
    chosen mask, then a feed-forward network of width 4 * n_embd, each with a residual
    connection), a final layer norm and a linear read-out at every position. Adam for
    ``RV_STEPS`` steps on random sequences; deterministic for a seed. About 0.7 CPU
    seconds at width 32.
    """
    with one_thread(), torch.enable_grad():  # the same numbers on every machine
        positions, mask_kind, d, n_head, lr = (settings[k] for k in RV_KEYS)
        V, T = RV_VOCAB, RV_T
        gen = torch.Generator().manual_seed(seed)

        def param(*shape: int, std: float) -> torch.Tensor:
            return (std * torch.randn(*shape, generator=gen)).requires_grad_(True)

        p = {
            "wte": param(V, d, std=1.0),
            "w_attn": param(3 * d, d, std=d**-0.5),
            "w_proj": param(d, d, std=d**-0.5),
            "w_up": param(4 * d, d, std=d**-0.5),
            "w_down": param(d, 4 * d, std=(4 * d) ** -0.5),
            "w_out": param(V, d, std=d**-0.5),
        }
        if positions == "learned":
            p["wpe"] = param(T, d, std=1.0)
        fixed = reference_sinusoidal(T, d).float() if positions == "sinusoidal" else torch.zeros(T, d)
        mask = torch.ones(T, T, dtype=torch.bool)
        if mask_kind == "causal":
            mask = mask.tril()
        hd = d // n_head

        def forward(x: torch.Tensor) -> torch.Tensor:  # (B, T) ids -> (B, T, V) logits
            B = x.shape[0]
            h = p["wte"][x] + (p["wpe"] if positions == "learned" else fixed)
            q, k, v = (F.layer_norm(h, (d,)) @ p["w_attn"].T).split(d, dim=-1)
            q, k, v = (z.view(B, T, n_head, hd).transpose(1, 2) for z in (q, k, v))
            scores = (q @ k.transpose(-2, -1) / math.sqrt(hd)).masked_fill(~mask, float("-inf"))
            y = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, d)
            h = h + y @ p["w_proj"].T
            h = h + F.gelu(F.layer_norm(h, (d,)) @ p["w_up"].T) @ p["w_down"].T
            return F.layer_norm(h, (d,)) @ p["w_out"].T

        optimizer = torch.optim.Adam(p.values(), lr=lr)
        for _ in range(RV_STEPS):
            x = torch.randint(V, (RV_BATCH, T), generator=gen)
            loss = F.cross_entropy(forward(x).reshape(-1, V), x.flip(1).reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        held_out = torch.randint(V, (512, T), generator=torch.Generator().manual_seed(1000 + seed))
        with torch.no_grad():
            right = forward(held_out).argmax(dim=-1) == held_out.flip(1)
        return [round(a, 3) for a in right.float().mean(dim=0).tolist()]


def _reverse_settings(value: Any) -> dict[str, Any]:
    """The learner's settings, checked for keys, types and ranges before any training."""
    example = "{'positions': 'none', 'mask': 'causal', 'n_embd': 32, 'n_head': 4, 'lr': 1e-3}"
    if not isinstance(value, dict):
        raise CheckFailed(f"reverse_settings() should return a dict like {example}, but returned {describe(value)}.")
    missing = [k for k in RV_KEYS if k not in value]
    extra = [k for k in value if k not in RV_KEYS]
    if missing or extra:
        raise CheckFailed(
            f"reverse_settings() should return exactly the keys {list(RV_KEYS)};"
            f" missing {missing}, unexpected {extra}. For example {example}."
        )
    if value["positions"] not in RV_POSITIONS:
        raise CheckFailed(f"settings['positions'] should be one of {RV_POSITIONS}, got {describe(value['positions'])}.")
    if value["mask"] not in RV_MASKS:
        raise CheckFailed(f"settings['mask'] should be one of {RV_MASKS}, got {describe(value['mask'])}.")
    for key in ("n_embd", "n_head"):
        if not is_int(value[key]):
            raise CheckFailed(f"settings[{key!r}] should be a whole number (an int), got {describe(value[key])}.")
    lr = value["lr"]
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not 0 < float(lr) <= 1:
        raise CheckFailed(f"settings['lr'] should be a learning rate between 0 and 1, got {describe(lr)}.")
    d, h = int(value["n_embd"]), int(value["n_head"])
    if not 4 <= d <= 64 or d % 2:
        raise CheckFailed(
            f"settings['n_embd'] = {d}: choose an even width from 4 to 64 (the sinusoidal encoding pairs its columns)."
        )
    if not 1 <= h <= 8 or d % h:
        raise CheckFailed(f"settings['n_head'] = {h} with n_embd = {d}: choose 1 to 8 heads that divide n_embd.")
    return {"positions": value["positions"], "mask": value["mask"], "n_embd": d, "n_head": h, "lr": float(lr)}


def _reverse_advice(s: dict[str, Any], acc: list[float]) -> str:
    half = RV_T // 2
    if s["positions"] == "none":
        return (
            "without positions, attention cannot tell one place from another (the "
            "chapter's shuffling test: shuffling the input only shuffles the output), "
            "so every output position sees the same bag of tokens and can only guess. "
            "Give the model a positional encoding."
        )
    if s["mask"] == "causal":
        first = sum(acc[:half]) / half
        return (
            f"the first {half} outputs stay near chance ({first:.0%}): output 0 must "
            f"name the *last* input token, which a causal mask hides from position 0. "
            f"An encoder looks both ways: use mask 'none'."
        )
    if s["lr"] < 1e-3:
        return (
            f"the accuracy is still climbing when the {RV_STEPS} steps run out: raise "
            f"the learning rate (try 3e-3 to 1e-2)."
        )
    if s["lr"] > 5e-2:
        return "a learning rate this high makes training jump about: lower it (try 1e-2)."
    return (
        "try another width or learning rate; train the model yourself with "
        "train_reverse(settings, seed) to watch what changes."
    )


@register(
    "transformer.reverse_experiment",
    chapter=CHAPTER,
    kind="experiment",
    time_limit=30,
    title="An encoder block that writes its input backwards",
)
def check_reverse_experiment(fn: Any) -> str:
    """Train with the learner's settings on seeds 0 and 1; held-out accuracy >= 95 % on
    average and >= 90 % at every output position."""
    settings = _reverse_settings(call(fn, label="reverse_settings()"))
    results = {seed: train_reverse(settings, seed) for seed in RV_SEEDS}
    means = {seed: sum(acc) / len(acc) for seed, acc in results.items()}
    for seed, acc in results.items():
        if means[seed] < RV_TARGET or min(acc) < RV_WORST:
            raise CheckFailed(
                f"Trained with {settings} for {RV_STEPS} steps (seed {seed}), the held-out "
                f"accuracy is {means[seed]:.1%} on average; by output position: "
                f"{[f'{a:.0%}' for a in acc]}.\n"
                f"  expected: at least {RV_TARGET:.0%} on average and {RV_WORST:.0%} at every "
                f"position\n"
                f"  got:      {means[seed]:.1%} on average, {min(acc):.0%} at worst\n"
                f"Hint: {_reverse_advice(settings, acc)}"
            )
    shown = ", ".join(f"seed {seed}: {m:.1%}" for seed, m in means.items())
    return f"With {settings} one encoder block reverses held-out sequences ({shown} of the output tokens right)."
