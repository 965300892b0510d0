"""Chapter 6's checks (``llmbook.exercises.checks.ch06_transformer``): the table that
test_exercises_checks.py runs, and the one test that does not fit it."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llmbook.exercises import check

CHAPTER = "06"


def sinusoidal_encoding(n_positions, d_model):
    position = torch.arange(n_positions, dtype=torch.float32).unsqueeze(1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float32)
    angle = position / 10000 ** (two_i / d_model)
    pe = torch.zeros(n_positions, d_model)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return pe


def layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    return weight * (x - mean) / torch.sqrt(var + eps) + bias


def decoder_mask(ids, pad_id):
    T = ids.shape[1]
    return torch.ones(T, T, dtype=torch.bool).tril() & (ids != pad_id)[:, None, None, :]


def make_cross_attention(*, keys_from_x=False, use_mask=True, invert_mask=False, scale="head",
                         project_out=True, single_head=False, swap_inputs=False):
    def cross_attention(x, memory, w_q, w_k, w_v, w_o, n_head, memory_mask):
        if swap_inputs:
            x, memory = memory, x
        if single_head:
            n_head = 1
        source = x if keys_from_x else memory
        B, Tq, d = x.shape
        Tk = source.shape[1]
        hd = d // n_head
        q = (x @ w_q).view(B, Tq, n_head, hd).transpose(1, 2)
        k = (source @ w_k).view(B, Tk, n_head, hd).transpose(1, 2)
        v = (source @ w_v).view(B, Tk, n_head, hd).transpose(1, 2)
        scores = q @ k.transpose(-2, -1)
        scores = scores / {"head": math.sqrt(hd), "model": math.sqrt(d), "none": 1.0}[scale]
        if use_mask and memory_mask is not None:
            mask = ~memory_mask if invert_mask else memory_mask
            scores = scores.masked_fill(~mask, float("-inf"))
        out = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, Tq, d)
        return out @ w_o if project_out else out

    return cross_attention


def fused_cross_attention(x, memory, w_q, w_k, w_v, w_o, n_head, memory_mask):
    """A different but correct route: PyTorch's fused attention."""
    B, Tq, d = x.shape
    Tk = memory.shape[1]
    q = (x @ w_q).view(B, Tq, n_head, -1).transpose(1, 2)
    k = (memory @ w_k).view(B, Tk, n_head, -1).transpose(1, 2)
    v = (memory @ w_v).view(B, Tk, n_head, -1).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=memory_mask)
    return out.transpose(1, 2).reshape(B, Tq, d) @ w_o


CORRECT = {
    "transformer.sinusoidal_encoding": [
        sinusoidal_encoding,
        lambda n, d: sinusoidal_encoding(n, d).double(),
        lambda n, d: sinusoidal_encoding(n, d).numpy(),
    ],
    "transformer.layer_norm": [layer_norm],
    "transformer.decoder_mask": [decoder_mask],
    "transformer.cross_attention": [make_cross_attention(), fused_cross_attention],
}


def _variant(n, d, first=torch.sin, second=torch.cos, exponent=lambda i2, d: i2 / d):
    position = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    angle = position / 10000 ** exponent(torch.arange(0, d, 2, dtype=torch.float32), d)
    pe = torch.zeros(n, d)
    pe[:, 0::2] = first(angle)
    pe[:, 1::2] = second(angle[:, : d // 2])
    return pe


def _concat(n, d):
    pe = _variant(n, d)
    return torch.cat([pe[:, 0::2], pe[:, 1::2]], dim=1)


def _even_only(n, d):
    position = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    angle = position / 10000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)  # fails when d is odd
    return pe


def _zero_last(n, d):
    pe = sinusoidal_encoding(n, d)
    if d % 2:
        pe[:, -1] = 0
    return pe


def _unbiased(x, w, b, eps=1e-5):
    return w * (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + eps) + b


def _eps_outside(x, w, b, eps=1e-5):
    std = x.var(-1, keepdim=True, unbiased=False).sqrt()
    return w * (x - x.mean(-1, keepdim=True)) / (std + eps) + b


def _plain(x, w, b, eps=1e-5):
    return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + eps)


def _ln_in_place(x, w, b, eps=1e-5):
    x -= x.mean(-1, keepdim=True)
    return w * x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + eps) + b


def _mask(ids, pad_id, triangle=0, keys=True):
    T = ids.shape[1]
    padding = (ids != pad_id)[:, None, None, :] if keys else (ids != pad_id)[:, None, :, None]
    return torch.ones(T, T, dtype=torch.bool).tril(triangle) & padding


def _causal_only(ids, pad_id):
    T = ids.shape[1]
    return torch.ones(T, T, dtype=torch.bool).tril().expand(ids.shape[0], 1, T, T)


MISTAKES = {
    "transformer.sinusoidal_encoding": [
        (lambda n, d: _variant(n, d, first=torch.cos, second=torch.sin), "swapped"),
        (lambda n, d: _variant(n, d, exponent=lambda i2, d: (i2 / 2) / d), "2i/d_model"),
        (_concat, "interleaves"),
        (lambda n, d: sinusoidal_encoding(n, d).T, "wrong way round"),
        (_even_only, ("sinusoidal_encoding(7, 5)", "raised")),
        (_zero_last, ("last one is not", "odd d_model")),
    ],
    "transformer.layer_norm": [
        (_unbiased, "unbiased variance"),
        (_eps_outside, "inside the square root"),
        (_plain, "gain and bias"),
        (lambda x, w, b, eps=1e-5: F.layer_norm(x, w.shape, w, b, eps), "build it"),
        (_ln_in_place, "in place"),
    ],
    "transformer.decoder_mask": [
        (_causal_only, "causal part only"),
        (lambda ids, p: ~decoder_mask(ids, p), "upside down"),
        (lambda ids, p: decoder_mask(ids, p)[:, 0], "head dimension"),
        (lambda ids, p: _mask(ids, p, keys=False), "queries"),
        (lambda ids, p: _mask(ids, p, triangle=-1), "look at itself"),
        (lambda ids, p: decoder_mask(ids, p).long(), "boolean"),
    ],
    "transformer.cross_attention": [
        (make_cross_attention(keys_from_x=True), "keys and values from x"),
        (make_cross_attention(use_mask=False), "memory_mask was ignored"),
        (make_cross_attention(invert_mask=True), "upside down"),
        (make_cross_attention(scale="model"), "not by sqrt(d_model)"),
        (make_cross_attention(scale="none"), "forgot to scale"),
        (make_cross_attention(project_out=False), "output projection"),
        (make_cross_attention(single_head=True), "single head"),
        (make_cross_attention(swap_inputs=True), "x and memory are swapped"),
    ],
}


def test_layer_norm_check_restores_the_library_layer_norm_it_refuses() -> None:
    """While the learner's layer norm runs, PyTorch's refuses to help; afterwards it works."""
    assert not check("transformer.layer_norm", lambda x, w, b, eps=1e-5: F.layer_norm(x, w.shape, w, b, eps))
    x = torch.randn(2, 4)
    torch.testing.assert_close(F.layer_norm(x, (4,)), layer_norm(x, torch.ones(4), torch.zeros(4)))
    torch.testing.assert_close(torch.layer_norm(x, (4,)), layer_norm(x, torch.ones(4), torch.zeros(4)))
