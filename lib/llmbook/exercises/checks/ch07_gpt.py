"""Checks for chapter 7, "The GPT model".

Five exercises rebuild the parts of a GPT that chapter 7 adds around attention: layer
normalisation, GPT-2's tanh approximation of GELU, the feed-forward block (with weights
given in ``nn.Linear``'s layout), one generation step of attention with a key/value
cache, and the memory that cache needs. Each check compares the learner's function with
a reference on ordinary and edge-case inputs and, when they differ, names the input, the
expected and actual values, and the mistake that most often produces that difference
(it recognises those mistakes by computing them and comparing).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from llmbook.config import GPTConfig
from llmbook.exercises.compare import (
    Mistake,
    head,
    known_mistake,
    same,
    tensor_answer,
    tensor_tuple,
    unchanged,
    whole_number,
)
from llmbook.exercises.core import CheckFailed, call, mismatch, register

CHAPTER = "07"


# --------------------------------------------------------------------------- layer norm


def _ln_ref(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x.double(), (x.shape[-1],), w.double(), b.double(), eps).to(x.dtype)


def _ln_mistakes(eps_used: float) -> list[Mistake]:
    def centred(x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(-1, keepdim=True)

    def biased_var(x: torch.Tensor) -> torch.Tensor:
        return x.var(-1, keepdim=True, unbiased=False)

    return [
        (lambda x, w, b, eps: centred(x) / torch.sqrt(x.var(-1, keepdim=True) + eps) * w + b,
         ("you used the unbiased variance (dividing by n - 1; torch.var and torch.std do that "
          "by default). Layer norm divides by n: use x.var(dim=-1, keepdim=True, unbiased=False), "
          "or the mean of the squared deviations.")),
        (lambda x, w, b, eps: centred(x) / (x.std(-1, keepdim=True, unbiased=False) + eps) * w + b,
         ("you added eps to the standard deviation. It belongs inside the square root: "
          "(x - mean) / sqrt(var + eps).")),
        (lambda x, w, b, eps: centred(x) / (x.std(-1, keepdim=True) + eps) * w + b,
         ("two things: eps goes inside the square root, sqrt(var + eps), and the variance "
          "divides by n, not n - 1 (unbiased=False).")),
        (lambda x, w, b, eps: centred(x) / torch.sqrt(biased_var(x) + 1e-5) * w + b,
         f"you used eps = 1e-5 although this call passed eps = {eps_used}: use the argument."),
        (lambda x, w, b, eps: centred(x) / torch.sqrt(biased_var(x) + eps),
         "you forgot the learned gain and bias: multiply by weight and add bias at the end."),
        (lambda x, w, b, eps: centred(x) / torch.sqrt(biased_var(x) + eps) * w,
         "you forgot to add the bias at the end."),
        (lambda x, w, b, eps: centred(x) / torch.sqrt(biased_var(x) + eps) + b,
         "you forgot to multiply by the weight (the gain) before adding the bias."),
        (lambda x, w, b, eps: (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + eps) * w + b,
         ("you normalised over the whole tensor. Layer norm normalises each vector on its own: "
          "take the mean and variance over the last dimension only (dim=-1, keepdim=True).")),
        (lambda x, w, b, eps: (x - x.mean(0, keepdim=True))
         / torch.sqrt(x.var(0, keepdim=True, unbiased=False) + eps) * w + b,
         ("you normalised over the first dimension (across tokens or the batch, as batch norm "
          "does). Layer norm normalises each token's vector: use dim=-1.")),
        (lambda x, w, b, eps: x / torch.sqrt(biased_var(x) + eps) * w + b,
         "you forgot to subtract the mean before dividing."),
        (lambda x, w, b, eps: centred(x) / (biased_var(x) + eps) * w + b,
         "you divided by the variance; divide by its square root, sqrt(var + eps)."),
    ]


def _run_layer_norm(fn: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                    eps: float, what: str) -> None:
    label = f"layer_norm(x of shape {tuple(x.shape)}, weight, bias, eps={eps})"
    given = [x.clone(), w.clone(), b.clone()]
    out = tensor_answer(
        call(fn, *given, eps, label=label), label, shape=x.shape,
        hint="keep the last dimension when you take the mean and variance (keepdim=True) so "
             "they broadcast against x.",
    )
    unchanged(label, given, [x, w, b], ("x", "weight", "bias"))
    expected = _ln_ref(x, w, b, eps)
    if same(out, expected):
        return
    if not torch.isfinite(out).all():
        hint = (
            "your result has nan or inf. A vector whose numbers are all equal has variance 0; "
            "add eps inside the square root, sqrt(var + eps), so you never divide by zero."
        )
    else:
        hint = known_mistake(out, _ln_mistakes(eps), x, w, b, eps) or (
            "subtract each vector's mean, divide by sqrt(variance + eps) with the variance "
            "over the last dimension (dividing by n), then multiply by weight and add bias."
        )
    raise mismatch(f"{label} is wrong for {what} (first values shown).",
                   head(expected, digits=5), head(out, digits=5), hint)


@register("gpt.layer_norm", chapter=CHAPTER, title="Layer normalisation over the last dimension")
def check_layer_norm(fn: Any) -> str:
    """Random shapes against F.layer_norm; a constant vector; a small-variance case with a big eps."""
    g = torch.Generator().manual_seed(7)
    cases = [(5,), (3, 8), (2, 4, 16), (1, 6, 33)]
    for shape in cases:
        d = shape[-1]
        x = 2 + 3 * torch.randn(shape, generator=g)
        w, b = torch.randn(d, generator=g), torch.randn(d, generator=g)
        _run_layer_norm(fn, x, w, b, 1e-5, "random numbers")
    d = 8
    w, b = torch.randn(d, generator=g), torch.randn(d, generator=g)
    constant = torch.full((2, d), 3.0)
    _run_layer_norm(fn, constant, w, b, 1e-5, "vectors whose numbers are all equal")
    tiny = 0.01 * torch.randn(3, d, generator=g)
    _run_layer_norm(fn, tiny, w, b, 0.01, "a vector with a small variance and a large eps")
    _run_layer_norm(fn, 100 * torch.randn(2, 3, d, generator=g), torch.ones(d), torch.zeros(d),
                    1e-5, "large numbers")
    return (
        "Matches torch's layer norm on shapes from (5,) to (1, 6, 33), stays finite on a "
        "constant vector (the output is just the bias), puts eps inside the square root, and "
        "divides the variance by n."
    )


# --------------------------------------------------------------------------- GELU


def _gelu_mistakes() -> list[Mistake]:
    c = math.sqrt(2 / math.pi)
    return [
        (lambda x: F.gelu(x),
         ("that is the exact GELU, x·Φ(x) with the error function. GPT-2 uses the tanh "
          "approximation: 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³))).")),
        (lambda x: torch.relu(x),
         "that is ReLU. GELU is smooth: 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))."),
        (lambda x: 0.5 * x * (1 + torch.tanh(c * x)),
         "the cubic term is missing: inside the tanh it is sqrt(2/π)·(x + 0.044715·x³)."),
        (lambda x: 0.5 * x * (1 + torch.tanh(c * x + 0.044715 * x**3)),
         "sqrt(2/π) multiplies the whole bracket, (x + 0.044715·x³), not only x."),
        (lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2) / math.pi * (x + 0.044715 * x**3))),
         "the constant is sqrt(2/π) ≈ 0.7979, not sqrt(2)/π ≈ 0.450: math.sqrt(2 / math.pi)."),
        (lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 * math.pi) * (x + 0.044715 * x**3))),
         "the constant is sqrt(2/π) ≈ 0.7979, not sqrt(2π): math.sqrt(2 / math.pi)."),
        (lambda x: x * (1 + torch.tanh(c * (x + 0.044715 * x**3))),
         "you forgot the factor 0.5 in front."),
        (lambda x: 0.5 * (1 + torch.tanh(c * (x + 0.044715 * x**3))),
         "you forgot to multiply by x: GELU(x) = x · (an approximation of Φ(x))."),
        (lambda x: 0.5 * x * (1 + torch.tanh(c * (x + 0.044715 * x**2))),
         "the correction term is cubic: 0.044715·x**3, not x**2."),
    ]


@register("gpt.gelu_tanh", chapter=CHAPTER, title="GELU, GPT-2's tanh approximation")
def check_gelu_tanh(fn: Any) -> str:
    """A grid of inputs and random tensors against F.gelu(approximate="tanh")."""
    g = torch.Generator().manual_seed(7)
    inputs = [
        ("a grid from -5 to 5", torch.linspace(-5, 5, 101)),
        ("random numbers of shape (3, 4, 8)", 2 * torch.randn(3, 4, 8, generator=g)),
        ("large inputs", torch.tensor([-30.0, -12.0, 12.0, 30.0])),
    ]
    for what, x in inputs:
        label = f"gelu_tanh(x of shape {tuple(x.shape)})"
        given = x.clone()
        out = tensor_answer(call(fn, given, label=label), label, shape=x.shape,
                            hint="apply the formula elementwise with torch operations (torch.tanh).")
        unchanged(label, [given], [x], ["x"])
        expected = F.gelu(x.double(), approximate="tanh").float()
        if not same(out, expected, rtol=1e-5, atol=1e-6):
            hint = known_mistake(out, _gelu_mistakes(), x) or (
                "GELU(x) ≈ 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³)))."
            )
            worst = int((out.double() - expected.double()).abs().reshape(-1).argmax())
            xv = float(x.reshape(-1)[worst])
            raise CheckFailed(
                f"{label} is wrong for {what}. The largest difference is at x = {xv:.4g}:\n"
                f"  expected: {float(expected.reshape(-1)[worst]):.7g}\n"
                f"  got:      {float(out.reshape(-1)[worst]):.7g}\nHint: {hint}"
            )
    return (
        "Matches GPT-2's GELU, F.gelu(x, approximate='tanh'), from -30 to 30: within 1e-6, "
        "close enough to tell it from the exact GELU, which differs by up to 4.7e-4."
    )


# --------------------------------------------------------------------------- feed-forward


def _ff_ref(x, w_fc, b_fc, w_proj, b_proj):
    x, w_fc, b_fc, w_proj, b_proj = (t.double() for t in (x, w_fc, b_fc, w_proj, b_proj))
    return F.linear(F.gelu(F.linear(x, w_fc, b_fc), approximate="tanh"), w_proj, b_proj).float()


def _ff_mistakes() -> list[Mistake]:
    return [
        (lambda x, wf, bf, wp, bp: F.linear(F.gelu(F.linear(x, wf, bf)), wp, bp),
         ("you used the exact GELU (F.gelu(h) or nn.GELU()). GPT-2 uses the tanh approximation: "
          "F.gelu(h, approximate='tanh'), or your gelu_tanh.")),
        (lambda x, wf, bf, wp, bp: F.linear(torch.relu(F.linear(x, wf, bf)), wp, bp),
         "you used ReLU; the feed-forward block uses GELU (the tanh version)."),
        (lambda x, wf, bf, wp, bp: F.linear(F.linear(x, wf, bf), wp, bp),
         ("there is no activation between the two linear layers: without it, two linear layers "
          "are just one linear layer. Apply GELU (tanh version) to the widened vector.")),
        (lambda x, wf, bf, wp, bp: F.linear(F.gelu(F.linear(x, wf), approximate="tanh"), wp),
         ("you left out both biases: add b_fc after the first matrix product and b_proj after "
          "the second.")),
        (lambda x, wf, bf, wp, bp: F.linear(F.gelu(F.linear(x, wf), approximate="tanh"), wp, bp),
         "you left out b_fc: add it after the first matrix product, before GELU."),
        (lambda x, wf, bf, wp, bp: F.linear(F.gelu(F.linear(x, wf, bf), approximate="tanh"), wp),
         "you left out b_proj: add it after the second matrix product."),
        (lambda x, wf, bf, wp, bp: F.linear(F.gelu(F.linear(x, wf), approximate="tanh") + bf, wp, bp),
         "b_fc is added before GELU, not after it: gelu(x @ w_fc.T + b_fc)."),
        (lambda x, wf, bf, wp, bp: F.gelu(F.linear(F.gelu(F.linear(x, wf, bf), approximate="tanh"),
                                                   wp, bp), approximate="tanh"),
         ("there is no GELU after the second linear layer: the block's output goes straight "
          "back into the residual stream.")),
    ]


@register("gpt.feed_forward", chapter=CHAPTER, title="The feed-forward block from its weights")
def check_feed_forward(fn: Any) -> str:
    """Random weights of several widths (one not 4x) against F.linear / tanh GELU / F.linear."""
    g = torch.Generator().manual_seed(7)
    for shape, hidden in [((2, 3, 8), 32), ((5, 16), 64), ((1, 4, 6), 10)]:
        d = shape[-1]
        x = torch.randn(shape, generator=g)
        w_fc = torch.randn(hidden, d, generator=g) / math.sqrt(d) * 2
        b_fc = torch.randn(hidden, generator=g)
        w_proj = torch.randn(d, hidden, generator=g) / math.sqrt(hidden)
        b_proj = torch.randn(d, generator=g)
        args = [x, w_fc, b_fc, w_proj, b_proj]
        label = (f"feed_forward(x of shape {tuple(shape)}, w_fc {tuple(w_fc.shape)}, "
                 f"b_fc {tuple(b_fc.shape)}, w_proj {tuple(w_proj.shape)}, "
                 f"b_proj {tuple(b_proj.shape)})")
        given = [t.clone() for t in args]
        transpose = ("the weights are stored as nn.Linear stores them, (out_features, "
                     "in_features), so multiply by the transpose: x @ w_fc.T + b_fc (or "
                     "F.linear(x, w_fc, b_fc)).")
        out = call(fn, *given, label=label, hints=[("shapes cannot be multiplied", transpose),
                                                   ("size of tensor", transpose)])
        out = tensor_answer(out, label, shape=shape,
                            hint="the block maps n_embd numbers to n_embd numbers for every token.")
        unchanged(label, given, args, ("x", "w_fc", "b_fc", "w_proj", "b_proj"))
        expected = _ff_ref(*args)
        if not same(out, expected):
            hint = known_mistake(out, _ff_mistakes(), *args)
            if hint is None and hidden != 4 * d:
                hint = (f"this case has a hidden width of {hidden}, not 4·{d}: take the sizes "
                        f"from the weights' shapes instead of assuming 4·n_embd.")
            raise mismatch(f"{label} is wrong (first values shown).",
                           head(expected, digits=5), head(out, digits=5),
                           hint or "compute gelu_tanh(x @ w_fc.T + b_fc) @ w_proj.T + b_proj.")
    return (
        "Matches gelu_tanh(x @ w_fc.T + b_fc) @ w_proj.T + b_proj for three shapes, including "
        "a hidden width that is not 4·n_embd."
    )


# --------------------------------------------------------------------------- KV cache step


def _kv_reference(q, k_new, v_new, cache_k, cache_v):
    k = k_new if cache_k is None else torch.cat([cache_k, k_new], dim=2)
    v = v_new if cache_v is None else torch.cat([cache_v, v_new], dim=2)
    w = torch.softmax(q.double() @ k.double().transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return (w @ v.double()).float(), k, v


def _kv_mistakes() -> list[Mistake]:
    def attend(q, k, v, scale, dim=-1):
        return torch.softmax(q @ k.transpose(-2, -1) * scale, dim=dim) @ v

    def full(k_new, cache):
        return k_new if cache is None else torch.cat([cache, k_new], dim=2)

    return [
        (lambda q, kn, vn, ck, cv: attend(q, ck, cv, 1 / math.sqrt(q.shape[-1])),
         ("the new token attended only to the cached tokens. Append its own key and value to "
          "the cache first: a token may always look at itself.")),
        (lambda q, kn, vn, ck, cv: attend(q, full(kn, ck), full(vn, cv), 1.0),
         "the scores are not scaled: divide q @ k.T by sqrt(head_dim) before the softmax."),
        (lambda q, kn, vn, ck, cv: attend(q, full(kn, ck), full(vn, cv), 1 / q.shape[-1]),
         "you divided the scores by head_dim; divide by its square root, sqrt(head_dim)."),
        (lambda q, kn, vn, ck, cv: attend(q, full(kn, ck), full(vn, cv),
                                          1 / math.sqrt(q.shape[-1]), dim=-2),
         ("the softmax is over the wrong dimension: the weights of one query over all keys must "
          "sum to 1, so take the softmax over the last dimension (dim=-1).")),
        (lambda q, kn, vn, ck, cv: attend(q, full(kn, ck), full(kn, ck), 1 / math.sqrt(q.shape[-1])),
         "you averaged the keys; the attention weights multiply the values."),
    ]


_KV_SHAPES = ("q, k_new and v_new have shape (batch, heads, 1, head_dim) and the caches "
              "(batch, heads, tokens so far, head_dim). Append along the time dimension, "
              "torch.cat([cache_k, k_new], dim=2), and compute the scores as "
              "q @ cache_k.transpose(-2, -1).")
_KV_FIRST = ("at the first step there is nothing cached yet and cache_k, cache_v are None: "
             "then the cache is just the new token, e.g. `cache_k = k_new if cache_k is None "
             "else torch.cat([cache_k, k_new], dim=2)`.")


@register("gpt.kv_cache_step", chapter=CHAPTER,
          title="One generation step of attention with a key/value cache")
def check_kv_cache_step(fn: Any) -> str:
    """Step through sequences from an empty cache, comparing with full causal attention."""
    g = torch.Generator().manual_seed(7)
    for B, H, T, D in [(1, 1, 5, 4), (2, 3, 7, 8)]:
        q_all = torch.randn(B, H, T, D, generator=g)
        k_all = torch.randn(B, H, T, D, generator=g)
        v_all = torch.randn(B, H, T, D, generator=g)
        cache_k = cache_v = None
        for t in range(T):
            q, k_new, v_new = (a[:, :, t:t + 1] for a in (q_all, k_all, v_all))
            label = (f"kv_cache_step(q, k_new, v_new, cache_k, cache_v) at step {t} "
                     f"(batch {B}, {H} heads, head_dim {D}, "
                     f"{'no cache yet: cache_k and cache_v are None' if t == 0 else f'{t} cached tokens'})")
            given = [q.clone(), k_new.clone(), v_new.clone(),
                     None if cache_k is None else cache_k.clone(),
                     None if cache_v is None else cache_v.clone()]
            hints = [("NoneType", _KV_FIRST)] if t == 0 else []
            result = call(fn, *given, label=label,
                          hints=[*hints, ("size", _KV_SHAPES), ("shape", _KV_SHAPES)])
            out, new_k, new_v = tensor_tuple(
                result, label, ("out", "cache_k", "cache_v"),
                hint="end with `return out, cache_k, cache_v`, where the caches already include "
                     "the new token's key and value.",
            )
            unchanged(label, given, [q, k_new, v_new, cache_k, cache_v],
                      ("q", "k_new", "v_new", "cache_k", "cache_v"))
            ref_out, ref_k, ref_v = _kv_reference(q, k_new, v_new, cache_k, cache_v)
            caches: list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]] = [
                ("cache_k", new_k, ref_k, cache_k, k_new), ("cache_v", new_v, ref_v, cache_v, v_new)]
            for name, got, want, prev, new in caches:
                if tuple(got.shape) != tuple(want.shape):
                    raise CheckFailed(
                        f"{label}: the returned {name} has shape {tuple(got.shape)}, expected "
                        f"{tuple(want.shape)} (batch, heads, tokens so far, head_dim).\nHint: "
                        f"append the new token along the time dimension, "
                        f"torch.cat([{name}, {name[-1]}_new], dim=2); at the first step, when "
                        f"{name} is None, the cache is just {name[-1]}_new."
                    )
                if not torch.equal(got, want):
                    hint = "the cache must be the old one with the new token added at the end."
                    if prev is not None and torch.equal(got, torch.cat([new, prev], dim=2)):
                        hint = ("you put the new token in front; append it at the end, "
                                "torch.cat([cache, new], dim=2), so the cache stays in order.")
                    elif name == "cache_k" and torch.equal(got, ref_v):
                        hint = "you returned the values as the keys cache."
                    raise mismatch(f"{label}: the returned {name} is wrong (first values shown).",
                                   head(want, digits=5), head(got, digits=5), hint)
            if tuple(out.shape) != (B, H, 1, D):
                raise CheckFailed(
                    f"{label}: out has shape {tuple(out.shape)}, expected {(B, H, 1, D)}: one "
                    f"output vector per batch row and head, for the one new token."
                )
            if not same(out, ref_out):
                raise mismatch(
                    f"{label}: the attention output is wrong (first values shown).",
                    head(ref_out, digits=5), head(out, digits=5),
                    known_mistake(out, _kv_mistakes(), q, k_new, v_new, cache_k, cache_v)
                    or "compute softmax(q @ K.T / sqrt(head_dim), dim=-1) @ V with K and V "
                    "the caches after appending the new token.",
                )
            cache_k, cache_v = new_k, new_v
    return (
        "Step by step from an empty cache, your outputs equal the last row of full causal "
        "attention, and your caches grow by one token per step, in order."
    )


# --------------------------------------------------------------------------- KV cache memory


def _kv_bytes_ref(cfg: GPTConfig, n_tokens: int, batch_size: int, bytes_per_value: int) -> int:
    return 2 * cfg.n_layer * cfg.n_embd * n_tokens * batch_size * bytes_per_value


def _kv_bytes_hint(cfg: GPTConfig, n: int, b: int, nbytes: int, got: int) -> str:
    expected = _kv_bytes_ref(cfg, n, b, nbytes)
    if got * 2 == expected:
        return "the cache holds a key AND a value vector for every token in every layer: ×2."
    if got * cfg.n_layer == expected and cfg.n_layer == cfg.n_head:
        return (f"you are short by a factor of {cfg.n_layer}, which is both n_layer and n_head "
                f"here. Either you counted one block's cache (every one of the n_layer blocks "
                f"has its own), or you used head_dim where all heads together store n_embd "
                f"numbers per token.")
    if got * cfg.n_layer == expected:
        return f"every one of the n_layer = {cfg.n_layer} blocks has its own cache: ×n_layer."
    if got * nbytes == expected:
        return ("that is the number of values; the question asks for bytes: multiply by "
                "bytes_per_value.")
    if got * cfg.n_head == expected:
        return ("each head stores keys of head_dim = n_embd / n_head numbers, so all heads "
                "together store n_embd numbers per token: use n_embd (not head_dim).")
    if got == expected * cfg.n_head:
        return ("you counted n_embd numbers per head; each head stores only head_dim = "
                "n_embd / n_head, so all heads together store n_embd per token.")
    if b > 1 and got * b == expected:
        return f"every one of the batch_size = {b} sequences has its own cache: ×batch_size."
    if got == _kv_bytes_ref(cfg, cfg.n_positions, b, nbytes):
        return (f"you used the context window (n_positions = {cfg.n_positions}); the cache "
                f"holds only the n_tokens = {n} tokens seen so far.")
    if got * 2 == expected * 3:
        return ("the cache keeps keys and values only (2 vectors per token per layer); queries "
                "are used once and thrown away.")
    return "bytes = 2 (key and value) × n_layer × n_embd × n_tokens × batch_size × bytes_per_value."


@register("gpt.kv_cache_bytes", chapter=CHAPTER, title="The memory a KV cache needs")
def check_kv_cache_bytes(fn: Any) -> str:
    """GPT-2 small, GPT-3, a batch and an odd shape, in fp32 and bf16."""
    cases = [
        (GPTConfig.from_preset("gpt2"), 1024, 1, 4),
        (GPTConfig.from_preset("gpt2"), 10, 1, 2),
        (GPTConfig.from_preset("gpt3-175b"), 2048, 1, 2),
        (GPTConfig.from_preset("gpt2-medium"), 300, 8, 2),
        (GPTConfig(vocab_size=50, n_positions=64, n_embd=48, n_layer=3, n_head=6), 7, 3, 4),
    ]
    for cfg, n, b, nbytes in cases:
        label = (f"kv_cache_bytes(GPTConfig(n_layer={cfg.n_layer}, n_embd={cfg.n_embd}, "
                 f"n_head={cfg.n_head}, n_positions={cfg.n_positions}), n_tokens={n}, "
                 f"batch_size={b}, bytes_per_value={nbytes})")
        expected = _kv_bytes_ref(cfg, n, b, nbytes)
        got = whole_number(call(fn, cfg, n, b, nbytes, label=label), label, expected)
        if got != expected:
            raise CheckFailed(
                f"{label} is wrong.\n  expected: {expected:,} bytes\n  got:      {got:,} "
                f"bytes\nHint: {_kv_bytes_hint(cfg, n, b, nbytes, got)}"
            )
    gpt2 = _kv_bytes_ref(GPTConfig.from_preset("gpt2"), 1024, 1, 4)
    gpt3 = _kv_bytes_ref(GPTConfig.from_preset("gpt3-175b"), 2048, 1, 2)
    return (
        f"Exact in every case: a full window costs {gpt2 / 2**20:.0f} MiB for GPT-2 small in "
        f"fp32 and {gpt3 / 2**30:.1f} GiB for GPT-3 in bf16, per sequence."
    )
