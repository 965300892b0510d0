"""Chapter 7's checks (``llmbook.exercises.gpt``): correct answers pass, and the usual
mistakes fail with a hint that names them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmbook.config import GPTConfig
from llmbook.exercises import check, checks_for_chapter
from llmbook.exercises.core import REPORT_ENV, TIMEOUT_ENV

NAMES = ["gpt.layer_norm", "gpt.gelu_tanh", "gpt.feed_forward", "gpt.kv_cache_step",
         "gpt.kv_cache_bytes"]


@pytest.fixture(autouse=True)
def _no_grading_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REPORT_ENV, raising=False)
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)


# --------------------------------------------------------------------------- reference answers


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
    "gpt.layer_norm": layer_norm,
    "gpt.gelu_tanh": gelu_tanh,
    "gpt.feed_forward": feed_forward,
    "gpt.kv_cache_step": kv_cache_step,
    "gpt.kv_cache_bytes": kv_cache_bytes,
}


def failing(name: str, answer) -> str:
    result = check(name, answer)
    assert not result.passed, f"{name} accepted a wrong answer"
    return result.feedback


# --------------------------------------------------------------------------- correct answers


def test_chapter_7_registers_the_five_checks_in_order() -> None:
    assert [c.name for c in checks_for_chapter("07")] == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_correct_answers_pass(name: str) -> None:
    result = check(name, CORRECT[name])
    assert result.passed, result.feedback
    assert result.points == result.max_points == 1


def test_library_equivalents_pass() -> None:
    assert check("gpt.layer_norm", lambda x, w, b, eps: F.layer_norm(x, x.shape[-1:], w, b, eps))
    assert check("gpt.gelu_tanh", lambda x: F.gelu(x, approximate="tanh"))
    assert check("gpt.feed_forward", lambda x, wf, bf, wp, bp: F.linear(
        F.gelu(F.linear(x, wf, bf), approximate="tanh"), wp, bp))


def test_the_reference_kv_step_equals_full_causal_attention() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 6, 4, generator=g) for _ in range(3))
    full = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    cache_k = cache_v = None
    for t in range(6):
        out, cache_k, cache_v = kv_cache_step(q[:, :, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1],
                                              cache_k, cache_v)
        torch.testing.assert_close(out, full[:, :, t:t + 1])


# --------------------------------------------------------------------------- layer norm mistakes


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda x, w, b, eps=1e-5: (x - x.mean(-1, keepdim=True))
         / torch.sqrt(x.var(-1, keepdim=True) + eps) * w + b, "unbiased"),
        (lambda x, w, b, eps=1e-5: (x - x.mean(-1, keepdim=True))
         / (x.std(-1, keepdim=True, unbiased=False) + eps) * w + b, "inside the square root"),
        (lambda x, w, b, eps=1e-5: (x - x.mean(-1, keepdim=True))
         / x.std(-1, keepdim=True, unbiased=False) * w + b, "nan"),
        (lambda x, w, b, eps=1e-5: layer_norm(x, w, b, 1e-5), "use the argument"),
        (lambda x, w, b, eps=1e-5: layer_norm(x, torch.ones_like(w), torch.zeros_like(b), eps),
         "gain and bias"),
        (lambda x, w, b, eps=1e-5: layer_norm(x, w, torch.zeros_like(b), eps), "add the bias"),
        (lambda x, w, b, eps=1e-5: (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + eps) * w + b,
         "whole tensor"),
        (lambda x, w, b, eps=1e-5: (x - x.mean(-1, keepdim=True))
         / (((x - x.mean(-1, keepdim=True)) ** 2).mean(-1, keepdim=True) + eps) * w + b,
         "square root"),
        (lambda x, w, b, eps=1e-5: x.mean(-1), "shape"),
    ],
)
def test_layer_norm_mistakes_get_their_hint(wrong, hint) -> None:
    assert hint in failing("gpt.layer_norm", wrong)


def test_layer_norm_that_changes_its_input_in_place_fails() -> None:
    def in_place(x, w, b, eps=1e-5):
        x -= x.mean(-1, keepdim=True)
        return x / torch.sqrt((x**2).mean(-1, keepdim=True) + eps) * w + b

    assert "in-place" in failing("gpt.layer_norm", in_place)


# --------------------------------------------------------------------------- GELU mistakes


C = math.sqrt(2 / math.pi)


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda x: F.gelu(x), "exact GELU"),
        (torch.relu, "ReLU"),
        (lambda x: 0.5 * x * (1 + torch.tanh(C * x)), "cubic term is missing"),
        (lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2) / math.pi * (x + 0.044715 * x**3))),
         "not sqrt(2)/π"),
        (lambda x: x * (1 + torch.tanh(C * (x + 0.044715 * x**3))), "factor 0.5"),
        (lambda x: 0.5 * (1 + torch.tanh(C * (x + 0.044715 * x**3))), "multiply by x"),
        (lambda x: [0.0] * len(x), "torch.Tensor"),
    ],
)
def test_gelu_mistakes_get_their_hint(wrong, hint) -> None:
    assert hint in failing("gpt.gelu_tanh", wrong)


def test_gelu_feedback_names_the_input_and_both_values() -> None:
    feedback = failing("gpt.gelu_tanh", lambda x: F.gelu(x))
    assert "largest difference is at x =" in feedback
    assert "expected:" in feedback and "got:" in feedback


# --------------------------------------------------------------------------- feed-forward mistakes


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda x, wf, bf, wp, bp: x @ wf + bf, "(out_features, in_features)"),
        (lambda x, wf, bf, wp, bp: F.gelu(x @ wf.T + bf) @ wp.T + bp, "exact GELU"),
        (lambda x, wf, bf, wp, bp: torch.relu(x @ wf.T + bf) @ wp.T + bp, "ReLU"),
        (lambda x, wf, bf, wp, bp: (x @ wf.T + bf) @ wp.T + bp, "no activation"),
        (lambda x, wf, bf, wp, bp: gelu_tanh(x @ wf.T) @ wp.T + bp, "left out b_fc"),
        (lambda x, wf, bf, wp, bp: gelu_tanh(x @ wf.T + bf) @ wp.T, "left out b_proj"),
        (lambda x, wf, bf, wp, bp: (gelu_tanh(x @ wf.T) + bf) @ wp.T + bp, "before GELU"),
        (lambda x, wf, bf, wp, bp: gelu_tanh(gelu_tanh(x @ wf.T + bf) @ wp.T + bp),
         "no GELU after"),
    ],
)
def test_feed_forward_mistakes_get_their_hint(wrong, hint) -> None:
    assert hint in failing("gpt.feed_forward", wrong)


# --------------------------------------------------------------------------- KV cache step mistakes


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


@pytest.mark.parametrize(
    "wrong, hint",
    [
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
)
def test_kv_cache_step_mistakes_get_their_hint(wrong, hint) -> None:
    assert hint in failing("gpt.kv_cache_step", wrong)


# --------------------------------------------------------------------------- KV cache bytes mistakes


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda c, n, b=1, B=2: c.n_layer * c.n_embd * n * b * B, "AND a value"),
        (lambda c, n, b=1, B=2: 2 * c.n_embd * n * b * B, "n_layer"),
        (lambda c, n, b=1, B=2: 2 * c.n_layer * c.n_embd * n * b, "bytes_per_value"),
        (lambda c, n, b=1, B=2: 2 * c.n_layer * c.head_dim * n * b * B, "head_dim"),
        (lambda c, n, b=1, B=2: 2 * c.n_layer * c.n_embd * c.n_head * n * b * B, "n_embd / n_head"),
        (lambda c, n, b=1, B=2: 2 * c.n_layer * c.n_embd * c.n_positions * b * B, "context window"),
        (lambda c, n, b=1, B=2: 3 * c.n_layer * c.n_embd * n * b * B, "queries"),
        (lambda c, n, b=1, B=2: float(kv_cache_bytes(c, n, b, B)), "float"),
    ],
)
def test_kv_cache_bytes_mistakes_get_their_hint(wrong, hint) -> None:
    assert hint in failing("gpt.kv_cache_bytes", wrong)


def test_kv_cache_bytes_batch_mistake_is_named() -> None:
    wrong = lambda c, n, b=1, B=2: 2 * c.n_layer * c.n_embd * n * B
    assert "batch_size" in failing("gpt.kv_cache_bytes", wrong)


def test_kv_cache_bytes_passes_for_gpt3_in_the_chapter() -> None:
    cfg = GPTConfig.from_preset("gpt3-175b")
    assert kv_cache_bytes(cfg, 2048, 1, 2) == 2 * 96 * 12288 * 2048 * 2
