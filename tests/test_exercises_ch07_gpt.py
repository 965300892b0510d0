"""Chapter 7's checks (``llmbook.exercises.checks.ch07_gpt``): the table that
test_exercises_checks.py runs."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

CHAPTER = "07"


def layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def feed_forward(x, w_fc, b_fc, w_proj, b_proj):
    return gelu_tanh(x @ w_fc.T + b_fc) @ w_proj.T + b_proj


def kv_cache_step(q, k_new, v_new, cache_k, cache_v):
    cache_k = k_new if cache_k is None else torch.cat([cache_k, k_new], dim=2)
    cache_v = v_new if cache_v is None else torch.cat([cache_v, v_new], dim=2)
    weights = torch.softmax(q @ cache_k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return weights @ cache_v, cache_k, cache_v


def kv_cache_bytes(config, n_tokens, batch_size=1, bytes_per_value=2):
    return 2 * config.n_layer * config.n_embd * n_tokens * batch_size * bytes_per_value


CORRECT = {
    "gpt.layer_norm": [layer_norm, lambda x, w, b, eps: F.layer_norm(x, x.shape[-1:], w, b, eps)],
    "gpt.gelu_tanh": [gelu_tanh, lambda x: F.gelu(x, approximate="tanh")],
    "gpt.feed_forward": [
        feed_forward,
        lambda x, wf, bf, wp, bp: F.linear(F.gelu(F.linear(x, wf, bf), approximate="tanh"), wp, bp),
    ],
    "gpt.kv_cache_step": [kv_cache_step],
    "gpt.kv_cache_bytes": [kv_cache_bytes],
}


def _centred(x):
    return x - x.mean(-1, keepdim=True)


def _ln_in_place(x, w, b, eps=1e-5):
    x -= x.mean(-1, keepdim=True)
    return x / torch.sqrt((x**2).mean(-1, keepdim=True) + eps) * w + b


C = math.sqrt(2 / math.pi)


def _step(attend_to_cache_only=False, scale=None, dim=-1, prepend=False, cat_dim=2,
          none_ok=True, values=True):
    def fn(q, k_new, v_new, cache_k, cache_v):
        if cache_k is None and not none_ok:
            cache_k, cache_v = torch.cat([cache_k, k_new], 2), None  # raises TypeError
        old_k, old_v = cache_k, cache_v
        if cache_k is None:
            cache_k, cache_v = k_new, v_new
        elif prepend:
            cache_k, cache_v = torch.cat([k_new, cache_k], cat_dim), torch.cat([v_new, cache_v], cat_dim)
        else:
            cache_k, cache_v = torch.cat([cache_k, k_new], cat_dim), torch.cat([cache_v, v_new], cat_dim)
        keys, vals = (old_k, old_v) if attend_to_cache_only and old_k is not None else (cache_k, cache_v)
        s = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
        w = torch.softmax(q @ keys.transpose(-2, -1) * s, dim=dim)
        return w @ (vals if values else keys), cache_k, cache_v

    return fn


MISTAKES = {
    "gpt.layer_norm": [
        (lambda x, w, b, eps=1e-5: _centred(x) / torch.sqrt(x.var(-1, keepdim=True) + eps) * w + b, "unbiased"),
        (lambda x, w, b, eps=1e-5: _centred(x) / (x.std(-1, keepdim=True, unbiased=False) + eps) * w + b,
         "inside the square root"),
        (lambda x, w, b, eps=1e-5: _centred(x) / x.std(-1, keepdim=True, unbiased=False) * w + b, "nan"),
        (lambda x, w, b, eps=1e-5: layer_norm(x, w, b, 1e-5), "use the argument"),
        (lambda x, w, b, eps=1e-5: layer_norm(x, torch.ones_like(w), torch.zeros_like(b), eps), "gain and bias"),
        (lambda x, w, b, eps=1e-5: layer_norm(x, w, torch.zeros_like(b), eps), "add the bias"),
        (lambda x, w, b, eps=1e-5: (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + eps) * w + b,
         "whole tensor"),
        (lambda x, w, b, eps=1e-5: _centred(x) / ((_centred(x) ** 2).mean(-1, keepdim=True) + eps) * w + b,
         "square root"),
        (lambda x, w, b, eps=1e-5: x.mean(-1), "shape"),
        (_ln_in_place, "in-place"),
    ],
    "gpt.gelu_tanh": [
        # names the input and both values
        (lambda x: F.gelu(x), ("exact GELU", "largest difference is at x =", "expected:", "got:")),
        (torch.relu, "ReLU"),
        (lambda x: 0.5 * x * (1 + torch.tanh(C * x)), "cubic term is missing"),
        (lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2) / math.pi * (x + 0.044715 * x**3))), "not sqrt(2)/π"),
        (lambda x: x * (1 + torch.tanh(C * (x + 0.044715 * x**3))), "factor 0.5"),
        (lambda x: 0.5 * (1 + torch.tanh(C * (x + 0.044715 * x**3))), "multiply by x"),
        (lambda x: [0.0] * len(x), "torch.Tensor"),
    ],
    "gpt.feed_forward": [
        (lambda x, wf, bf, wp, bp: x @ wf + bf, "(out_features, in_features)"),
        (lambda x, wf, bf, wp, bp: F.gelu(x @ wf.T + bf) @ wp.T + bp, "exact GELU"),
        (lambda x, wf, bf, wp, bp: torch.relu(x @ wf.T + bf) @ wp.T + bp, "ReLU"),
        (lambda x, wf, bf, wp, bp: (x @ wf.T + bf) @ wp.T + bp, "no activation"),
        (lambda x, wf, bf, wp, bp: gelu_tanh(x @ wf.T) @ wp.T + bp, "left out b_fc"),
        (lambda x, wf, bf, wp, bp: gelu_tanh(x @ wf.T + bf) @ wp.T, "left out b_proj"),
        (lambda x, wf, bf, wp, bp: (gelu_tanh(x @ wf.T) + bf) @ wp.T + bp, "before GELU"),
        (lambda x, wf, bf, wp, bp: gelu_tanh(gelu_tanh(x @ wf.T + bf) @ wp.T + bp), "no GELU after"),
    ],
    "gpt.kv_cache_step": [
        (_step(attend_to_cache_only=True), "attended only to the cached tokens"),
        (_step(scale=1.0), "not scaled"),
        (_step(scale=0.25), "divided the scores by head_dim"),
        (_step(dim=-2), "wrong dimension"),
        (_step(prepend=True), "in front"),
        (_step(cat_dim=-1), "time dimension"),
        (_step(none_ok=False), "None"),
        (_step(values=False), "multiply the values"),
        (lambda q, k, v, ck, cv: kv_cache_step(q, k, v, ck, cv)[0], "three tensors"),
    ],
    "gpt.kv_cache_bytes": [
        (lambda c, n, b=1, B=2: c.n_layer * c.n_embd * n * b * B, "AND a value"),
        (lambda c, n, b=1, B=2: 2 * c.n_embd * n * b * B, "n_layer"),
        (lambda c, n, b=1, B=2: 2 * c.n_layer * c.n_embd * n * b, "bytes_per_value"),
        (lambda c, n, b=1, B=2: 2 * c.n_layer * c.head_dim * n * b * B, "head_dim"),
        (lambda c, n, b=1, B=2: 2 * c.n_layer * c.n_embd * c.n_head * n * b * B, "n_embd / n_head"),
        (lambda c, n, b=1, B=2: 2 * c.n_layer * c.n_embd * c.n_positions * b * B, "context window"),
        (lambda c, n, b=1, B=2: 3 * c.n_layer * c.n_embd * n * b * B, "queries"),
        (lambda c, n, b=1, B=2: float(kv_cache_bytes(c, n, b, B)), "float"),
        (lambda c, n, b=1, B=2: 2 * c.n_layer * c.n_embd * n * B, "batch_size"),
    ],
}
