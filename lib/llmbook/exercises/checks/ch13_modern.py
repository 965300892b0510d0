"""Checks for chapter 13, "From GPT-2 to today's LLMs".

Five exercises on the parts later models changed: rotary positions in the "rotate half"
layout that Llama's weights use, a mixture-of-experts router with its load-balancing loss,
Mistral's sliding-window causal mask, the KV-cache size of a model with grouped-query
attention, and an experiment in which the learner picks architecture options that the
check trains with, to a measured loss beyond the training length and a smaller cache.
Each check compares the learner's function with a reference on several inputs and, when
they differ, names the input, shows expected against got, and names the mistake that most
often produces that difference (recognised by computing the mistake and comparing).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

from llmbook.exercises.compare import (
    Mistake,
    known_mistake,
    one_thread,
    same,
    tensor_answer,
    tensor_tuple,
    unchanged,
    whole_number,
)
from llmbook.exercises.core import CheckFailed, call, describe, mismatch, register

CHAPTER = "13"


# --------------------------------------------------------------------------- rotary, rotate half


def _rope_ref(
    x: torch.Tensor,
    positions: torch.Tensor,
    theta: float,
    *,
    pair_step: int = 2,
    direction: float = 1.0,
    interleaved: bool = False,
) -> torch.Tensor:
    """Rotate x (..., T, d): dimension i turns with i + d/2 by positions * theta^(-2i/d)."""
    d = x.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) * (pair_step / 2) / d)
    angles = positions.to(torch.float64)[:, None] * freqs  # (T, d/2)
    cos, sin = angles.cos(), direction * angles.sin()
    x64 = x.to(torch.float64)
    if interleaved:  # the paper's layout: (2i, 2i + 1) are a pair
        a, b = x64[..., 0::2], x64[..., 1::2]
        out = torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2)
    else:
        a, b = x64[..., : d // 2], x64[..., d // 2 :]
        out = torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1)
    return out.to(x.dtype)


_ROPE_MISTAKES: list[Mistake] = [
    (
        lambda x, p, t: _rope_ref(x, p, t, interleaved=True),
        (
            "you paired neighbouring dimensions (2i, 2i + 1), as the RoPE paper and the chapter's "
            "rope_pairs do. This exercise asks for llmbook's (and Llama's) layout: dimension i turns "
            "together with dimension i + d/2 (split x into its two halves)."
        ),
    ),
    (
        lambda x, p, t: _rope_ref(x, p, t, direction=-1.0),
        (
            "you rotate the wrong way: a pair (a, b) becomes (a cos - b sin, b cos + a sin), a turn by "
            "+angle. Check the signs of the sine terms."
        ),
    ),
    (
        lambda x, p, t: _rope_ref(x, p, t, pair_step=1),
        (
            "your frequencies fall too slowly: pair i turns at theta ** (-2i / d), i = 0 .. d/2 - 1 "
            "(torch.arange(0, d, 2) / d), not theta ** (-i / d)."
        ),
    ),
    (
        lambda x, p, t: _rope_ref(x, torch.arange(len(p)), t),
        (
            "you used the positions 0, 1, 2, ... instead of the `positions` given: a token's angle "
            "depends on where it is in the text, which the argument says."
        ),
    ),
    (
        lambda x, p, t: _rope_ref(x, p, 10000.0),
        "you used theta = 10000 whatever `theta` was passed (Llama 3 uses 500000).",
    ),
]


@register("modern.rotary", chapter=CHAPTER, kind="build", title="Rotary positions in the rotate-half layout")
def check_rotary(fn: Any) -> str:
    g = torch.Generator().manual_seed(13)
    cases = [
        (torch.randn(1, 1, 3, 4, generator=g), torch.tensor([0, 1, 2]), 10000.0),
        (torch.randn(2, 3, 5, 8, generator=g), torch.tensor([3, 7, 8, 20, 100]), 10000.0),
        (torch.randn(4, 16, generator=g), torch.arange(10, 14), 500000.0),
        (torch.randn(2, 6, 32, generator=g), torch.tensor([0, 5, 50, 200, 700, 1000]), 10000.0),
    ]
    for x, positions, theta in cases:
        label = f"rotate(x of shape {tuple(x.shape)}, positions={positions.tolist()}, theta={theta:g})"
        given_x, given_p = x.clone(), positions.clone()
        got = call(fn, given_x, given_p, theta, label=label)
        unchanged(label, [given_x, given_p], [x, positions], ["x", "positions"])
        expected = _rope_ref(x, positions, theta)
        got = tensor_answer(got, label, shape=x.shape)
        if not same(got.float(), expected, rtol=1e-3, atol=1e-3):
            hint = known_mistake(got.float(), _ROPE_MISTAKES, x, positions, theta) or (
                "dimension i and dimension i + d/2 form a pair; pair i turns by position * "
                "theta ** (-2i / d): (a, b) -> (a cos - b sin, b cos + a sin)."
            )
            raise mismatch(f"{label} is wrong.", expected, got, hint)
    # The point of it all: after rotation, scores depend on the offset only.
    q, k = torch.randn(1, 8, generator=g), torch.randn(1, 8, generator=g)
    a = (
        call(fn, q, torch.tensor([9]), 10000.0, label="rotate(q, [9])")
        @ call(fn, k, torch.tensor([4]), 10000.0, label="rotate(k, [4])").T
    )
    b = (
        call(fn, q, torch.tensor([105]), 10000.0, label="rotate(q, [105])")
        @ call(fn, k, torch.tensor([100]), 10000.0, label="rotate(k, [100])").T
    )
    return (
        f"Right on every input, and it rotates as it should: the score of a query and a key "
        f"five positions apart is {a.item():.4f} at positions (9, 4) and {b.item():.4f} at "
        f"(105, 100)."
    )


# --------------------------------------------------------------------------- mixture-of-experts router


def _route_ref(
    logits: torch.Tensor, k: int, *, renormalise: bool = True, slots: bool = True, times_e: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, e = logits.shape
    probs = logits.double().softmax(dim=-1)
    weights, experts = probs.topk(k, dim=-1)  # (N, k), largest first
    if renormalise:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    counts = F.one_hot(experts, e).sum(dim=(0, 1)).double()  # (E,)
    f = counts / (n * k if slots else n)
    loss = (e if times_e else 1) * (f * probs.mean(dim=0)).sum()
    return weights.to(logits.dtype), experts, loss.to(logits.dtype)


_ROUTE_MISTAKES: list[Mistake] = [
    (
        lambda lg, k: _route_ref(lg, k, renormalise=False)[0],
        (
            "the weights of a token's k experts should add up to 1: divide the k chosen probabilities "
            "by their sum (softmax over all experts, top-k, then renormalise)."
        ),
    ),
    (
        lambda lg, k: lg.topk(k, dim=-1).values,
        "the weights are probabilities, not logits: softmax first, then pick the top k and renormalise.",
    ),
]
_AUX_MISTAKES: list[Mistake] = [
    (
        lambda lg, k: _route_ref(lg, k, slots=False)[2],
        (
            "f_e should be the fraction of the N * k routing slots that went to expert e (so the f_e "
            "add up to 1); you divided the counts by N only."
        ),
    ),
    (
        lambda lg, k: _route_ref(lg, k, times_e=False)[2],
        (
            "you left out the factor E (the number of experts) in E * sum_e f_e * P_e: with it, a "
            "perfectly balanced router scores exactly 1 whatever E is."
        ),
    ),
]


@register(
    "modern.moe_route",
    chapter=CHAPTER,
    kind="build",
    title="A top-k mixture-of-experts router and its load-balancing loss",
)
def check_moe_route(fn: Any) -> str:
    g = torch.Generator().manual_seed(113)
    cases = [
        (torch.randn(6, 4, generator=g), 1),
        (torch.randn(10, 8, generator=g), 2),
        (3 * torch.randn(32, 8, generator=g), 2),
        (torch.randn(5, 3, generator=g), 3),
    ]
    for logits, k in cases:
        label = f"route(logits of shape {tuple(logits.shape)}, k={k})"
        given = logits.clone()
        got = call(fn, given, k, label=label)
        unchanged(label, [given], [logits], ["logits"])
        weights, experts, loss = _route_ref(logits, k)
        got_w, got_e, got_l = tensor_tuple(
            got, label, ("weights", "experts", "aux_loss"), expected=(weights, experts, loss)
        )
        if not torch.equal(got_e.long(), experts) or got_e.is_floating_point():
            if not got_e.is_floating_point() and torch.equal(got_e.long().sort(-1).values, experts.sort(-1).values):
                raise mismatch(
                    f"{label}: the experts are right but in another order.",
                    experts,
                    got_e,
                    "list each token's experts from the largest weight down, as topk does.",
                )
            raise mismatch(
                f"{label}: the experts (an integer tensor of shape (N, k)) are wrong.",
                experts,
                got_e,
                "take the k experts of largest probability for each token (tensor.topk(k, dim=-1)).",
            )
        if not same(got_w.float(), weights.float()):
            hint = known_mistake(got_w.float(), _ROUTE_MISTAKES, logits, k) or (
                "softmax over all experts, keep the k largest, divide them by their sum."
            )
            raise mismatch(f"{label}: the weights are wrong.", weights, got_w, hint)
        if got_l.numel() != 1 or not same(got_l.float().reshape(()), loss.float()):
            hint = known_mistake(got_l.float().reshape(-1)[0], _AUX_MISTAKES, logits, k) or (
                "aux_loss = E * sum_e f_e * P_e, f_e: share of the N * k slots routed to e, P_e: "
                "the mean over tokens of the softmax probability of e."
            )
            raise mismatch(f"{label}: aux_loss is wrong.", loss, got_l, hint)
    balanced = _route_ref(torch.zeros(8, 4), 1)[2]  # every probability 1/4, ties broken alike
    return (
        "Right on every input: weights that add up to 1 over each token's experts, the experts "
        f"in order, and the load-balancing loss (a router whose probabilities are all equal "
        f"scores {balanced.item():.2f}; the loss is smallest when tokens spread evenly)."
    )


# --------------------------------------------------------------------------- sliding-window mask


def _window_ref(t: int, window: int, *, extra: int = 0, causal: bool = True) -> torch.Tensor:
    i = torch.arange(t)[:, None]
    j = torch.arange(t)[None, :]
    near = (i - j).abs() < window + extra
    return near & (j <= i) if causal else near


_WINDOW_MISTAKES: list[Mistake] = [
    (
        lambda t, w: _window_ref(t, w, extra=1),
        (
            "each query sees one key too many: with window w a query sees itself and the w - 1 keys "
            "before it (i - w < j <= i), w keys in all."
        ),
    ),
    (
        lambda t, w: _window_ref(t, w, causal=False),
        ("your mask lets queries see later keys: it must stay causal (j <= i) as well as local (i - j < window)."),
    ),
    (
        lambda t, w: _window_ref(t, w, extra=-1),
        "each query sees one key too few: with window w it sees w keys, itself included.",
    ),
    (
        lambda t, w: ~_window_ref(t, w),
        (
            "your mask is inverted: True should mark the keys a query MAY attend to, as in "
            "F.scaled_dot_product_attention's boolean attn_mask."
        ),
    ),
    (
        lambda t, w: torch.ones(t, t, dtype=torch.bool).tril(),
        "that is the plain causal mask: a query should see only the last `window` keys, itself included.",
    ),
]


@register("modern.sliding_window", chapter=CHAPTER, kind="build", title="A sliding-window causal mask")
def check_sliding_window(fn: Any) -> str:
    for t, window in [(5, 2), (8, 3), (6, 1), (4, 4), (10, 4), (3, 7)]:
        label = f"sliding_window_mask(T={t}, window={window})"
        got = tensor_answer(call(fn, t, window, label=label), label, shape=(t, t))
        expected = _window_ref(t, window)
        if got.dtype != torch.bool:
            raise mismatch(
                f"{label} should return a boolean mask (True: may attend).",
                expected,
                got,
                "build it from comparisons (such as j <= i), which give torch.bool.",
            )
        if not torch.equal(got, expected):
            hint = known_mistake(got, _WINDOW_MISTAKES, t, window) or (
                "query i may attend to key j when j <= i and i - j < window."
            )
            raise mismatch(f"{label} is wrong.", expected.int(), got.int(), hint)
    return (
        "Right for every size: each query sees itself and the window - 1 keys before it, and "
        "never a later one. Stacked over layers, the window's reach grows by window - 1 each "
        "layer, which is how Mistral 7B sees beyond its 4,096-token window."
    )


# --------------------------------------------------------------------------- KV-cache bytes


def _kv_ref(c: dict[str, Any], tokens: int, batch: int, nbytes: int, *, heads: str = "kv", factor: int = 2) -> int:
    head_dim = c["n_embd"] // c["n_head"]
    kv = c["n_head"] if heads == "q" or c.get("n_kv_head") is None else c["n_kv_head"]
    return factor * c["n_layer"] * kv * head_dim * tokens * batch * nbytes


_KV_MISTAKES: list[Mistake] = [
    (
        lambda c, t, b, s: _kv_ref(c, t, b, s, heads="q"),
        (
            "you counted a key and a value for every query head; with grouped-query attention only "
            "the n_kv_head key/value heads are cached (n_head when n_kv_head is None)."
        ),
    ),
    (
        lambda c, t, b, s: _kv_ref(c, t, b, s, factor=1),
        "you counted the keys only: the cache holds keys and values, twice as much.",
    ),
    (
        lambda c, t, b, s: _kv_ref(c, t, b, s) // b,
        "you left out the batch: every sequence in the batch has its own cache.",
    ),
    (lambda c, t, b, s: _kv_ref(c, t, b, s) * 8, "that is bits: count bytes (bytes_per_number per number)."),
    (
        lambda c, t, b, s: 2 * c["n_layer"] * c["n_embd"] * t * b * s,
        (
            "you used n_embd as the width of the keys; with grouped queries it is n_kv_head * head_dim "
            "(head_dim = n_embd // n_head)."
        ),
    ),
]

_KV_CASES: list[tuple[dict[str, Any], int, int, int]] = [
    ({"n_layer": 12, "n_embd": 768, "n_head": 12, "n_kv_head": None}, 1024, 1, 2),  # GPT-2
    ({"n_layer": 32, "n_embd": 4096, "n_head": 32, "n_kv_head": 8}, 8192, 1, 2),  # Llama 3 8B
    ({"n_layer": 32, "n_embd": 4096, "n_head": 32, "n_kv_head": 32}, 4096, 4, 2),  # Llama 2 7B
    ({"n_layer": 30, "n_embd": 576, "n_head": 9, "n_kv_head": 3}, 2048, 8, 4),  # SmolLM2
    ({"n_layer": 2, "n_embd": 64, "n_head": 4, "n_kv_head": 1}, 128, 3, 1),
]


@register("modern.kv_cache_bytes", chapter=CHAPTER, kind="formula", title="The KV cache of a real model")
def check_kv_cache_bytes(fn: Any) -> str:
    for config, tokens, batch, nbytes in _KV_CASES:
        label = f"kv_cache_bytes({config}, n_tokens={tokens}, batch_size={batch}, bytes_per_number={nbytes})"
        given = dict(config)
        got = call(fn, given, tokens, batch, nbytes, label=label)
        unchanged(label, [given], [config], ["config"])
        expected = _kv_ref(config, tokens, batch, nbytes)
        value = whole_number(got, label, expected, floats_ok=True)
        if value != expected:
            hint = known_mistake(value, _KV_MISTAKES, config, tokens, batch, nbytes) or (
                "2 (keys and values) x n_layer x n_kv_head x head_dim x n_tokens x batch_size x "
                "bytes_per_number, with head_dim = n_embd // n_head."
            )
            raise mismatch(f"{label} is wrong.", expected, value, hint)
    llama2 = _kv_ref(_KV_CASES[2][0], 8192, 1, 2)
    llama3 = _kv_ref(_KV_CASES[1][0], 8192, 1, 2)
    return (
        f"Right for every model: at 8,192 tokens in bf16, Llama 2 7B would cache "
        f"{llama2 / 2**30:.0f} GiB per sequence, Llama 3 8B {llama3 / 2**30:.0f} GiB."
    )


# --------------------------------------------------------------------------- experiment: read beyond T


OPTIONS = {"norm": ("layernorm", "rmsnorm"), "positions": ("learned", "rope"), "mlp": ("gelu", "swiglu")}
EXP_T, EXP_STEPS, EXP_BATCH, EXP_HEADS = 32, 250, 16, 4
EXP_TARGET = 2.45  # loss at positions T .. 2T - 1; learned positions reach ~2.58, rotary ~2.39


@functools.lru_cache(maxsize=1)
def _exp_data() -> tuple[torch.Tensor, torch.Tensor, int]:
    from llmbook.data import load_corpus

    text = load_corpus("shakespeare")
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text[:300_000]])
    return ids[:270_000], ids[270_000:], len(chars)


def _exp_run(options: dict[str, Any], lr: float) -> tuple[float, float]:
    """Train the exercise's tiny model with these options at T; the mean validation loss at
    positions 0 .. T-1 and T .. 2T-1 of windows of 2T."""
    from llmbook.config import GPTConfig
    from llmbook.model import GPT
    from llmbook.step import NextTokenLoss, TrainStep

    train, val, vocab = _exp_data()
    t = EXP_T
    config = GPTConfig(vocab_size=vocab, n_positions=2 * t, n_embd=48, n_layer=2, n_head=EXP_HEADS, **options)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = GPT(config)
    # The library's step at a constant learning rate (AdamW, gradients clipped to norm 1).
    stepper = TrainStep(model, NextTokenLoss(), lr=lr, min_lr=lr, max_steps=EXP_STEPS, warmup_steps=0,
                        weight_decay=0.1, precision="fp32")
    g = torch.Generator().manual_seed(0)
    with one_thread():  # the same numbers on every machine
        for number in range(EXP_STEPS):
            i = torch.randint(len(train) - t - 1, (EXP_BATCH,), generator=g)
            x = torch.stack([train[j : j + t] for j in i])
            y = torch.stack([train[j + 1 : j + t + 1] for j in i])
            stepper.step(number, [(x, y)])
        starts = torch.linspace(0, len(val) - 2 * t - 2, 64).long()
        x = torch.stack([val[s : s + 2 * t] for s in starts])
        y = torch.stack([val[s + 1 : s + 2 * t + 1] for s in starts])
        model.eval()
        with torch.no_grad():
            per = F.cross_entropy(model(x)[0].transpose(1, 2), y, reduction="none").mean(0)
    return per[:t].mean().item(), per[t:].mean().item()


def _settings(value: Any) -> tuple[dict[str, Any], float]:
    if not isinstance(value, dict):
        raise CheckFailed(
            f"settings() should return a dict such as {{'norm': 'rmsnorm'}}, but returned {describe(value)}."
        )
    allowed = [*OPTIONS, "n_kv_head", "lr"]
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise CheckFailed(f"settings() returned keys {unknown} that this experiment does not know; use only {allowed}.")
    options: dict[str, Any] = {}
    for key, choices in OPTIONS.items():
        if key in value:
            if value[key] not in choices:
                raise CheckFailed(f"settings()[{key!r}] is {value[key]!r}; choose one of {choices}.")
            options[key] = value[key]
    kv = value.get("n_kv_head")
    if kv is not None:
        if isinstance(kv, bool) or not isinstance(kv, int) or kv < 1 or EXP_HEADS % kv:
            raise CheckFailed(
                f"settings()['n_kv_head'] is {kv!r}; the model has {EXP_HEADS} query heads, "
                f"so n_kv_head must divide {EXP_HEADS} (1, 2 or 4), or be None."
            )
        options["n_kv_head"] = kv
    lr = value.get("lr", 3e-3)
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not 1e-4 <= lr <= 3e-2:
        raise CheckFailed(f"settings()['lr'] is {lr!r}; choose a learning rate between 1e-4 and 3e-2.")
    return options, float(lr)


@register(
    "modern.read_beyond",
    chapter=CHAPTER,
    kind="experiment",
    time_limit=30.0,
    title="Options that read beyond the training length with a smaller cache",
)
def check_read_beyond(fn: Any) -> str:
    options, lr = _settings(call(fn, label="settings()"))
    kv = options.get("n_kv_head", EXP_HEADS)
    inside, beyond = _exp_run(options, lr)
    measured = (
        f"with {options or 'GPT-2 defaults'} and lr={lr:g}, trained on windows of {EXP_T}: "
        f"loss {inside:.3f} at positions 0..{EXP_T - 1}, {beyond:.3f} at "
        f"{EXP_T}..{2 * EXP_T - 1}"
    )
    problems = []
    if kv * 2 > EXP_HEADS:
        problems.append(
            f"the KV cache holds {kv} key/value heads for {EXP_HEADS} query heads; the "
            f"target is at most half as many as GPT-2 (n_kv_head <= {EXP_HEADS // 2}): "
            f"set n_kv_head, as grouped-query or multi-query attention does."
        )
    if beyond > EXP_TARGET:
        if options.get("positions", "learned") == "learned":
            problems.append(
                "learned positions have no trained vector past position "
                f"{EXP_T - 1}: the rows of wpe beyond it never received a gradient. "
                "Which position scheme depends only on offsets?"
            )
        else:
            problems.append(
                f"the loss beyond the training length is {beyond:.3f}, above the target "
                f"{EXP_TARGET}; keep the options the chapter measured as best and the "
                f"default learning rate."
            )
    if problems:
        raise CheckFailed(
            f"Measured {measured}.\n  target: loss at {EXP_T}..{2 * EXP_T - 1} <= "
            f"{EXP_TARGET} with n_kv_head <= {EXP_HEADS // 2}\n" + "\n".join(f"Hint: {p}" for p in problems)
        )
    return f"Target met. Measured {measured}, with a KV cache {EXP_HEADS // kv} times smaller than GPT-2's."
