"""Checks for chapter 6, "The transformer: encoder, decoder, and the half that GPT kept".

Four functions carry the chapter's ideas: the sinusoidal positional encoding of
Vaswani et al. (2017), layer norm written from its formula, the decoder's
self-attention mask (causal and padding together), and multi-head cross-attention,
where the decoder's queries read the encoder's keys and values. Each check compares
the learner's function with a reference on ordinary and edge-case inputs and, when they
differ, names the input, shows what was expected and what came back, and recognises the
usual mistakes (sin and cos swapped, the unbiased variance, a mask that is upside down,
keys taken from the wrong sequence, ...) to say which one it is.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch

from llmbook.exercises.compare import first_row, known_mistake, same, tensor_answer, unchanged
from llmbook.exercises.core import CheckFailed, call, mismatch, register

CHAPTER = "06"
ATOL = 1e-4  # these references are computed in float64, the answers usually in float32


def _as_tensor(value: Any, label: str) -> torch.Tensor:
    """The learner's result as a tensor (NumPy arrays are accepted), or a clear failure."""
    if type(value).__module__ == "numpy":
        value = torch.as_tensor(value)
    return tensor_answer(value, label, hint="build the result with torch operations and "
                                            "`return` it.")


# --------------------------------------------------------------------------- positional encoding


def reference_sinusoidal(n_positions: int, d_model: int, *, swap: bool = False, exponent: str = "2i",
                         layout: str = "interleaved") -> torch.Tensor:
    """The paper's encoding (and, through the keywords, its usual wrong variants), in float64."""
    pos = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)
    n_sin, n_cos = (d_model + 1) // 2, d_model // 2
    pair = torch.arange(n_sin, dtype=torch.float64)
    if exponent == "2i":
        freq = 10000.0 ** (-(2 * pair) / d_model)
    elif exponent == "i":
        freq = 10000.0 ** (-pair / d_model)
    else:  # "times": pos * 10000 ** (2i / d) instead of dividing
        freq = 10000.0 ** ((2 * pair) / d_model)
    angle = pos * freq
    first, second = (torch.cos, torch.sin) if swap else (torch.sin, torch.cos)
    if layout == "concat":
        return torch.cat([first(angle), second(angle[:, :n_cos])], dim=1)
    pe = torch.zeros(n_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = first(angle)
    pe[:, 1::2] = second(angle[:, :n_cos])
    return pe


def _per_column_frequency(n_positions: int, d_model: int) -> torch.Tensor:
    """Variant: every column j uses its own frequency 10000 ** (-j / d) (no pairs)."""
    pos = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(d_model, dtype=torch.float64)
    angle = pos * 10000.0 ** (-(j - j % 2) / d_model)  # the right pairs...
    wrong = pos * 10000.0 ** (-j / d_model)  # ...and what happens when the odd columns shift
    pe = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(wrong))
    return pe


def _pe_hint(got: torch.Tensor, n: int, d: int) -> str:
    variants = [
        (reference_sinusoidal(n, d, swap=True),
         "sin and cos are swapped: the even dimensions (0, 2, 4, ...) hold sin, the odd ones cos."),
        (reference_sinusoidal(n, d, exponent="i"),
         ("the exponent is 2i/d_model, where 2i is the even dimension (0, 2, 4, ...); you used "
         "i/d_model with i = 0, 1, 2, ..., which makes the waves too slow.")),
        (reference_sinusoidal(n, d, exponent="times"),
         "divide the position by 10000 ** (2i / d_model); you multiplied by it."),
        (reference_sinusoidal(n, d, layout="concat"),
         ("you put all the sines first and all the cosines after them; the paper interleaves "
         "them: column 2i is sin, column 2i + 1 is cos of the same angle. Fill pe[:, 0::2] and "
         "pe[:, 1::2].")),
        (_per_column_frequency(n, d),
         ("column 2i + 1 must use the same frequency as column 2i (a sin and a cos of the same "
         "angle make a pair); you gave the cos columns the exponent (2i + 1) / d_model.")),
    ]
    hint = known_mistake(got, [(variant.float(), why) for variant, why in variants], atol=ATOL)
    if hint:
        return hint
    if got.shape == (n, d) and d % 2 == 1:
        even = reference_sinusoidal(n, d + 1)[:, :d]
        if same(got, even.float(), atol=ATOL):
            return "close, but not for odd d_model."
    if got.shape == (n, d) and same(got[0], reference_sinusoidal(1, d)[0], atol=ATOL):
        return (
            "position 0 is right (sin 0 = 0, cos 0 = 1) but later positions are not: check the "
            "angle pos / 10000 ** (2i / d_model) for each pair of columns."
        )
    return "PE[pos, 2i] = sin(pos / 10000 ** (2i / d_model)) and PE[pos, 2i + 1] = cos(the same angle)."


@register(
    "transformer.sinusoidal_encoding",
    chapter=CHAPTER,
    title="The sinusoidal positional encoding of 'Attention Is All You Need'",
)
def check_sinusoidal_encoding(fn: Any) -> str:
    """Several sizes, including one position, a width of 2 and odd widths."""
    for n, d in [(4, 2), (10, 8), (50, 64), (1, 6), (7, 5), (200, 16), (3, 1)]:
        label = f"sinusoidal_encoding({n}, {d})"
        got = _as_tensor(call(fn, n, d, label=label), label)
        expected = reference_sinusoidal(n, d).float()
        if got.shape == (d, n) and (n, d) != (d, n):
            raise mismatch(f"{label} has its dimensions the wrong way round.", expected, got,
                           "return one row per position: shape (n_positions, d_model).")
        if got.shape != expected.shape:
            raise mismatch(f"{label} should have shape {tuple(expected.shape)}.", expected, got,
                           "one row per position, one column per dimension of the model.")
        if not got.is_floating_point():
            raise mismatch(f"{label} should hold floats.", expected, got,
                           "create the tensor with dtype=torch.float32 (torch.arange of ints gives ints).")
        if not same(got, expected, atol=ATOL):
            if d % 2 == 1 and same(got[:, : d - 1], expected[:, : d - 1], atol=ATOL):
                raise mismatch(
                    f"{label}: the first {d - 1} columns are right, the last one is not.", expected, got,
                    "with an odd d_model the last column (an even index, 2i = d_model - 1) is a sin "
                    "whose cos partner does not fit; it still uses the angle pos / 10000 ** (2i / d_model).",
                )
            bad = (got.double() - expected.double()).abs()
            row, col = divmod(int(bad.argmax()), d)
            raise CheckFailed(
                f"{label} is wrong, first at position {row}, dimension {col}: expected "
                f"{float(expected[row, col]):.6f}, got {float(got[row, col]):.6f}.\n"
                f"Hint: {_pe_hint(got, n, d)}"
            )
    return (
        "Matches the paper's encoding for every size tried, odd widths included: even "
        "dimensions are sines, odd ones cosines, with wavelengths from 2π up to 10000·2π."
    )


# --------------------------------------------------------------------------- layer norm


def reference_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                         *, unbiased: bool = False, eps_outside: bool = False,
                         dims: tuple[int, ...] = (-1,), affine: bool = True) -> torch.Tensor:
    x = x.double()
    mu = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, keepdim=True, unbiased=unbiased)
    normed = (x - mu) / (var.sqrt() + eps) if eps_outside else (x - mu) / torch.sqrt(var + eps)
    return normed * weight.double() + bias.double() if affine else normed


@contextlib.contextmanager
def _no_library_layer_norm() -> Iterator[None]:
    """While the learner's function runs, the library's layer norm refuses to help."""
    import torch.nn.functional as F

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise CheckFailed(
            "Your function called PyTorch's layer norm (nn.LayerNorm, F.layer_norm or "
            "torch.layer_norm). The point of this exercise is to build it: compute the mean and "
            "the variance over the last dimension yourself."
        )

    saved = F.layer_norm, torch.layer_norm
    F.layer_norm = refuse  # type: ignore[assignment]
    torch.layer_norm = refuse  # type: ignore[assignment]
    try:
        yield
    finally:
        F.layer_norm, torch.layer_norm = saved


def _ln_hint(got: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> str:
    variants: list[tuple[dict[str, Any], str]] = [
        ({"unbiased": True},
         ("you used the unbiased variance (dividing by n - 1). torch.var and torch.std do that by "
         "default; layer norm divides by n: pass unbiased=False (or correction=0), or use "
         "((x - mean) ** 2).mean(dim=-1, keepdim=True).")),
        ({"eps_outside": True},
         "eps goes inside the square root: (x - mean) / sqrt(var + eps), not (x - mean) / (std + eps)."),
        ({"unbiased": True, "eps_outside": True},
         ("two things: use the biased variance (divide by n, not n - 1), and put eps inside the "
         "square root, sqrt(var + eps).")),
        ({"affine": False}, "you forgot the learned gain and bias: multiply by weight, then add bias."),
        ({"dims": tuple(range(x.dim()))},
         ("you normalised over the whole tensor; layer norm normalises each vector (each token) "
         "on its own, over the last dimension only: mean(dim=-1, keepdim=True).")),
        ({"dims": (0,)},
         ("you normalised over the first dimension (across the batch, like batch norm); layer "
         "norm normalises over the last dimension: mean(dim=-1, keepdim=True).")),
    ]
    mistakes = [(partial(reference_layer_norm, **kwargs), why) for kwargs, why in variants]
    return known_mistake(got, mistakes, x, w, b, eps, atol=ATOL) or (
        "LN(x) = weight * (x - mean) / sqrt(var + eps) + bias, with mean and var over the last "
        "dimension.")


@register(
    "transformer.layer_norm",
    chapter=CHAPTER,
    title="Layer norm from its formula",
)
def check_layer_norm(fn: Any) -> str:
    """Random inputs of several shapes, a large eps, a constant vector, no library help."""
    gen = torch.Generator().manual_seed(6)
    cases = [((4, 8), 1e-5), ((2, 3, 16), 1e-5), ((5, 6), 1.0), ((1, 1, 64), 1e-5), ((3, 2), 0.1)]
    for shape, eps in cases:
        x = 3 * torch.randn(shape, generator=gen) + 2
        w = torch.randn(shape[-1], generator=gen)
        b = torch.randn(shape[-1], generator=gen)
        if shape == (1, 1, 64):
            x = torch.full(shape, 7.0)  # a constant vector: variance 0, eps saves the division
        label = f"layer_norm(x of shape {shape}, weight, bias, eps={eps:g})"
        copies = (x.clone(), w.clone(), b.clone())
        with _no_library_layer_norm():
            got = call(fn, x, w, b, eps, label=label)
        got = _as_tensor(got, label)
        unchanged(label, (x, w, b), copies, ("x", "weight", "bias"))
        expected = reference_layer_norm(x, w, b, eps).float()
        if got.shape != expected.shape:
            raise mismatch(f"{label} should have the same shape as x.", expected, got,
                           "use keepdim=True in mean and var, so that x - mean broadcasts.")
        if not torch.isfinite(got).all():
            raise mismatch(f"{label} returned nan or inf.", expected, got,
                           "a constant vector has variance 0: eps inside the square root keeps the "
                           "division finite, sqrt(var + eps).")
        if not same(got, expected, atol=ATOL):
            raise CheckFailed(
                f"{label} is wrong.\n  expected (first row): {first_row(expected, 6)}\n"
                f"  got      (first row): {first_row(got, 6)}\n"
                f"Hint: {_ln_hint(got, x, w, b, eps)}"
            )
    return (
        "Matches layer norm on every shape tried: biased variance over the last dimension, eps "
        "inside the square root (a constant vector comes out as the bias), then gain and bias."
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
        (~ref, ("your mask is upside down: True must mean 'may look' (the convention of "
               "F.scaled_dot_product_attention's boolean masks and of this course).")),
        (causal, ("you built the causal part only; padding keys must also be hidden: combine it "
                 "with (ids != pad_id) using &.")),
        (real_keys, ("you built the padding part only; the decoder must also never look ahead: "
                    "combine it with the causal (lower-triangular) mask using &.")),
        (causal.transpose(-1, -2) & real_keys,
         ("your triangle points the wrong way: query i may look at keys j <= i (torch.tril), "
         "not j >= i.")),
        (torch.ones(T, T, dtype=torch.bool).tril(-1).expand_as(ref) & real_keys,
         "a position may look at itself: use torch.tril(...) with the diagonal, not tril(..., -1)."),
        (causal & real_queries,
         ("you hid padding *queries* (rows) instead of padding *keys* (columns): the padding mask "
         "has shape (B, 1, 1, T) so that it broadcasts over the query dimension.")),
        (causal | real_keys, "combine the two masks with & (both must allow a look), not |."),
    ]
    return known_mistake(got.bool(), variants) or (
        "mask[b, 0, i, j] is True exactly when j <= i and ids[b, j] != pad_id.")


@register(
    "transformer.decoder_mask",
    chapter=CHAPTER,
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
                raise mismatch(f"{label} should be a boolean tensor.", expected, got,
                               "the values are right; return a bool tensor (comparisons and & give one).")
            raise mismatch(f"{label} should be a boolean tensor (True = may look).", expected, got,
                           "an additive float mask with -inf is another convention; here, return booleans.")
        if not torch.equal(got, expected):
            raise mismatch(f"{label} is wrong.", expected, got, _mask_hint(got, ids, pad_id))
    return (
        "Right for every batch: each position sees itself and earlier positions, never a later "
        "one, and never a padding key; the (B, 1, T, T) shape broadcasts over the heads."
    )


# --------------------------------------------------------------------------- cross-attention


def reference_cross_attention(x: torch.Tensor, memory: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor,
                              w_v: torch.Tensor, w_o: torch.Tensor, n_head: int,
                              memory_mask: torch.Tensor | None, *, scale: str = "head",
                              softmax_dim: int = -1, project_out: bool = True) -> torch.Tensor:
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
        (lambda: ref(x, memory, w_q, w_k, w_v, w_o, n_head, None),
         ("the memory_mask was ignored: scores of keys where the mask is False must become -inf "
         "before the softmax (scores.masked_fill(~memory_mask, float('-inf'))).")),
        (lambda: ref(x, memory, w_q, w_k, w_v, w_o, n_head, None if mask is None else ~mask),
         "the mask is used upside down: True means 'may look', so fill -inf where the mask is False."),
        (lambda: ref(x, memory, w_q, w_k, w_v, w_o, n_head, mask, scale="model"),
         "divide the scores by sqrt(head_dim) = sqrt(d_model / n_head), not by sqrt(d_model)."),
        (lambda: ref(x, memory, w_q, w_k, w_v, w_o, n_head, mask, scale="none"),
         "you forgot to scale the scores: divide q @ k^T by sqrt(head_dim)."),
        (lambda: ref(x, memory, w_q, w_k, w_v, w_o, n_head, mask, project_out=False),
         "you forgot the output projection: after merging the heads, multiply by w_o."),
        (lambda: ref(x, memory, w_q, w_k, w_v, w_o, 1, mask),
         ("you computed a single head: split q, k and v into n_head heads of d_model // n_head "
         "features, attend in each head separately, then merge them back.")),
    ]
    if x.shape == memory.shape:
        variants.insert(0, (
            lambda: ref(x, x, w_q, w_k, w_v, w_o, n_head, mask),
            ("you took the keys and values from x; in cross-attention only the queries come from "
            "x (the decoder), the keys and values come from memory (the encoder's output)."),
        ))
        variants.insert(1, (
            lambda: ref(memory, x, w_q, w_k, w_v, w_o, n_head, mask),
            "x and memory are swapped: queries come from x, keys and values from memory.",
        ))
    hint = known_mistake(got, variants, atol=ATOL)
    if hint:
        return hint
    return (
        "q = x @ w_q, k = memory @ w_k, v = memory @ w_v; split into heads; softmax(q k^T / "
        "sqrt(head_dim)) with -inf where the mask is False; weights @ v; merge the heads; @ w_o."
    )


def _xattn_case(gen: torch.Generator, B: int, Tq: int, Tk: int, d: int, n_head: int,
                lengths: list[int] | None) -> tuple:
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
        label = (f"cross_attention(x {tuple(x.shape)}, memory {tuple(memory.shape)}, w_q, w_k, w_v, w_o, "
                 f"n_head={n_head}, memory_mask={mask_text})")
        copies = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        got = _as_tensor(call(fn, *args, label=label), label)
        unchanged(label, args[:6], copies[:6], ("x", "memory", "w_q", "w_k", "w_v", "w_o"))
        expected = reference_cross_attention(*args).float()
        if got.shape != expected.shape:
            if got.shape == memory.shape and memory.shape != x.shape:
                hint = ("the output has one row per *query*, i.e. per position of x, not per "
                        "position of memory; did you take the queries from memory?")
            else:
                hint = "the result has the shape of x: (batch, queries, d_model)."
            raise mismatch(f"{label} should have shape {tuple(expected.shape)}.", expected, got, hint)
        if not torch.isfinite(got).all():
            hint = ("masked scores become -inf and softmax turns them into 0; a nan usually means "
                    "a whole row of scores was masked.")
            if mask is not None:
                w_q, w_k, w_v, w_o = args[2:6]
                inverted = reference_cross_attention(x, memory, w_q, w_k, w_v, w_o, n_head, ~mask)
                if torch.equal(torch.isnan(inverted), torch.isnan(got)):
                    hint = ("the mask is used upside down: True means 'may look', so fill -inf where "
                            "the mask is False (~memory_mask). With the mask inverted, a sequence "
                            "without padding has every key hidden, and softmax of all -inf is nan.")
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
