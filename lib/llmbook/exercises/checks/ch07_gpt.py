"""Checks for chapter 7, "The GPT model".

Five exercises build what chapter 7 explains around attention without printing it, and
measure one model: RMSNorm (layer norm's leaner variant, with a gain and no mean), a whole
pre-norm transformer block computed from a dictionary of weights, one generation step of
attention with a sliding-window key/value cache, the memory that cache needs, and an
experiment that picks a GPT's shape under a parameter budget so that it learns to copy.
Each check compares the learner's answer with a reference (``llmbook.layers.RMSNorm``,
``llmbook.model.Block``, banded causal attention, the memory formula, and a training run
it does itself) on ordinary and edge-case inputs and, when they differ, names the input,
the expected and actual values, and the mistake that most often produces that difference
(it recognises those mistakes by computing them and comparing).
"""

from __future__ import annotations

import math
import numbers
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
from llmbook.exercises.core import CheckFailed, call, describe, mismatch, register
from llmbook.model import GPT, Block

CHAPTER = "07"


# --------------------------------------------------------------------------- RMSNorm


def _rms_ref(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    xd = x.double()
    return (xd / torch.sqrt(xd.pow(2).mean(-1, keepdim=True) + eps) * w.double()).to(x.dtype)


def _rms_mistakes(eps_used: float) -> list[Mistake]:
    def ms(x: torch.Tensor) -> torch.Tensor:
        return x.pow(2).mean(-1, keepdim=True)

    def centred(x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(-1, keepdim=True)

    return [
        (lambda x, w, eps: centred(x) / torch.sqrt(centred(x).pow(2).mean(-1, keepdim=True)
                                                   + eps) * w,
         ("you subtracted the mean first: that is layer norm (without its bias). RMSNorm "
          "skips the centring and divides x itself by sqrt(mean(x²) + eps).")),
        (lambda x, w, eps: x / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + eps) * w,
         ("you divided by the standard deviation (the spread around the mean). RMSNorm "
          "divides by the root mean square, sqrt(mean(x²) + eps), which does not subtract "
          "the mean.")),
        (lambda x, w, eps: x / torch.sqrt(x.var(-1, keepdim=True) + eps) * w,
         ("you divided by the (unbiased) standard deviation. RMSNorm divides by the root "
          "mean square, sqrt(mean(x²) + eps).")),
        (lambda x, w, eps: x / (torch.sqrt(ms(x)) + eps) * w,
         "you added eps to the root mean square; it belongs inside: sqrt(mean(x²) + eps)."),
        (lambda x, w, eps: x / torch.sqrt(ms(x) + 1e-6) * w,
         f"you used eps = 1e-6 although this call passed eps = {eps_used}: use the argument."),
        (lambda x, w, eps: x / torch.sqrt(ms(x) + 1e-5) * w,
         f"you used eps = 1e-5 although this call passed eps = {eps_used}: use the argument."),
        (lambda x, w, eps: x / torch.sqrt(ms(x) + eps),
         "you forgot the learned gain: multiply by weight at the end."),
        (lambda x, w, eps: x / (ms(x) + eps) * w,
         "you divided by the mean square; divide by its square root, sqrt(mean(x²) + eps)."),
        (lambda x, w, eps: x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps) * w,
         ("you divided by the vector's length, sqrt(sum(x²)). RMSNorm takes the MEAN of the "
          "squares, so that the output has root mean square 1 whatever n_embd is.")),
        (lambda x, w, eps: x / torch.sqrt(x.pow(2).mean() + eps) * w,
         ("you normalised over the whole tensor. RMSNorm normalises each vector on its own: "
          "take the mean of the squares over the last dimension (dim=-1, keepdim=True).")),
        (lambda x, w, eps: x / torch.sqrt(x.pow(2).mean(0, keepdim=True) + eps) * w,
         ("you normalised over the first dimension (across tokens or the batch). RMSNorm "
          "normalises each token's vector: use dim=-1.")),
    ]


def _run_rms(fn: Any, x: torch.Tensor, w: torch.Tensor, eps: float, what: str) -> None:
    label = f"rms_norm(x of shape {tuple(x.shape)}, weight, eps={eps})"
    given = [x.clone(), w.clone()]
    out = tensor_answer(
        call(fn, *given, eps, label=label), label, shape=x.shape,
        hint="keep the last dimension when you take the mean of the squares (keepdim=True) "
             "so that it broadcasts against x.",
    )
    unchanged(label, given, [x, w], ("x", "weight"))
    expected = _rms_ref(x, w, eps)
    if same(out, expected):
        return
    if not torch.isfinite(out).all():
        hint = ("your result has nan or inf. A vector of zeros has mean square 0; add eps "
                "inside the square root, sqrt(mean(x²) + eps), so you never divide by zero.")
    else:
        hint = known_mistake(out, _rms_mistakes(eps), x, w, eps) or (
            "divide each vector by sqrt(mean(x²) + eps), the mean over the last dimension, "
            "then multiply by weight. No mean is subtracted and there is no bias.")
    raise mismatch(f"{label} is wrong for {what} (first values shown).",
                   head(expected, digits=5), head(out, digits=5), hint)


@register("gpt.rms_norm", chapter=CHAPTER, kind="build",
          title="RMSNorm: layer norm without the mean, with a gain")
def check_rms_norm(fn: Any) -> str:
    """Random shapes with a non-zero mean against llmbook.layers.RMSNorm's formula; a zero
    vector; a large eps; large numbers."""
    g = torch.Generator().manual_seed(7)
    for shape in [(5,), (3, 8), (2, 4, 16), (1, 6, 33)]:
        d = shape[-1]
        x = 2 + 3 * torch.randn(shape, generator=g)  # a mean far from 0 tells RMS from std
        _run_rms(fn, x, torch.randn(d, generator=g), 1e-6, "random numbers")
    d = 8
    w = torch.randn(d, generator=g)
    _run_rms(fn, torch.zeros(2, d), w, 1e-6, "vectors of zeros")
    _run_rms(fn, 0.05 * torch.randn(3, d, generator=g), w, 0.01,
             "small numbers and a large eps")
    _run_rms(fn, 100 * torch.randn(2, 3, d, generator=g), torch.ones(d), 1e-6,
             "large numbers")
    return (
        "Matches RMSNorm (x / sqrt(mean(x²) + eps) · weight, as llmbook.layers.RMSNorm and "
        "Llama compute it) on shapes from (5,) to (1, 6, 33), without subtracting the mean, "
        "and stays finite on a vector of zeros."
    )


# --------------------------------------------------------------------------- a whole block

BLOCK_KEYS = (
    "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
    "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
    "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
)


def _block_weights(d: int, n_head: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Random weights in llmbook.model.Block's layout, large enough that every part
    (gains and biases of the norms included) changes the output visibly."""
    shapes = {k: tuple(v.shape) for k, v in
              Block(GPTConfig(vocab_size=8, n_positions=8, n_embd=d, n_layer=1,
                              n_head=n_head)).state_dict().items()}
    weights = {}
    for name in BLOCK_KEYS:
        fan_in = shapes[name][-1] if len(shapes[name]) == 2 else 1
        scale = 1.0 / math.sqrt(fan_in) if len(shapes[name]) == 2 else 0.5
        base = 1.0 if name.startswith("ln_") and name.endswith("weight") else 0.0
        weights[name] = base + scale * torch.randn(shapes[name], generator=g)
    return weights


def _block_ref(x: torch.Tensor, w: dict[str, torch.Tensor], n_head: int) -> torch.Tensor:
    d = x.shape[-1]
    block = Block(GPTConfig(vocab_size=8, n_positions=max(8, x.shape[-2]), n_embd=d,
                            n_layer=1, n_head=n_head)).double().eval()
    block.load_state_dict({k: v.double() for k, v in w.items()})
    with torch.no_grad():
        return block(x.double()).float()


def _block_variant(x: torch.Tensor, w: dict[str, torch.Tensor], n_head: int, *,
                   post_norm: bool = False, causal: bool = True, gelu: str = "tanh",
                   scale: str = "head_dim", heads: str = "right", residual: str = "x",
                   proj: bool = True, ln2: str = "ln_2") -> torch.Tensor:
    """The block with one thing changed: what a usual mistake computes."""
    x = x.double()
    w = {k: v.double() for k, v in w.items()}
    B, T, C = x.shape
    hd = C // n_head

    def ln(name: str, h: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(h, (C,), w[f"{name}.weight"], w[f"{name}.bias"], 1e-5)

    def attn(h: torch.Tensor) -> torch.Tensor:
        q, k, v = F.linear(h, w["attn.c_attn.weight"], w["attn.c_attn.bias"]).split(C, -1)
        if heads == "right":
            q, k, v = (t.view(B, T, n_head, hd).transpose(1, 2) for t in (q, k, v))
        else:  # reshaped straight to (B, n_head, T, hd)
            q, k, v = (t.reshape(B, n_head, T, hd) for t in (q, k, v))
        div = {"head_dim": math.sqrt(hd), "none": 1.0, "hd": hd, "C": math.sqrt(C)}[scale]
        s = q @ k.transpose(-2, -1) / div
        if causal:
            s = s.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        y = torch.softmax(s, -1) @ v
        y = y.transpose(1, 2).reshape(B, T, C) if heads == "right" else y.reshape(B, T, C)
        return F.linear(y, w["attn.c_proj.weight"], w["attn.c_proj.bias"]) if proj else y

    def mlp(h: torch.Tensor) -> torch.Tensor:
        a = F.linear(h, w["mlp.c_fc.weight"], w["mlp.c_fc.bias"])
        a = F.gelu(a, approximate="tanh") if gelu == "tanh" else (
            F.gelu(a) if gelu == "exact" else torch.relu(a))
        return F.linear(a, w["mlp.c_proj.weight"], w["mlp.c_proj.bias"])

    if post_norm:
        x = ln("ln_1", x + attn(x))
        return ln("ln_2", x + mlp(x)).float()
    h = ln("ln_1", x)
    x = (h if residual == "ln" else x if residual == "x" else 0) + attn(h)
    h = ln(ln2, x)
    x = (h if residual == "ln" else x if residual == "x" else 0) + mlp(h)
    return x.float()


def _block_mistakes() -> list[Mistake]:
    def v(**kw: Any) -> Any:
        return lambda x, w, n: _block_variant(x, w, n, **kw)

    return [
        (v(post_norm=True),
         ("that is post-norm, the original transformer's order: norm(x + sublayer(x)). GPT-2 "
          "is pre-norm: normalise the sub-layer's INPUT and add its output to the raw x, "
          "x = x + attn(ln_1(x)), then x = x + mlp(ln_2(x)).")),
        (v(causal=False),
         ("every token attended to later tokens too. Mask the scores above the diagonal "
          "with -inf before the softmax, so that token t sees only tokens 0..t.")),
        (v(gelu="exact"),
         "you used the exact GELU; GPT-2's block uses the tanh one: F.gelu(h, approximate='tanh')."),
        (v(gelu="relu"), "you used ReLU; the feed-forward block uses GELU (the tanh version)."),
        (v(scale="none"),
         "the scores are not scaled: divide q @ k.T by sqrt(head_dim) before the softmax."),
        (v(scale="hd"), "you divided the scores by head_dim; divide by its square root."),
        (v(scale="C"),
         ("you divided the scores by sqrt(n_embd); each head's scores are divided by "
          "sqrt(head_dim), head_dim = n_embd // n_head.")),
        (v(heads="wrong"),
         ("the heads are cut wrongly. Each token's n_embd numbers are n_head pieces of "
          "head_dim side by side: view(B, T, n_head, head_dim).transpose(1, 2), and back "
          "with transpose(1, 2).reshape(B, T, n_embd). Reshaping straight to (B, n_head, T, "
          "head_dim) mixes tokens.")),
        (v(residual="ln"),
         ("the residual adds the block's input x, not its normalised copy: "
          "x = x + attn(ln_1(x)), not ln_1(x) + attn(ln_1(x)).")),
        (v(residual="none"),
         "the residual connections are missing: ADD each sub-layer's output to x."),
        (v(proj=False),
         ("you left out attention's output projection: the heads' outputs, side by side, "
          "go through attn.c_proj (weight and bias) before they are added to x.")),
        (v(ln2="ln_1"), "you used ln_1's weights before the MLP; that norm is ln_2."),
    ]


_BLOCK_T = ("the weights are stored as nn.Linear stores them, (out_features, in_features): "
            "use F.linear(h, weight, bias), which is h @ weight.T + bias.")


@register("gpt.block_forward", chapter=CHAPTER, kind="build",
          title="A pre-norm transformer block from a dictionary of weights")
def check_block_forward(fn: Any) -> str:
    """Random weights in Block's layout against llmbook.model.Block; causality by changing
    the last token; one token; several widths and head counts."""
    g = torch.Generator().manual_seed(7)
    for (B, T, d, n_head) in [(2, 6, 12, 3), (1, 9, 16, 4), (3, 1, 8, 2), (2, 5, 8, 1)]:
        w = _block_weights(d, n_head, g)
        x = torch.randn(B, T, d, generator=g)
        label = f"block_forward(x of shape {(B, T, d)}, weights, n_head={n_head})"
        given_w = {k: v.clone() for k, v in w.items()}
        given_x = x.clone()
        out = call(fn, given_x, given_w, n_head, label=label,
                   hints=[("cannot be multiplied", _BLOCK_T), ("KeyError", (
                       f"the weights are a dict with the keys {list(BLOCK_KEYS)}."))])
        out = tensor_answer(out, label, shape=x.shape,
                            hint="the block maps (batch, tokens, n_embd) to the same shape.")
        unchanged(label, [given_x, *given_w.values()], [x, *w.values()],
                  ("x", *(f"weights[{k!r}]" for k in w)))
        expected = _block_ref(x, w, n_head)
        if same(out, expected, atol=1e-4, rtol=1e-4):
            continue
        hint = known_mistake(out, _block_mistakes(), x, w, n_head, atol=1e-4, rtol=1e-4)
        raise mismatch(
            f"{label} differs from llmbook.model.Block with these weights (first values "
            f"shown).", head(expected, digits=4), head(out, digits=4),
            hint or "x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)), with causal multi-head "
                    "attention scaled by sqrt(head_dim) and the tanh GELU.")
    return (
        "Matches llmbook.model.Block loaded with the same weights, for 1 to 4 heads and 1 to "
        "9 tokens: pre-norm, causal, scaled by sqrt(head_dim), tanh GELU, and both "
        "residual connections."
    )


# --------------------------------------------------------------------------- sliding-window KV cache


def _band_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    window: int) -> torch.Tensor:
    """Every position attends to itself and the window - 1 positions before it."""
    T = q.shape[2]
    i = torch.arange(T)
    allowed = (i[None, :] <= i[:, None]) & (i[None, :] > i[:, None] - window)
    s = q.double() @ k.double().transpose(-2, -1) / math.sqrt(q.shape[-1])
    return (torch.softmax(s.masked_fill(~allowed, float("-inf")), -1) @ v.double()).float()


def _slide_out_mistakes(window: int) -> list[Mistake]:
    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: float) -> torch.Tensor:
        return torch.softmax(q @ k.transpose(-2, -1) * s, -1) @ v

    def grown(new: torch.Tensor, cache: torch.Tensor | None) -> torch.Tensor:
        return new if cache is None else torch.cat([cache, new], dim=2)

    def r(n: int) -> float:
        return 1 / math.sqrt(n)

    return [
        (lambda q, kn, vn, ck, cv: attend(q, grown(kn, ck), grown(vn, cv), r(q.shape[-1])),
         (f"the query attended to the new token and the whole old cache, {window} + 1 "
          f"tokens: trim to the last window = {window} tokens BEFORE attending (the new "
          f"token included).")),
        (lambda q, kn, vn, ck, cv: attend(q, ck, cv, r(q.shape[-1])),
         ("the new token attended only to the cached tokens. Append its key and value "
          "first: a token always looks at itself.")),
        (lambda q, kn, vn, ck, cv: attend(q, grown(kn, ck)[:, :, -window:],
                                          grown(vn, cv)[:, :, -window:], 1.0),
         "the scores are not scaled: divide q @ k.T by sqrt(head_dim) before the softmax."),
    ]


def _shape_hint(got_t: int, want_t: int, seen: int, window: int) -> str:
    if got_t == want_t + 1:
        return (f"your cache holds window + 1 = {window + 1} tokens: append the new token, "
                f"THEN keep the last window = {window} (cache[:, :, -window:]). Trimming "
                f"before appending, or not at all, leaves one too many.")
    if got_t == seen:
        return (f"your cache keeps every token seen ({seen}). A sliding window keeps only "
                f"the last window = {window}: cache[:, :, -window:] after appending.")
    if got_t == want_t - 1:
        return (f"your cache holds window - 1 = {window - 1} tokens; it holds at most "
                f"window = {window}, the new token included.")
    return (f"after {seen} tokens the cache holds min({seen}, window) = {want_t} tokens: "
            f"append along the time dimension (dim=2), then keep the last {window}.")


@register("gpt.sliding_kv_step", chapter=CHAPTER, kind="build",
          title="One generation step with a sliding-window key/value cache")
def check_sliding_kv_step(fn: Any) -> str:
    """Step through sequences longer than the window from an empty cache, comparing each
    output with banded causal attention and each cache with the last window keys."""
    g = torch.Generator().manual_seed(7)
    for B, H, T, D, window in [(1, 1, 7, 4, 3), (2, 3, 9, 8, 4), (1, 2, 5, 4, 1),
                               (1, 2, 4, 4, 8)]:
        q_all, k_all, v_all = (torch.randn(B, H, T, D, generator=g) for _ in range(3))
        band = _band_attention(q_all, k_all, v_all, window)
        cache_k = cache_v = None
        for t in range(T):
            q, k_new, v_new = (a[:, :, t:t + 1] for a in (q_all, k_all, v_all))
            state = ("no cache yet: cache_k and cache_v are None" if t == 0
                     else f"{cache_k.shape[2]} cached tokens" if cache_k is not None else "")
            label = (f"sliding_kv_step(q, k_new, v_new, cache_k, cache_v, window={window}) "
                     f"at step {t} (batch {B}, {H} heads, head_dim {D}, {state})")
            given = [q.clone(), k_new.clone(), v_new.clone(),
                     None if cache_k is None else cache_k.clone(),
                     None if cache_v is None else cache_v.clone()]
            first = ("at the first step cache_k and cache_v are None: then the cache is "
                     "just the new token.")
            result = call(fn, *given, window, label=label,
                          hints=[("NoneType", first)] if t == 0 else [])
            out, new_k, new_v = tensor_tuple(
                result, label, ("out", "cache_k", "cache_v"),
                hint="end with `return out, cache_k, cache_v`, the caches already trimmed.")
            unchanged(label, given, [q, k_new, v_new, cache_k, cache_v],
                      ("q", "k_new", "v_new", "cache_k", "cache_v"))
            lo = max(0, t + 1 - window)
            for name, got, full in (("cache_k", new_k, k_all), ("cache_v", new_v, v_all)):
                want = full[:, :, lo:t + 1]
                if tuple(got.shape) != tuple(want.shape):
                    raise CheckFailed(
                        f"{label}: the returned {name} has shape {tuple(got.shape)}, "
                        f"expected {tuple(want.shape)} (batch, heads, tokens kept, "
                        f"head_dim).\nHint: "
                        f"{_shape_hint(got.shape[2], want.shape[2], t + 1, window)}")
                if not torch.equal(got, want):
                    hint = "the cache must hold the last tokens' keys and values, in order."
                    if torch.equal(got, full[:, :, :want.shape[2]]):
                        hint = (f"you kept the OLDEST {window} tokens; a sliding window "
                                f"keeps the most recent: cache[:, :, -window:].")
                    elif torch.equal(got, want.flip(2)):
                        hint = "your cache is in reverse order: append new tokens at the end."
                    elif name == "cache_k" and torch.equal(got, v_all[:, :, lo:t + 1]):
                        hint = "you returned the values as the keys cache."
                    raise mismatch(f"{label}: the returned {name} is wrong (first values "
                                   f"shown).", head(want, digits=5), head(got, digits=5), hint)
            if tuple(out.shape) != (B, H, 1, D):
                raise CheckFailed(f"{label}: out has shape {tuple(out.shape)}, expected "
                                  f"{(B, H, 1, D)}: one vector per batch row and head.")
            ref = band[:, :, t:t + 1]
            if not same(out, ref):
                raise mismatch(
                    f"{label}: the attention output is wrong (first values shown).",
                    head(ref, digits=5), head(out, digits=5),
                    known_mistake(out, _slide_out_mistakes(window), q, k_new, v_new,
                                  cache_k, cache_v)
                    or "append, keep the last window tokens, then softmax(q @ K.T / "
                       "sqrt(head_dim)) @ V over them.")
            cache_k, cache_v = new_k, new_v
    return (
        "Step by step from an empty cache, each output equals banded causal attention (each "
        "token sees itself and the window - 1 before it), and the caches never hold more "
        "than window tokens, most recent last."
    )


# --------------------------------------------------------------------------- KV cache memory


def _kv_bytes_ref(cfg: GPTConfig, n_tokens: int, batch_size: int, bytes_per_value: int,
                  window: int | None = None) -> int:
    kept = n_tokens if window is None else min(n_tokens, window)
    return 2 * cfg.n_layer * cfg.n_embd * kept * batch_size * bytes_per_value


def _kv_bytes_hint(cfg: GPTConfig, n: int, b: int, nbytes: int, window: int | None,
                   got: int) -> str:
    expected = _kv_bytes_ref(cfg, n, b, nbytes, window)
    kept = n if window is None else min(n, window)
    if window is not None and got == _kv_bytes_ref(cfg, n, b, nbytes):
        return (f"with a sliding window of {window} the cache keeps only the last "
                f"min(n_tokens, window) = {kept} tokens, not all {n}.")
    if window is not None and got == _kv_bytes_ref(cfg, window, b, nbytes):
        return (f"only {n} tokens have been seen, fewer than the window of {window}: the "
                f"cache holds min(n_tokens, window) = {kept}.")
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
                f"holds only the tokens seen so far (at most the sliding window).")
    if got * 2 == expected * 3:
        return ("the cache keeps keys and values only (2 vectors per token per layer); queries "
                "are used once and thrown away.")
    return ("bytes = 2 (key and value) × n_layer × n_embd × tokens kept × batch_size × "
            "bytes_per_value, where tokens kept = min(n_tokens, window), or n_tokens when "
            "window is None.")


@register("gpt.kv_cache_bytes", chapter=CHAPTER, kind="formula",
          title="The memory a KV cache needs, with and without a sliding window")
def check_kv_cache_bytes(fn: Any) -> str:
    """GPT-2 small, GPT-3, a batch and an odd shape, fp32 and bf16, with and without a
    sliding window (shorter and longer than the text)."""
    gpt2, gpt3 = GPTConfig.from_preset("gpt2"), GPTConfig.from_preset("gpt3-175b")
    odd = GPTConfig(vocab_size=50, n_positions=64, n_embd=48, n_layer=3, n_head=6)
    cases = [
        (gpt2, 1024, 1, 4, None),
        (gpt2, 10, 1, 2, None),
        (gpt3, 2048, 1, 2, None),
        (GPTConfig.from_preset("gpt2-medium"), 300, 8, 2, None),
        (odd, 7, 3, 4, None),
        (gpt2, 1024, 1, 4, 256),
        (gpt3, 2048, 4, 2, 512),
        (odd, 7, 3, 4, 16),
    ]
    for cfg, n, b, nbytes, window in cases:
        label = (f"kv_cache_bytes(GPTConfig(n_layer={cfg.n_layer}, n_embd={cfg.n_embd}, "
                 f"n_head={cfg.n_head}, n_positions={cfg.n_positions}), n_tokens={n}, "
                 f"batch_size={b}, bytes_per_value={nbytes}, window={window})")
        expected = _kv_bytes_ref(cfg, n, b, nbytes, window)
        got = whole_number(call(fn, cfg, n, b, nbytes, window, label=label), label, expected)
        if got != expected:
            raise CheckFailed(
                f"{label} is wrong.\n  expected: {expected:,} bytes\n  got:      {got:,} "
                f"bytes\nHint: {_kv_bytes_hint(cfg, n, b, nbytes, window, got)}"
            )
    full = _kv_bytes_ref(gpt3, 2048, 1, 2)
    slid = _kv_bytes_ref(gpt3, 2048, 1, 2, 512)
    return (
        f"Exact in every case: a full 2,048-token window costs {full / 2**30:.1f} GiB for "
        f"GPT-3 in bf16 per sequence, a sliding window of 512 tokens {slid / 2**30:.2f} GiB."
    )


# --------------------------------------------------------------------------- experiment: copying

COPY_VOCAB, COPY_HALF = 16, 8
COPY_STEPS, COPY_BATCH, COPY_BUDGET, COPY_BOUND = 200, 32, 10_000, 0.1
SETTINGS = ("n_layer", "n_head", "n_embd", "lr")


def copy_batch(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` sequences of 8 random tokens followed by the same 8 again, as (x, y) next-token
    pairs of 15 tokens. Only the second half can be predicted, so the first half's targets
    are -100 (ignored)."""
    first = torch.randint(0, COPY_VOCAB, (n, COPY_HALF), generator=generator)
    seq = torch.cat([first, first], dim=1)
    x, y = seq[:, :-1], seq[:, 1:].clone()
    y[:, :COPY_HALF - 1] = -100
    return x, y


def copy_config(settings: dict[str, Any]) -> GPTConfig:
    """The GPT a settings dict describes, for the copy task (vocabulary 16, 15 positions)."""
    return GPTConfig(vocab_size=COPY_VOCAB, n_positions=2 * COPY_HALF - 1,
                     n_embd=int(settings["n_embd"]), n_layer=int(settings["n_layer"]),
                     n_head=int(settings["n_head"]), dropout=0.0)


def train_copy_task(settings: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Train the GPT that ``settings`` describes on the copy task: 200 AdamW steps of 32
    sequences at learning rate ``settings["lr"]``, seeded. Returns its parameter count,
    the training loss every 25 steps, and the held-out loss on 512 new sequences (nats
    per predictable token). This is exactly what the check runs."""
    torch.manual_seed(seed)
    model = GPT(copy_config(settings))
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(settings["lr"]),
                                  weight_decay=0.0)
    batches = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(COPY_STEPS):
        x, y = copy_batch(COPY_BATCH, batches)
        _, loss = model(x, targets=y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 0 or step == COPY_STEPS - 1:
            losses.append(round(loss.item(), 4))
    model.eval()
    with torch.no_grad():
        _, held = model(*copy_batch(512, torch.Generator().manual_seed(10_000 + seed)))
    return {"parameters": model.num_parameters(), "train_loss": losses,
            "held_out_loss": float(held)}


def _copy_settings(value: Any, label: str) -> dict[str, Any]:
    example = "{'n_layer': 1, 'n_head': 2, 'n_embd': 16, 'lr': 1e-3}"
    if not isinstance(value, dict) or sorted(value) != sorted(SETTINGS):
        raise CheckFailed(
            f"{label} should return a dict with exactly the keys {list(SETTINGS)}, but "
            f"returned {describe(value)}.\nHint: for example {example}.")
    for key in SETTINGS:
        v = value[key]
        ok = isinstance(v, numbers.Real) and not isinstance(v, bool)
        if key != "lr" and not (ok and float(v).is_integer() and 1 <= v <= 64):
            raise CheckFailed(f"{label}: {key} = {v!r} should be a whole number from 1 to "
                              f"64.\nHint: for example {example}.")
        if key == "lr" and not (ok and 0 < v <= 1):
            raise CheckFailed(f"{label}: lr = {v!r} should be a number between 0 and 1.\n"
                              f"Hint: AdamW's learning rates are usually 1e-4 to 1e-2.")
    if int(value["n_embd"]) % int(value["n_head"]):
        raise CheckFailed(
            f"{label}: n_embd = {value['n_embd']} is not divisible by n_head = "
            f"{value['n_head']}; each head gets head_dim = n_embd // n_head numbers.")
    if int(value["n_layer"]) > 4:
        raise CheckFailed(f"{label}: n_layer = {value['n_layer']}; use at most 4 blocks "
                          f"here (more would not fit the budget anyway).")
    return value


@register("gpt.copy_under_budget", chapter=CHAPTER, kind="experiment", time_limit=30,
          title="A GPT of at most 10,000 parameters that learns to copy")
def check_copy_under_budget(fn: Any) -> str:
    """Count the parameters of the learner's shape, train it with their learning rate
    (train_copy_task, seed 0) and measure the held-out loss."""
    label = "copy_settings()"
    settings = _copy_settings(call(fn, label=label), label)
    shown = ", ".join(f"{k}={settings[k]}" for k in SETTINGS)
    d, L, T = int(settings["n_embd"]), int(settings["n_layer"]), 2 * COPY_HALF - 1
    n_params = sum(p.numel() for p in GPT(copy_config(settings)).parameters())
    if n_params > COPY_BUDGET:
        formula = (COPY_VOCAB + T) * d + L * (12 * d * d + 13 * d) + 2 * d
        raise CheckFailed(
            f"{label} = {{{shown}}} describes a GPT of {n_params:,} parameters, over the "
            f"budget of {COPY_BUDGET:,}.\n  expected: at most {COPY_BUDGET:,}\n  got:      "
            f"{n_params:,}\nHint: chapter 7's count, (V + T)·d + L·(12d² + 13d) + 2d with "
            f"V = {COPY_VOCAB}, T = {T}, gives {formula:,} here; the 12d² term dominates, so "
            f"make n_embd smaller or use fewer blocks.")
    run = train_copy_task(settings)
    held = run["held_out_loss"]
    if math.isfinite(held) and held < COPY_BOUND:
        return (
            f"{{{shown}}}: {n_params:,} parameters (budget {COPY_BUDGET:,}); after "
            f"{COPY_STEPS} steps the held-out loss on the copied half is {held:.4f} nats "
            f"(bound {COPY_BOUND}; a uniform guess costs ln 16 = {math.log(16):.2f})."
        )
    curve = run["train_loss"]
    lr = float(settings["lr"])
    if not math.isfinite(held) or lr >= 0.05 or max(curve[len(curve) // 2:]) > curve[0]:
        hint = (f"the loss did not fall (or became nan): lr = {lr:g} is too large, and "
                f"every step overshoots. Try a learning rate 3 to 10 times smaller.")
    elif lr < 3e-3:
        hint = (f"the loss is still falling slowly: with only {COPY_STEPS} steps, lr = "
                f"{lr:g} is too small. Try 3e-3 to 1e-2 (AdamW copes with large rates on "
                f"a model this small).")
    elif d < 16:
        hint = (f"n_embd = {d} is very narrow: each token and position must fit into "
                f"{d} numbers. Spend the budget on width (16 to 24) with one block.")
    else:
        hint = ("try another learning rate between 3e-3 and 1e-2, or a wider model with "
                "fewer blocks: one block can already copy by attending to the position "
                "8 tokens back.")
    raise CheckFailed(
        f"{label} = {{{shown}}} ({n_params:,} parameters) does not learn to copy in "
        f"{COPY_STEPS} steps (seed 0).\n  expected: held-out loss below {COPY_BOUND} nats\n"
        f"  got:      {held:.4f} nats (training loss every 25 steps: {curve})\nHint: {hint}")
