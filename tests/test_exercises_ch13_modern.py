"""Chapter 13's checks (``llmbook.exercises.checks.ch13_modern``): the table that
test_exercises_checks.py runs, and the experiment's own tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmbook.exercises import check
from llmbook.layers import apply_rotary, rotary_cos_sin

CHAPTER = "13"


def rotate(x, positions, theta=10000.0):
    d = x.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2).float() / d)
    angles = positions[:, None].float() * freqs
    cos, sin = angles.cos(), angles.sin()
    a, b = x[..., : d // 2], x[..., d // 2 :]
    return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)


def rotate_with_llmbook(x, positions, theta=10000.0):
    cos, sin = rotary_cos_sin(positions[None], x.shape[-1], theta)  # (1, T, d)
    shaped = x.reshape(-1, 1, *x.shape[-2:])  # apply_rotary wants (B, heads, T, d)
    return apply_rotary(shaped, cos, sin).reshape(x.shape)


def route(logits, k):
    probs = logits.softmax(dim=-1)
    weights, experts = probs.topk(k, dim=-1)
    weights = weights / weights.sum(dim=-1, keepdim=True)
    n, e = logits.shape
    f = F.one_hot(experts, e).sum(dim=(0, 1)).float() / (n * k)
    return weights, experts, e * (f * probs.mean(dim=0)).sum()


def sliding_window_mask(t, window):
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    return (j <= i) & (i - j < window)


def kv_cache_bytes(config, n_tokens, batch_size, bytes_per_number):
    head_dim = config["n_embd"] // config["n_head"]
    kv_heads = config["n_kv_head"] or config["n_head"]
    return 2 * config["n_layer"] * kv_heads * head_dim * n_tokens * batch_size * bytes_per_number


def settings():
    return {"positions": "rope", "n_kv_head": 2}


CORRECT = {
    "modern.rotary": [
        rotate,
        rotate_with_llmbook,
        lambda x, p, t: rotate(x.double(), p, t),  # computed in float64 is fine
    ],
    "modern.moe_route": [
        route,
        lambda lg, k: (lambda w, e, a: (w, e, a.reshape(1)))(*route(lg, k)),  # a 1-element loss
        lambda lg, k: (lambda w, e, a: [w.double(), e, a])(*route(lg, k)),  # a list, float64
    ],
    "modern.sliding_window": [
        sliding_window_mask,
        lambda t, w: torch.ones(t, t, dtype=torch.bool).tril() & ~torch.ones(t, t, dtype=torch.bool).tril(-w),
    ],
    "modern.kv_cache_bytes": [
        kv_cache_bytes,
        lambda c, t, b, s: float(kv_cache_bytes(c, t, b, s)),  # a whole float is fine
    ],
    "modern.read_beyond": [
        settings,
        lambda: {"positions": "rope", "n_kv_head": 1, "norm": "rmsnorm", "mlp": "swiglu"},
    ],
}


def _interleaved(x, positions, theta=10000.0):
    d = x.shape[-1]
    perm = torch.stack([torch.arange(d // 2), torch.arange(d // 2, d)], 1).flatten()
    inverse = torch.argsort(perm)
    return rotate(x[..., inverse], positions, theta)[..., perm]


def _not_renormalised(logits, k):
    probs = logits.softmax(dim=-1)
    weights, experts = probs.topk(k, dim=-1)
    return weights, experts, route(logits, k)[2]


def _per_token_fraction(logits, k):
    w, e, _ = route(logits, k)
    n, n_exp = logits.shape
    f = F.one_hot(e, n_exp).sum(dim=(0, 1)).float() / n
    return w, e, n_exp * (f * logits.softmax(-1).mean(0)).sum()


MISTAKES = {
    "modern.rotary": [
        # The chapter's own layout (2i, 2i+1) instead of (i, i + d/2): names it, shows both.
        (_interleaved, ("neighbouring dimensions", "rotate(x of shape", "expected:", "got:")),
        (lambda x, p, t: rotate(x, -p, t), "wrong way"),
        (lambda x, p, t: rotate(x, torch.arange(len(p)), t), "instead of the `positions` given"),
        (lambda x, p, t: rotate(x, p, 10000.0), "theta = 10000 whatever"),
        (lambda x, p, t: rotate(x, p.float() / 2, t), "rotate(x of shape"),  # unknown: still named
    ],
    "modern.moe_route": [
        (_not_renormalised, ("add up to 1", "the weights are wrong", "expected:")),
        (lambda lg, k: (lambda w, e, a: (w, e, a / lg.shape[1]))(*route(lg, k)), "factor E"),
        (_per_token_fraction, "divided the counts by N only"),
        (
            lambda lg, k: (lambda w, e, a: (w, e.flip(-1), a))(*route(lg, k)) if k > 1 else route(lg, k),
            "in another order",
        ),
        (lambda lg, k: route(lg, k)[:2], "should return three tensors"),
    ],
    "modern.sliding_window": [
        (lambda t, w: sliding_window_mask(t, w + 1), ("one key too many", "sliding_window_mask(T=")),
        (lambda t, w: (torch.arange(t)[:, None] - torch.arange(t)[None, :]).abs() < w, "causal"),
        (lambda t, w: ~sliding_window_mask(t, w), "inverted"),
        (lambda t, w: sliding_window_mask(t, w).float(), "boolean mask"),
    ],
    "modern.kv_cache_bytes": [
        (
            lambda c, t, b, s: 2 * c["n_layer"] * c["n_embd"] * t * b * s,
            ("every query head", "kv_cache_bytes({", "expected:", "got:"),
        ),
        (lambda c, t, b, s: kv_cache_bytes(c, t, b, s) // 2, "keys only"),
        (lambda c, t, b, s: kv_cache_bytes(c, t, b, s) // b, "batch"),
        (lambda c, t, b, s: kv_cache_bytes(c, t, b, s) * 8, "bits"),
    ],
    "modern.read_beyond": [
        (lambda: {"n_kv_head": 2}, ("learned positions", "target:", "Measured")),
        (lambda: {"positions": "rope"}, "n_kv_head <= 2"),
        (lambda: {"positions": "rope", "n_kv_head": 3}, "must divide 4"),
        (lambda: {"positions": "alibi"}, "choose one of"),
        (lambda: {"positions": "rope", "n_kv_head": 2, "lr": 0.03}, "above the target"),
        (lambda: ("rope", 2), "should return a dict"),
    ],
}


def test_the_experiment_fits_its_time_limit_and_separates_the_position_schemes():
    """The experiment's measured losses (tested with its real training): rotary positions
    with grouped queries meet the target by a margin, learned positions miss it."""
    import time

    from llmbook.exercises.checks import ch13_modern

    start = time.process_time()
    rope = ch13_modern._exp_run({"positions": "rope", "n_kv_head": 2}, 3e-3)
    seconds = time.process_time() - start
    gpt2 = ch13_modern._exp_run({}, 3e-3)
    assert rope[1] < ch13_modern.EXP_TARGET - 0.03 < gpt2[1] - 0.06, (rope, gpt2)
    assert round(gpt2[1], 2) == 2.68  # as the exercise says
    assert seconds < 10, seconds
    assert check("modern.read_beyond", settings).passed
