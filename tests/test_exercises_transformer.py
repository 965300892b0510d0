"""Chapter 6's checks: right answers pass, the usual wrong answers fail with the right hint."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmbook.exercises import check, checks_for_chapter

# --------------------------------------------------------------------------- reference answers


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
                         project_out=True, single_head=False):
    def cross_attention(x, memory, w_q, w_k, w_v, w_o, n_head, memory_mask):
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


def run(name, answer):
    return check(name, answer)


def assert_fails_with(name, answer, *fragments):
    result = run(name, answer)
    assert not result.passed, f"{name} passed a wrong answer"
    for fragment in fragments:
        assert fragment in result.feedback, f"{fragment!r} not in feedback:\n{result.feedback}"
    return result


# --------------------------------------------------------------------------- registry


def test_chapter_six_registers_four_checks():
    names = [c.name for c in checks_for_chapter("06")]
    assert names == [
        "transformer.sinusoidal_encoding",
        "transformer.layer_norm",
        "transformer.decoder_mask",
        "transformer.cross_attention",
    ]


# --------------------------------------------------------------------------- sinusoidal encoding


def test_sinusoidal_reference_passes():
    assert run("transformer.sinusoidal_encoding", sinusoidal_encoding).passed


def test_sinusoidal_float64_and_numpy_pass():
    assert run("transformer.sinusoidal_encoding", lambda n, d: sinusoidal_encoding(n, d).double()).passed
    assert run("transformer.sinusoidal_encoding", lambda n, d: sinusoidal_encoding(n, d).numpy()).passed


def _variant(n, d, first=torch.sin, second=torch.cos, exponent=lambda i2, d: i2 / d):
    position = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    angle = position / 10000 ** exponent(torch.arange(0, d, 2, dtype=torch.float32), d)
    pe = torch.zeros(n, d)
    pe[:, 0::2] = first(angle)
    pe[:, 1::2] = second(angle[:, : d // 2])
    return pe


def test_sinusoidal_swapped_sin_cos():
    assert_fails_with("transformer.sinusoidal_encoding",
                      lambda n, d: _variant(n, d, first=torch.cos, second=torch.sin), "swapped")


def test_sinusoidal_exponent_i_instead_of_2i():
    assert_fails_with("transformer.sinusoidal_encoding",
                      lambda n, d: _variant(n, d, exponent=lambda i2, d: (i2 / 2) / d), "2i/d_model")


def test_sinusoidal_concatenated_layout():
    def concat(n, d):
        pe = _variant(n, d)
        return torch.cat([pe[:, 0::2], pe[:, 1::2]], dim=1)

    assert_fails_with("transformer.sinusoidal_encoding", concat, "interleaves")


def test_sinusoidal_transposed():
    assert_fails_with("transformer.sinusoidal_encoding", lambda n, d: sinusoidal_encoding(n, d).T,
                      "wrong way round")


def test_sinusoidal_odd_width_crash_is_reported():
    def even_only(n, d):
        position = torch.arange(n, dtype=torch.float32).unsqueeze(1)
        angle = position / 10000 ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
        pe = torch.zeros(n, d)
        pe[:, 0::2] = torch.sin(angle)
        pe[:, 1::2] = torch.cos(angle)  # fails when d is odd
        return pe

    assert_fails_with("transformer.sinusoidal_encoding", even_only, "sinusoidal_encoding(7, 5)", "raised")


def test_sinusoidal_odd_width_wrong_last_column():
    def zero_last(n, d):
        pe = sinusoidal_encoding(n, d)
        if d % 2:
            pe[:, -1] = 0
        return pe

    assert_fails_with("transformer.sinusoidal_encoding", zero_last, "last one is not", "odd d_model")


def test_sinusoidal_stub_is_not_written():
    def stub(n, d):
        raise NotImplementedError("Write your solution here")

    assert_fails_with("transformer.sinusoidal_encoding", stub, "not written")


# --------------------------------------------------------------------------- layer norm


def test_layer_norm_reference_passes():
    assert run("transformer.layer_norm", layer_norm).passed


def test_layer_norm_unbiased_variance():
    def unbiased(x, w, b, eps=1e-5):
        return w * (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + eps) + b

    assert_fails_with("transformer.layer_norm", unbiased, "unbiased variance")


def test_layer_norm_eps_outside_the_root():
    def outside(x, w, b, eps=1e-5):
        std = x.var(-1, keepdim=True, unbiased=False).sqrt()
        return w * (x - x.mean(-1, keepdim=True)) / (std + eps) + b

    assert_fails_with("transformer.layer_norm", outside, "inside the square root")


def test_layer_norm_without_gain_and_bias():
    def plain(x, w, b, eps=1e-5):
        return (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + eps)

    assert_fails_with("transformer.layer_norm", plain, "gain and bias")


def test_layer_norm_library_call_is_refused_and_restored():
    assert_fails_with("transformer.layer_norm", lambda x, w, b, eps=1e-5: F.layer_norm(x, w.shape, w, b, eps),
                      "build it")
    x = torch.randn(2, 4)
    torch.testing.assert_close(F.layer_norm(x, (4,)), layer_norm(x, torch.ones(4), torch.zeros(4)))


def test_layer_norm_in_place_is_reported():
    def in_place(x, w, b, eps=1e-5):
        x -= x.mean(-1, keepdim=True)
        return w * x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + eps) + b

    assert_fails_with("transformer.layer_norm", in_place, "in place")


# --------------------------------------------------------------------------- decoder mask


def test_decoder_mask_reference_passes():
    assert run("transformer.decoder_mask", decoder_mask).passed


def test_decoder_mask_causal_only():
    def causal_only(ids, pad_id):
        T = ids.shape[1]
        return torch.ones(T, T, dtype=torch.bool).tril().expand(ids.shape[0], 1, T, T)

    assert_fails_with("transformer.decoder_mask", causal_only, "causal part only")


def test_decoder_mask_inverted():
    assert_fails_with("transformer.decoder_mask", lambda ids, p: ~decoder_mask(ids, p), "upside down")


def test_decoder_mask_missing_head_dimension():
    assert_fails_with("transformer.decoder_mask", lambda ids, p: decoder_mask(ids, p)[:, 0], "head dimension")


def test_decoder_mask_padding_on_queries():
    def on_queries(ids, pad_id):
        T = ids.shape[1]
        return torch.ones(T, T, dtype=torch.bool).tril() & (ids != pad_id)[:, None, :, None]

    assert_fails_with("transformer.decoder_mask", on_queries, "queries")


def test_decoder_mask_strict_triangle():
    def strict(ids, pad_id):
        T = ids.shape[1]
        return torch.ones(T, T, dtype=torch.bool).tril(-1) & (ids != pad_id)[:, None, None, :]

    assert_fails_with("transformer.decoder_mask", strict, "look at itself")


def test_decoder_mask_integer_dtype():
    assert_fails_with("transformer.decoder_mask", lambda ids, p: decoder_mask(ids, p).long(), "boolean")


# --------------------------------------------------------------------------- cross-attention


def test_cross_attention_reference_passes():
    assert run("transformer.cross_attention", make_cross_attention()).passed
    assert run("transformer.cross_attention", fused_cross_attention).passed


@pytest.mark.parametrize(
    ("mistake", "fragment"),
    [
        ({"keys_from_x": True}, "keys and values from x"),
        ({"use_mask": False}, "memory_mask was ignored"),
        ({"invert_mask": True}, "upside down"),
        ({"scale": "model"}, "not by sqrt(d_model)"),
        ({"scale": "none"}, "forgot to scale"),
        ({"project_out": False}, "output projection"),
        ({"single_head": True}, "single head"),
    ],
)
def test_cross_attention_mistakes(mistake, fragment):
    assert_fails_with("transformer.cross_attention", make_cross_attention(**mistake), fragment)


def test_cross_attention_x_and_memory_swapped():
    def swapped(x, memory, w_q, w_k, w_v, w_o, n_head, memory_mask):
        return make_cross_attention()(memory, x, w_q, w_k, w_v, w_o, n_head, memory_mask)

    assert_fails_with("transformer.cross_attention", swapped, "x and memory are swapped")
