"""Chapter 7's checks (``llmbook.exercises.checks.ch07_gpt``): the table that
test_exercises_checks.py runs, and the experiment's margin on other seeds."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmbook.exercises.checks.ch07_gpt import (
    COPY_BOUND,
    _block_variant,
    train_copy_task,
)

CHAPTER = "07"


def rms_norm(x, weight, eps=1e-6):
    mean_square = (x * x).mean(dim=-1, keepdim=True)
    return x / torch.sqrt(mean_square + eps) * weight


def block_forward(x, weights, n_head):
    w = weights
    B, T, C = x.shape
    h = F.layer_norm(x, (C,), w["ln_1.weight"], w["ln_1.bias"], 1e-5)
    q, k, v = F.linear(h, w["attn.c_attn.weight"], w["attn.c_attn.bias"]).split(C, dim=-1)
    q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    y = y.transpose(1, 2).reshape(B, T, C)
    x = x + F.linear(y, w["attn.c_proj.weight"], w["attn.c_proj.bias"])
    h = F.layer_norm(x, (C,), w["ln_2.weight"], w["ln_2.bias"], 1e-5)
    h = F.gelu(F.linear(h, w["mlp.c_fc.weight"], w["mlp.c_fc.bias"]), approximate="tanh")
    return x + F.linear(h, w["mlp.c_proj.weight"], w["mlp.c_proj.bias"])


def sliding_kv_step(q, k_new, v_new, cache_k, cache_v, window):
    if cache_k is not None:
        k_new, v_new = torch.cat([cache_k, k_new], dim=2), torch.cat([cache_v, v_new], dim=2)
    cache_k, cache_v = k_new[:, :, -window:], v_new[:, :, -window:]
    w = torch.softmax(q @ cache_k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return w @ cache_v, cache_k, cache_v


def kv_cache_bytes(config, n_tokens, batch_size=1, bytes_per_value=2, window=None):
    kept = n_tokens if window is None else min(n_tokens, window)
    return 2 * config.n_layer * config.n_embd * kept * batch_size * bytes_per_value


def copy_settings():
    return {"n_layer": 1, "n_head": 2, "n_embd": 24, "lr": 1e-2}


CORRECT = {
    "gpt.rms_norm": [
        rms_norm,
        lambda x, w, eps=1e-6: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w,
    ],
    "gpt.block_forward": [
        block_forward,
        lambda x, w, n: _block_variant(x, w, n),
    ],
    "gpt.sliding_kv_step": [sliding_kv_step],
    "gpt.kv_cache_bytes": [
        kv_cache_bytes,
        lambda c, n, b=1, B=2, w=None: 2 * c.n_layer * c.n_embd * min(n, w or n) * b * B,
    ],
    "gpt.copy_under_budget": [
        copy_settings,
        lambda: {"n_layer": 2, "n_head": 2, "n_embd": 16, "lr": 1e-2},
    ],
}


def _centred(x):
    return x - x.mean(-1, keepdim=True)


def _rms_in_place(x, w, eps=1e-6):
    x /= torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return x * w


def _block(**kw):
    return lambda x, w, n: _block_variant(x, w, n, **kw)


def _block_transposed(x, w, n):
    return x @ w["attn.c_attn.weight"] + w["attn.c_attn.bias"]


def _slide(trim=None, keep="last", attend_before_trim=False, scale=True, none_ok=True):
    def fn(q, k_new, v_new, cache_k, cache_v, window):
        if cache_k is None and not none_ok:
            torch.cat([cache_k, k_new], 2)  # raises TypeError
        n = window if trim is None else trim(window)
        full_k = k_new if cache_k is None else torch.cat([cache_k, k_new], 2)
        full_v = v_new if cache_v is None else torch.cat([cache_v, v_new], 2)
        if keep == "last":
            ck, cv = full_k[:, :, -n:] if n else full_k, full_v[:, :, -n:] if n else full_v
        else:
            ck, cv = full_k[:, :, :n], full_v[:, :, :n]
        keys, vals = (full_k, full_v) if attend_before_trim else (ck, cv)
        s = 1 / math.sqrt(q.shape[-1]) if scale else 1.0
        return torch.softmax(q @ keys.transpose(-2, -1) * s, -1) @ vals, ck, cv

    return fn


def _slide_trim_first(q, k_new, v_new, cache_k, cache_v, window):
    if cache_k is not None:
        cache_k, cache_v = cache_k[:, :, -window:], cache_v[:, :, -window:]
        k_new, v_new = torch.cat([cache_k, k_new], 2), torch.cat([cache_v, v_new], 2)
    w = torch.softmax(q @ k_new.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1)
    return w @ v_new, k_new, v_new


MISTAKES = {
    "gpt.rms_norm": [
        (lambda x, w, eps=1e-6: _centred(x) / torch.sqrt(_centred(x).pow(2).mean(-1, keepdim=True)
                                                         + eps) * w,
         ("layer norm", "expected:", "got:", "random numbers")),
        (lambda x, w, eps=1e-6: x / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + eps) * w,
         "standard deviation"),
        (lambda x, w, eps=1e-6: x / (torch.sqrt(x.pow(2).mean(-1, keepdim=True)) + eps) * w,
         "inside"),
        (lambda x, w, eps=1e-6: x / torch.sqrt(x.pow(2).mean(-1, keepdim=True)) * w, "nan"),
        (lambda x, w, eps=1e-6: rms_norm(x, w, 1e-6), "use the argument"),
        (lambda x, w, eps=1e-6: rms_norm(x, torch.ones_like(w), eps), "gain"),
        (lambda x, w, eps=1e-6: x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps) * w,
         "MEAN of the squares"),
        (lambda x, w, eps=1e-6: x / torch.sqrt(x.pow(2).mean() + eps) * w, "whole tensor"),
        (lambda x, w, eps=1e-6: x.pow(2).mean(-1), "shape"),
        (_rms_in_place, "in-place"),
    ],
    "gpt.block_forward": [
        (_block(post_norm=True), ("post-norm", "block_forward(x of shape")),
        (_block(causal=False), "later tokens"),
        (_block(gelu="exact"), "exact GELU"),
        (_block(scale="none"), "not scaled"),
        (_block(scale="C"), "sqrt(n_embd)"),
        (_block(heads="wrong"), "heads are cut wrongly"),
        (_block(residual="ln"), "normalised copy"),
        (_block(residual="none"), "residual connections are missing"),
        (_block(proj=False), "output projection"),
        (_block(ln2="ln_1"), "ln_2"),
        (_block_transposed, "(out_features, in_features)"),
    ],
    "gpt.sliding_kv_step": [
        (_slide(trim=lambda w: 0), ("THEN keep the last", "window=3", "expected (1, 1, 3, 4)")),
        (_slide_trim_first, "Trimming before appending"),
        (_slide(trim=lambda w: max(w - 1, 1)), "window - 1"),
        (_slide(keep="first"), "OLDEST"),
        (_slide(attend_before_trim=True), "BEFORE attending"),
        (_slide(scale=False), "not scaled"),
        (_slide(none_ok=False), "None"),
        (lambda q, k, v, ck, cv, w: sliding_kv_step(q, k, v, ck, cv, w)[0], "three tensors"),
    ],
    "gpt.kv_cache_bytes": [
        (lambda c, n, b=1, B=2, w=None: kv_cache_bytes(c, n, b, B), "sliding window of"),
        (lambda c, n, b=1, B=2, w=None: kv_cache_bytes(c, w or n, b, B), "fewer than the window"),
        (lambda c, n, b=1, B=2, w=None: kv_cache_bytes(c, n, b, B, w) // 2, "AND a value"),
        (lambda c, n, b=1, B=2, w=None: kv_cache_bytes(c, n, b, B, w) // c.n_layer, "n_layer"),
        (lambda c, n, b=1, B=2, w=None: kv_cache_bytes(c, n, b, 1, w), "bytes_per_value"),
        (lambda c, n, b=1, B=2, w=None: kv_cache_bytes(c, n, b, B, w) * c.n_head,
         "n_embd / n_head"),
        (lambda c, n, b=1, B=2, w=None: kv_cache_bytes(c, c.n_positions, b, B), "context window"),
        (lambda c, n, b=1, B=2, w=None: float(kv_cache_bytes(c, n, b, B, w)), "float"),
        (lambda c, n, b=1, B=2, w=None: kv_cache_bytes(c, n, 1, B, w), "batch_size"),
        (lambda c, n, b=1: kv_cache_bytes(c, n, b), "positional argument"),
    ],
    "gpt.copy_under_budget": [
        (lambda: {"n_layer": 2, "n_head": 4, "n_embd": 32, "lr": 1e-2},
         ("over the budget", "26,464", "12d²")),
        (lambda: {"n_layer": 1, "n_head": 2, "n_embd": 24, "lr": 3e-4},
         ("does not learn to copy", "too small", "expected: held-out loss below")),
        (lambda: {"n_layer": 1, "n_head": 2, "n_embd": 24, "lr": 0.3}, "too large"),
        (lambda: {"n_layer": 1, "n_head": 5, "n_embd": 24, "lr": 1e-2}, "not divisible"),
        (lambda: {"n_layer": 1, "n_embd": 24, "lr": 1e-2}, "exactly the keys"),
        (lambda: [1, 2, 24, 1e-2], "exactly the keys"),
    ],
}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_reference_copies_with_a_margin_on_other_seeds(seed: int) -> None:
    run = train_copy_task(copy_settings(), seed=seed)
    assert run["parameters"] <= 10_000
    assert run["held_out_loss"] < COPY_BOUND / 5, run
