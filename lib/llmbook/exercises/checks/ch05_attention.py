"""Checks for chapter 5, "Attention".

Four exercises extend what the chapter built. A sliding-window mask (each token sees
itself and the ``window - 1`` tokens before it) and causal attention over a batch padded
on the left (padding keys hidden, padding queries answered with zeros) are masks the
chapter explained but did not write. A whole causal multi-head attention layer, from
raw GPT-2-layout weights with its own head split and merge, must agree with
``llmbook.attention.CausalSelfAttention``. The experiment hands the check settings
(width, heads, learning rate, window) for a one-layer attention model that must learn to
repeat the tokens 1 and 4 places back; the check trains that model itself, on two seeds,
and measures its held-out accuracy.

Each check names the failing input, shows expected against got, and recognises the usual
mistakes (a window off by one, a band that reaches into the future, padding on the wrong
side, nan rows of padding, heads split along the wrong axis, one head for two jobs, a
window too short to reach back) by recomputing the answer with that mistake.
"""

from __future__ import annotations

import math
import numbers
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from llmbook.attention import CausalSelfAttention
from llmbook.config import GPTConfig
from llmbook.exercises.compare import (
    first_rows,
    is_int,
    known_mistake,
    one_thread,
    same,
    tensor_answer,
    unchanged,
)
from llmbook.exercises.core import CheckFailed, call, describe, mismatch, register

CHAPTER = "05"

ERROR_HINTS = [
    (
        "view size is not compatible",
        (
            "after a transpose the tensor is no longer contiguous in memory, so .view() "
            "refuses. Call .contiguous() before .view(...), or use .reshape(...)."
        ),
    ),
    (
        "mat1 and mat2 shapes cannot be multiplied",
        (
            "check the order of a matrix product. An nn.Linear weight is stored as "
            "(out_features, in_features), so a linear layer computes x @ weight.T + bias."
        ),
    ),
    (
        "must match the size of tensor",
        (
            "two tensors' shapes do not line up. Print the shapes of q, k, v and of your "
            "scores; remember k.transpose(-2, -1) swaps only the last two dimensions."
        ),
    ),
    ("expected a matrix", ("use k.transpose(-2, -1) rather than k.T on tensors with more than two dimensions.")),
]
"""The errors that attention code typically raises, and what to do about each."""


# --------------------------------------------------------------------------- sliding window


def reference_window_mask(
    t: int, window: int, *, low: int = 0, high: int | None = None, causal: bool = True
) -> torch.Tensor:
    """(t, t) booleans, True where query i may look at key j: 0 <= i - j < window.

    ``low``/``high`` move the band's edges and ``causal=False`` makes it symmetric, which
    is how the usual mistakes are recomputed."""
    i = torch.arange(t)[:, None]
    j = torch.arange(t)[None, :]
    back = i - j
    high = window if high is None else high
    if not causal:
        return back.abs() < high
    return (back >= low) & (back < high)


def _window_hint(t: int, window: int, got: torch.Tensor) -> str:
    as_bool = got != 0 if torch.is_floating_point(got) else got.bool()
    if torch.is_floating_point(got) and torch.isinf(got).any():
        as_bool = torch.isfinite(got)
    ref = reference_window_mask(t, window)
    variants = [
        (
            reference_window_mask(t, window, high=window + 1),
            (
                f"your band is one too wide: a window of {window} holds the token itself and the "
                f"{window - 1} before it, so query i sees keys i - {window - 1} ... i "
                f"(i - j < window, not <=)."
            ),
        ),
        (
            reference_window_mask(t, window, high=window - 1),
            (
                f"your band is one too narrow: a window of {window} holds the token itself and "
                f"the {window - 1} before it (i - j < window)."
            ),
        ),
        (
            reference_window_mask(t, window, low=1, high=window + 1),
            "a token may look at itself: the diagonal must be True.",
        ),
        (
            reference_window_mask(t, window, causal=False),
            (
                "your band also reaches into the future (j > i). Keep only keys at or before "
                "the query: 0 <= i - j < window."
            ),
        ),
        (
            ref.T,
            (
                "your mask is transposed: rows are queries, columns are keys; query i may "
                "look back at j <= i, not forward."
            ),
        ),
        (~ref, "True and False are swapped: True means 'may look'."),
        (
            reference_window_mask(t, t),
            (
                f"you built the plain causal mask; the window must also hide keys {window} or "
                f"more places back (torch.tril(..., diagonal=0) & ~torch.tril(..., "
                f"diagonal=-{window}), or compare i - j with window)."
            ),
        ),
    ]
    hint = known_mistake(as_bool, variants)
    if hint is None and torch.equal(as_bool, ref):
        return (
            "the pattern is right but the dtype is not: return booleans "
            "(dtype=torch.bool), True where a query may look."
        )
    return hint or f"mask[i, j] is True exactly when 0 <= i - j < {window}."


@register("attention.sliding_window_mask", chapter=CHAPTER, kind="build", title="A sliding-window causal mask")
def check_sliding_window_mask(fn: Any) -> str:
    """Bands of width 1 to 16, windows wider than the sequence, t = 1 and t = 64."""
    cases = [(5, 2), (6, 3), (4, 1), (3, 5), (8, 4), (1, 3), (64, 16)]
    for t, window in cases:
        label = f"sliding_window_mask({t}, window={window})"
        got = call(fn, t, window, label=label, hints=ERROR_HINTS)
        expected = reference_window_mask(t, window)
        got = tensor_answer(
            got,
            label,
            expected=expected,
            hint="build it with torch operations (torch.ones, torch.tril, torch.arange and comparisons).",
        )
        if tuple(got.shape) != (t, t):
            raise mismatch(
                f"{label} should have shape ({t}, {t}): one row per query, one column per key.", expected, got
            )
        if got.dtype != torch.bool or not torch.equal(got, expected):
            raise mismatch(
                f"{label} is not the sliding-window mask.",
                expected
                if t <= 8
                else f"a band of width {window} on and below the diagonal of a {t}x{t} boolean matrix",
                got,
                _window_hint(t, window, got),
            )
    return (
        "Correct on 7 cases: each query sees itself and the window - 1 tokens before "
        "it, never the future; a window longer than the sequence is the causal mask."
    )


# --------------------------------------------------------------------------- left padding


def reference_left_padded(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lengths: list[int],
    *,
    pad_keys: bool = True,
    causal: bool = True,
    side: str = "left",
    zero_rows: bool = True,
    fill: float = float("-inf"),
) -> torch.Tensor:
    """Causal attention with padding keys hidden and padding queries answered with 0.

    The keywords recompute the usual mistakes: padding not hidden, no causal mask,
    padding assumed on the right, nan rows left as they are, a finite fill value."""
    B, T, d = q.shape
    pos = torch.arange(T)
    n = torch.tensor(lengths)[:, None]
    real = pos[None, :] >= T - n if side == "left" else pos[None, :] < n  # (B, T)
    scores = q.double() @ k.double().transpose(-2, -1) / math.sqrt(d)
    allowed = torch.ones(B, T, T, dtype=torch.bool)
    if causal:
        allowed = allowed & torch.ones(T, T, dtype=torch.bool).tril()
    if pad_keys:
        allowed = allowed & real[:, None, :]
    out = torch.softmax(scores.masked_fill(~allowed, fill), dim=-1) @ v.double()
    if zero_rows:
        out = torch.where(real[:, :, None], out, torch.zeros(()).double())
    return out.float()


def _padded_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, list[int]]]:
    gen = torch.Generator().manual_seed(55)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    return [
        ("no padding", rand(1, 4, 8), rand(1, 4, 8), rand(1, 4, 8), [4]),
        ("three sequences of 6, 4 and 1 tokens", rand(3, 6, 8), rand(3, 6, 8), rand(3, 6, 8), [6, 4, 1]),
        ("values of another size", rand(2, 5, 4), rand(2, 5, 4), rand(2, 5, 3), [2, 5]),
        ("d = 64", rand(2, 7, 64), rand(2, 7, 64), rand(2, 7, 64), [7, 3]),
    ]


def _padded_hint(
    got: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: list[int], expected: torch.Tensor
) -> str:
    T = q.shape[1]
    real = torch.arange(T)[None, :] >= T - torch.tensor(lengths)[:, None]
    finite_real = torch.isfinite(got[real]).all()
    if not torch.isfinite(got).all():
        if finite_real and same(got[real], expected[real]):
            return (
                "the rows of the padding queries are nan: every key of such a row is "
                "hidden, and softmax over all -inf is nan. Set the outputs of padding "
                "positions to 0 (torch.where(real[..., None], out, 0.0), or "
                "out.masked_fill(~real[..., None], 0.0))."
            )
        return (
            "your output has nan or inf where a real token is. Hide only padding keys "
            "and future keys; every real query keeps at least itself."
        )
    ref = partial(reference_left_padded, q, k, v, lengths)
    variants = [
        (
            ref(pad_keys=False),
            (
                "real tokens still attend to the padding on their left: hide padding *keys* "
                "(the columns j of padding positions) as well as future keys."
            ),
        ),
        (
            ref(side="right"),
            (
                "the padding is on the left: sequence b's real tokens are its "
                "last lengths[b] positions, T - lengths[b] ... T - 1."
            ),
        ),
        (
            ref(causal=False),
            ("you forgot the causal mask: a real token may look only at itself and earlier real tokens."),
        ),
        (
            ref(fill=-1e9, zero_rows=False),
            (
                "the rows of the padding queries are not 0: with a finite fill such as -1e9 a "
                "fully masked row spreads its weight evenly. Set the outputs of padding positions "
                "to 0."
            ),
        ),
    ]
    hint = known_mistake(got, variants)
    if hint:
        return hint
    if same(got[real], expected[real]):
        return "the real tokens are right, but the rows of padding positions must be all zeros."
    return (
        "mask keys that are padding or in the future with -inf, take the softmax, "
        "multiply by v, then set the rows of padding queries to 0."
    )


@register(
    "attention.left_padded_attention",
    chapter=CHAPTER,
    kind="build",
    title="Causal attention over a batch padded on the left",
)
def check_left_padded_attention(fn: Any) -> str:
    """Each real token's output must equal causal attention over its own sequence alone."""
    for what, q, k, v, lengths in _padded_cases():
        label = (
            f"left_padded_attention(q {tuple(q.shape)}, k {tuple(k.shape)}, "
            f"v {tuple(v.shape)}, lengths={lengths}) ({what})"
        )
        given = [t.clone() for t in (q, k, v)]
        got = call(fn, *given, list(lengths), label=label, hints=ERROR_HINTS)
        expected = reference_left_padded(q, k, v, lengths)
        if isinstance(got, tuple):
            raise CheckFailed(
                f"{label} returned a tuple; return only the output tensor, of shape {tuple(expected.shape)}."
            )
        got = tensor_answer(
            got, label, shape=expected.shape, expected=expected, shape_hint="one output row per position: (B, T, d_v)."
        )
        unchanged(label, given, (q, k, v), ("q", "k", "v"))
        if not same(got, expected):
            T = q.shape[1]
            b = next(i for i in range(len(lengths)) if not same(got[i], expected[i]))
            raise mismatch(
                f"{label} is wrong for sequence {b}, whose {lengths[b]} real tokens are "
                f"positions {T - lengths[b]} to {T - 1} (rows of that sequence shown).",
                first_rows(expected[b], rows=T, n=3),
                first_rows(got[b], rows=T, n=3),
                _padded_hint(got, q, k, v, lengths, expected),
            )
    return (
        "Every real token's output equals causal attention over its own sequence "
        "without padding, and padding rows are zeros, on 4 batches."
    )


# --------------------------------------------------------------------------- multi-head forward


def _mha(
    x: torch.Tensor,
    w_attn: torch.Tensor,
    b_attn: torch.Tensor | None,
    w_proj: torch.Tensor,
    b_proj: torch.Tensor | None,
    n_head: int,
    *,
    causal: bool = True,
    proj: bool = True,
    attn_bias: bool = True,
    proj_bias: bool = True,
    order: tuple[int, int, int] = (0, 1, 2),
    heads: str = "right",
    scale: str = "head",
) -> torch.Tensor:
    """Multi-head attention, optionally with one of the usual mistakes built in."""
    b, t, c = x.shape
    d = c // n_head
    qkv = F.linear(x, w_attn, b_attn if attn_bias else None).split(c, dim=-1)
    q, k, v = (qkv[i] for i in order)
    if heads == "right":
        q, k, v = (z.view(b, t, n_head, d).transpose(1, 2) for z in (q, k, v))
    else:  # straight reshape, without the transpose
        q, k, v = (z.reshape(b, n_head, t, d) for z in (q, k, v))
    scores = q @ k.transpose(-2, -1)
    scores = scores / {"head": math.sqrt(d), "model": math.sqrt(c), "none": 1.0}[scale]
    if causal:
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v
    y = y.transpose(1, 2).reshape(b, t, c) if heads == "right" else y.reshape(b, t, c)
    return F.linear(y, w_proj, b_proj if proj_bias else None) if proj else y


_MHA_MISTAKES: list[tuple[dict[str, Any], str]] = [
    (
        {"causal": False},
        ("no causal mask: every token could see the future. Mask the scores with torch.tril before the softmax."),
    ),
    ({"proj": False}, "you left out the output projection: finish with y @ w_proj.T + b_proj."),
    ({"attn_bias": False, "proj_bias": False}, "you left out the biases: a linear layer is x @ weight.T + bias."),
    ({"proj_bias": False}, "you left out the output projection's bias, b_proj."),
    ({"attn_bias": False}, "you left out the bias of the q/k/v projection, b_attn."),
    (
        {"scale": "model"},
        (
            "you scaled by √n_embd; each head's scores are dot products of "
            "head_dim numbers, so divide by √head_dim = √(n_embd // n_head)."
        ),
    ),
    ({"scale": "none"}, "you did not scale the scores: divide by √head_dim."),
    (
        {"heads": "wrong"},
        (
            "the heads are split wrongly: view q, k and v as (B, T, n_head, "
            "head_dim), then .transpose(1, 2); merge back the same way in reverse."
        ),
    ),
    (
        {"order": (1, 0, 2)},
        (
            "queries and keys are swapped: the first n_embd outputs of the "
            "joint projection are q, the next n_embd are k, the last are v."
        ),
    ),
    ({"order": (0, 2, 1)}, ("keys and values are swapped: the projection's outputs are q, k, v in that order.")),
    ({"order": (2, 1, 0)}, ("q and v are swapped: the projection's outputs are q, k, v in that order.")),
]


@register(
    "attention.multi_head", chapter=CHAPTER, kind="build", title="Causal multi-head attention that matches llmbook"
)
def check_multi_head(fn: Any) -> str:
    """Random weights, compared with llmbook's CausalSelfAttention loaded with them."""
    gen = torch.Generator().manual_seed(11)
    shapes = [(2, 5, 12, 3), (1, 7, 16, 4), (2, 6, 8, 1), (1, 1, 8, 2), (3, 9, 24, 6)]
    for b, t, c, h in shapes:
        x = torch.randn(b, t, c, generator=gen)
        w_attn = 0.5 * torch.randn(3 * c, c, generator=gen)
        b_attn = 0.1 * torch.randn(3 * c, generator=gen)
        w_proj = 0.5 * torch.randn(c, c, generator=gen)
        b_proj = 0.1 * torch.randn(c, generator=gen)
        module = CausalSelfAttention(
            GPTConfig(n_embd=c, n_head=h, n_positions=max(t, 1), vocab_size=1, dropout=0.0)
        ).eval()
        with torch.no_grad():
            module.c_attn.weight.copy_(w_attn)
            module.c_attn.bias.copy_(b_attn)
            module.c_proj.weight.copy_(w_proj)
            module.c_proj.bias.copy_(b_proj)
            expected = module(x)
        assert torch.allclose(expected, _mha(x, w_attn, b_attn, w_proj, b_proj, h), atol=1e-5)
        args = [z.clone() for z in (x, w_attn, b_attn, w_proj, b_proj)]
        label = (
            f"multi_head_attention(x of shape {(b, t, c)}, w_attn {(3 * c, c)}, "
            f"b_attn {(3 * c,)}, w_proj {(c, c)}, b_proj {(c,)}, n_head={h})"
        )
        with torch.no_grad():
            got = call(fn, *args, h, label=label, hints=ERROR_HINTS)
        got = tensor_answer(
            got, label, shape=(b, t, c), expected=expected, shape_hint="one output vector of n_embd numbers per token."
        )
        if not same(got, expected):
            mistakes = [(partial(_mha, **mistake), why) for mistake, why in _MHA_MISTAKES]
            hint = known_mistake(got, mistakes, x, w_attn, b_attn, w_proj, b_proj, h) or (
                "follow the steps: project, split into q, k, v, split heads, scaled and "
                "masked attention, merge heads, output projection."
            )
            raise mismatch(
                f"{label} does not match llmbook's CausalSelfAttention with the same "
                f"weights (first rows of the first sequence shown).",
                first_rows(expected),
                first_rows(got),
                hint,
            )
    return (
        "Your multi-head attention matches llmbook.attention.CausalSelfAttention to float "
        "precision on 5 shapes (1 to 6 heads, 1 to 9 tokens, batches of 1 to 3)."
    )


# --------------------------------------------------------------------------- experiment

LOOK_BACK = (1, 4)
"""The task of the experiment: at every position, name the tokens 1 and 4 places back."""
LB_VOCAB, LB_T, LB_STEPS, LB_BATCH = 12, 16, 200, 32
LB_TARGET = 0.95
LB_SEEDS = (0, 1)
LB_KEYS = ("n_embd", "n_head", "lr", "window")


def train_look_back(settings: dict[str, Any], seed: int) -> list[float]:
    """Train the experiment's one-layer attention model with ``settings`` and return its
    held-out accuracy on each look-back target.

    The model: token and learned position embeddings, one causal multi-head attention
    layer with the sliding window, a residual connection, and one linear read-out per
    target; Adam for ``LB_STEPS`` steps on random sequences of ``LB_VOCAB`` tokens,
    deterministic for a seed. About 0.5 CPU seconds at the reference settings.
    """
    with one_thread(), torch.enable_grad():  # the same numbers on every machine
        d, n_head, lr, window = (settings[k] for k in LB_KEYS)
        V, T, L, m = LB_VOCAB, LB_T, len(LOOK_BACK), max(LOOK_BACK)
        gen = torch.Generator().manual_seed(seed)

        def param(*shape: int, std: float) -> torch.Tensor:
            return (std * torch.randn(*shape, generator=gen)).requires_grad_(True)

        p = {
            "wte": param(V, d, std=0.3),
            "wpe": param(T, d, std=0.3),
            "w_attn": param(3 * d, d, std=d**-0.5),
            "w_proj": param(d, d, std=d**-0.5),
            "w_out": param(L * V, d, std=d**-0.5),
        }
        mask = reference_window_mask(T, window)
        hd = d // n_head

        def forward(x: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T - m, L, V)
            B = x.shape[0]
            h = p["wte"][x] + p["wpe"]
            q, k, v = (h @ p["w_attn"].T).split(d, dim=-1)
            q, k, v = (z.view(B, T, n_head, hd).transpose(1, 2) for z in (q, k, v))
            scores = (q @ k.transpose(-2, -1) / math.sqrt(hd)).masked_fill(~mask, float("-inf"))
            y = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(B, T, d)
            h = h + y @ p["w_proj"].T
            return (h @ p["w_out"].T).view(B, T, L, V)[:, m:]

        def targets(x: torch.Tensor) -> torch.Tensor:  # (B, T - m, L)
            return torch.stack([x[:, m - lag : T - lag] for lag in LOOK_BACK], dim=-1)

        optimizer = torch.optim.Adam(p.values(), lr=lr)
        for _ in range(LB_STEPS):
            x = torch.randint(V, (LB_BATCH, T), generator=gen)
            loss = F.cross_entropy(forward(x).reshape(-1, V), targets(x).reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        held_out = torch.randint(V, (512, T), generator=torch.Generator().manual_seed(1000 + seed))
        with torch.no_grad():
            right = forward(held_out).argmax(dim=-1) == targets(held_out)
        return [round(a, 3) for a in right.float().mean(dim=(0, 1)).tolist()]


def _look_back_settings(value: Any) -> dict[str, Any]:
    """The learner's settings, checked for keys, types and ranges before any training."""
    example = "{'n_embd': 32, 'n_head': 4, 'lr': 1e-3, 'window': 8}"
    if not isinstance(value, dict):
        raise CheckFailed(f"look_back_settings() should return a dict like {example}, but returned {describe(value)}.")
    missing = [k for k in LB_KEYS if k not in value]
    extra = [k for k in value if k not in LB_KEYS]
    if missing or extra:
        raise CheckFailed(
            f"look_back_settings() should return exactly the keys {list(LB_KEYS)}"
            f"; missing {missing}, unexpected {extra}. For example {example}."
        )
    for key in ("n_embd", "n_head", "window"):
        if not is_int(value[key]):
            raise CheckFailed(f"settings[{key!r}] should be a whole number (an int), got {describe(value[key])}.")
    lr = value["lr"]
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not 0 < float(lr) <= 1:
        raise CheckFailed(f"settings['lr'] should be a learning rate between 0 and 1, got {describe(lr)}.")
    d, h, w = int(value["n_embd"]), int(value["n_head"]), int(value["window"])
    if not 4 <= d <= 64:
        raise CheckFailed(
            f"settings['n_embd'] = {d}: choose a width from 4 to 64 (wider "
            f"models take the check too long and are not needed)."
        )
    if not 1 <= h <= 8 or d % h:
        raise CheckFailed(
            f"settings['n_head'] = {h} with n_embd = {d}: choose 1 to 8 heads "
            f"that divide n_embd, so every head gets n_embd // n_head "
            f"dimensions."
        )
    if not 1 <= w <= LB_T:
        raise CheckFailed(f"settings['window'] = {w}: choose a window from 1 to {LB_T} (the length of the sequences).")
    return {"n_embd": d, "n_head": h, "lr": float(lr), "window": w}


def _look_back_advice(s: dict[str, Any], acc: list[float]) -> str:
    needed = max(LOOK_BACK) + 1
    if s["window"] < needed:
        return (
            f"a window of {s['window']} lets a token see itself and the "
            f"{s['window'] - 1} tokens before it, so the token {max(LOOK_BACK)} back is "
            f"out of sight: widen the window."
        )
    if s["n_head"] == 1:
        return (
            "one head has to split its weight between the two tokens, and its output "
            "blends them, so a read-out can only pick out the stronger one: one target "
            "succeeds, the other fails. Give each target its own head (n_head >= 2)."
        )
    if s["lr"] < 3e-3:
        return (
            f"the accuracies are still climbing when the {LB_STEPS} steps run out: raise "
            f"the learning rate (Adam on a model this small is happy around 1e-2)."
        )
    if s["lr"] > 5e-2:
        return "a learning rate this high makes the training jump about: lower it (try 1e-2)."
    return (
        "try another width or number of heads; train the model yourself with "
        "train_look_back(settings, seed) to watch what changes."
    )


@register(
    "attention.look_back_experiment",
    chapter=CHAPTER,
    kind="experiment",
    time_limit=30,
    title="Make one attention layer look 1 and 4 tokens back",
)
def check_look_back_experiment(fn: Any) -> str:
    """Train with the learner's settings on seeds 0 and 1; both targets >= 95 % held out,
    with the smallest window that can work."""
    settings = _look_back_settings(call(fn, label="look_back_settings()"))
    needed = max(LOOK_BACK) + 1
    results = {seed: train_look_back(settings, seed) for seed in LB_SEEDS}
    shown = "; ".join(
        f"seed {seed}: " + ", ".join(f"{lag} back {a:.1%}" for lag, a in zip(LOOK_BACK, acc, strict=True))
        for seed, acc in results.items()
    )
    worst = min(min(acc) for acc in results.values())
    if worst < LB_TARGET:
        raise CheckFailed(
            f"Trained with {settings} for {LB_STEPS} steps, the held-out accuracy ({shown}) "
            f"is below {LB_TARGET:.0%} for at least one target.\n"
            f"  expected: at least {LB_TARGET:.0%} for each target on seeds {LB_SEEDS}\n"
            f"  got:      {worst:.1%} at worst\n"
            f"Hint: {_look_back_advice(settings, results[min(results, key=lambda s: min(results[s]))])}"
        )
    if settings["window"] > needed:
        raise CheckFailed(
            f"The model learns the task with {settings} ({shown}), but the window is larger "
            f"than it needs to be: a window of {settings['window']} lets every token see "
            f"{settings['window'] - 1} tokens back, more than the task asks for. The cost of "
            f"a sliding window grows with its width: find the smallest window that still "
            f"passes."
        )
    return (
        f"With {settings} the model learns both targets on seeds {LB_SEEDS} ({shown}), "
        f"with the smallest window that can see {max(LOOK_BACK)} tokens back."
    )
