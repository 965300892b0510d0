"""Checks for chapter 12, "Scaling up".

Five exercises build what the chapter explained but ran with the library or only
described: dynamic loss scaling for fp16 (unscale in fp32, skip and halve on overflow,
grow after a run of good steps), gradient accumulation over micro-batches whose numbers
of counted (unmasked) tokens differ, one ZeRO-1 Adam step simulated across ranks (average
the gradients, each rank updates its own shard of the optimizer states, gather the
weights), the compute-optimal model for a budget (the one formula), and an experiment:
choose the runs, fit a scaling law to their losses, and predict the loss of a model 100
times bigger than any run. Each check names the input that failed, shows expected and
actual values, and recognises the usual mistakes (unscaling in fp16, nan not caught, the
counter not reset; micro-batch means divided by k, which is only right when every
micro-batch counts as many tokens; gradients summed instead of averaged, a rank's own
gradient only, Adam without bias correction, shards not gathered; a pure power law with
no irreducible loss) by recomputing the answer with that mistake.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from llmbook.exercises.compare import Mistake, close, known_mistake, number, same, tensor_answer
from llmbook.exercises.core import CheckFailed, call, describe, mismatch, register
from llmbook.model import IGNORE_INDEX

CHAPTER = "12"


# --------------------------------------------------------------------------- dynamic loss scaling


def reference_scaler_step(
    grads: Sequence[torch.Tensor], scale: float, good_steps: int, growth_interval: int
) -> tuple[list[torch.Tensor] | None, float, int]:
    """(fp32 unscaled gradients or None to skip, the next scale, the next count of good steps)."""
    if any(not bool(torch.isfinite(g).all()) for g in grads):
        return None, scale / 2, 0
    unscaled = [g.float() / scale for g in grads]
    good_steps += 1
    if good_steps == growth_interval:
        return unscaled, scale * 2, 0
    return unscaled, scale, good_steps


def _scaler_cases() -> list[tuple[str, list[torch.Tensor], float, int, int]]:
    g = torch.Generator().manual_seed(12)
    small = [(torch.randn(4, 3, generator=g) * 1e-3).half(), (torch.randn(5, generator=g) * 1e-3).half()]
    tiny = [(torch.randn(6, generator=g) * 2e-3).half()]  # unscaled by 2**16: below fp16's smallest number
    inf = [small[0].clone(), torch.tensor([1.0, float("inf"), 2.0], dtype=torch.float16)]
    nan = [torch.tensor([0.5, float("nan")], dtype=torch.float16)]
    return [
        ("finite gradients, 3 good steps so far", small, 1024.0, 3, 2000),
        ("gradients of 1e-3 scaled by 2**16", tiny, 65536.0, 0, 2000),
        ("an inf in the second gradient", inf, 65536.0, 1999, 2000),
        ("a nan", nan, 256.0, 5, 10),
        ("the step that completes growth_interval good steps", small, 1024.0, 9, 10),
        ("the first step, growth_interval = 1", small, 8.0, 0, 1),
    ]


def _scaler_variants(grads: list[torch.Tensor], scale: float, good: int, interval: int) -> list[tuple[Any, str]]:
    finite = all(bool(torch.isfinite(x).all()) for x in grads)
    no_inf = not any(bool(torch.isinf(x).any()) for x in grads)
    ref = reference_scaler_step(grads, scale, good, interval)
    variants: list[tuple[Any, str]] = []
    if finite:
        variants.append(
            (
                ([(x / scale).float() for x in grads], *ref[1:]),
                "divide in fp32: convert each gradient with .float() *before* dividing by the scale. "
                "In fp16, 1e-3 / 65536 (about 1.5e-8) rounds to 0, the very underflow loss scaling avoids.",
            )
        )
        variants.append(
            (
                ([x.float() for x in grads], *ref[1:]),
                "the gradients are still multiplied by the scale: divide them by it (unscale) before the "
                "optimizer uses them.",
            )
        )
        if good + 1 == interval:
            variants.append(
                (
                    (ref[0], scale * 2, good + 1),
                    "after growing the scale, start counting good steps again from 0.",
                )
            )
            variants.append(
                (
                    (ref[0], scale, good + 1),
                    f"after growth_interval ({interval}) good steps in a row, double the scale.",
                )
            )
    else:
        if no_inf:
            variants.append(
                (
                    ([x.float() / scale for x in grads], scale, good + 1),
                    "a nan is an overflow too: test with torch.isfinite (false for inf *and* nan), not torch.isinf.",
                )
            )
        variants.append(
            (
                (None, scale / 2, good),
                "on an overflow, also reset the count of good steps to 0: growth needs "
                "growth_interval good steps *in a row*.",
            )
        )
        variants.append(
            (
                (None, scale, 0),
                "on an overflow, halve the scale, so that the next step is less likely to overflow.",
            )
        )
        variants.append(
            (
                ([x.float() / scale for x in grads], scale / 2, 0),
                "skip the step on an overflow: return None instead of gradients with inf or nan in them.",
            )
        )
    return variants


def _same_scaler(got: Any, expected: tuple[Any, float, int]) -> bool:
    if not (isinstance(got, (tuple, list)) and len(got) == 3):
        return False
    grads, scale, good = got
    if expected[0] is None:
        if grads is not None:
            return False
    elif not (isinstance(grads, (list, tuple)) and len(grads) == len(expected[0])) or not all(
        isinstance(a, torch.Tensor) and a.shape == b.shape and same(a, b, rtol=1e-5, atol=0.0)
        for a, b in zip(grads, expected[0], strict=False)
    ):
        return False
    try:
        return close(float(scale), expected[1]) and int(good) == expected[2] and float(good) == float(good // 1)
    except (TypeError, ValueError):
        return False


@register("scaling.loss_scaler", chapter=CHAPTER, kind="build", title="Dynamic loss scaling for fp16")
def check_loss_scaler(fn: Any) -> str:
    """Finite gradients, gradients that underflow if unscaled in fp16, inf, nan, growth."""
    for name, grads, scale, good, interval in _scaler_cases():
        label = f"scaler_step(<{name}>, scale={scale:g}, good_steps={good}, growth_interval={interval})"
        got = call(fn, [x.clone() for x in grads], scale, good, interval, label=label)
        expected = reference_scaler_step(grads, scale, good, interval)
        if not (isinstance(got, (tuple, list)) and len(got) == 3):
            raise CheckFailed(
                f"{label} should return a triple (grads or None, new_scale, new_good_steps), "
                f"but returned {describe(got)}."
            )
        if got[0] is not None and isinstance(got[0], (list, tuple)):
            wrong = [x for x in got[0] if isinstance(x, torch.Tensor) and x.dtype != torch.float32]
            if wrong and expected[0] is not None:
                raise mismatch(
                    f"{label}: the unscaled gradients should be fp32 (torch.float32).",
                    "float32 tensors",
                    wrong[0],
                    "the master weights and the optimizer work in fp32: convert with .float() and divide.",
                )
        if not _same_scaler(got, expected):
            hint = next(
                (why for wrong, why in _scaler_variants(grads, scale, good, interval) if _same_scaler(got, wrong)), None
            )
            raise mismatch(
                f"{label} is wrong.",
                expected,
                got,
                hint
                or "if any gradient has an inf or nan: (None, scale / 2, 0); otherwise the gradients as fp32 "
                "divided by scale, and good_steps + 1, doubling the scale (and resetting the count) when it "
                "reaches growth_interval.",
            )
    return (
        "Correct: unscaled in fp32, overflow skipped and the scale halved, the scale doubled after "
        "growth_interval good steps in a row."
    )


# --------------------------------------------------------------------------- accumulation with masks


def _token_loss(weights: torch.Tensor, x: torch.Tensor, y: torch.Tensor, reduction: str) -> torch.Tensor:
    logits = x @ weights  # (b, T, V)
    return F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX, reduction=reduction)


def _grad(weights: torch.Tensor, loss_of: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    w = weights.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_of(w), w)
    return grad


def reference_accumulated_grad(
    weights: torch.Tensor, micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """The gradient of the mean loss over every counted token of all micro-batches together."""
    counted = sum(int((y != IGNORE_INDEX).sum()) for _, y in micro_batches)

    def loss(w: torch.Tensor) -> torch.Tensor:
        return sum(_token_loss(w, x, y, "sum") for x, y in micro_batches) / counted  # type: ignore[return-value]

    return _grad(weights, loss)


def _accumulation_variants(weights: torch.Tensor, micro: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[Mistake]:
    k = len(micro)
    total_tokens = sum(y.numel() for _, y in micro)

    def mean_over_k(w: torch.Tensor) -> torch.Tensor:
        return sum(_token_loss(w, x, y, "mean") for x, y in micro) / k  # type: ignore[return-value]

    def summed_means(w: torch.Tensor) -> torch.Tensor:
        return sum(_token_loss(w, x, y, "mean") for x, y in micro)  # type: ignore[return-value]

    def all_tokens(w: torch.Tensor) -> torch.Tensor:
        return sum(_token_loss(w, x, y, "sum") for x, y in micro) / total_tokens  # type: ignore[return-value]

    def summed(w: torch.Tensor) -> torch.Tensor:
        return sum(_token_loss(w, x, y, "sum") for x, y in micro)  # type: ignore[return-value]

    return [
        (
            _grad(weights, mean_over_k),
            "that is the chapter's recipe, each micro-batch's mean loss divided by k. It equals the big "
            "batch's gradient only when every micro-batch counts as many tokens; here they differ. Sum each "
            "micro-batch's token losses and divide by the number of counted tokens in *all* micro-batches.",
        ),
        (
            _grad(weights, summed_means),
            "adding the micro-batches' mean losses counts each micro-batch as one "
            "batch; divide by the counted tokens of all micro-batches together.",
        ),
        (
            _grad(weights, all_tokens),
            "the targets equal to -100 (padding, prompts) must not count, neither "
            "in the sum nor in the number you divide by.",
        ),
        (
            _grad(weights, summed),
            "divide the summed token losses by the number of counted tokens (all "
            "micro-batches together) to get the mean.",
        ),
        (
            _grad(weights, lambda w: _token_loss(w, micro[-1][0], micro[-1][1], "mean")),
            "that is the last micro-batch's "
            "gradient alone: zero the gradient once, before the loop, and let backward() add to it.",
        ),
    ]


def _accumulation_cases() -> list[tuple[str, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]]:
    g = torch.Generator().manual_seed(7)
    cases = []
    for name, d, vocab, shapes in (
        ("3 micro-batches of 2 sequences, padded differently", 4, 5, [(2, 6), (2, 6), (2, 6)]),
        ("micro-batches of 1, 3 and 2 sequences", 3, 7, [(1, 5), (3, 5), (2, 5)]),
        ("one micro-batch", 2, 3, [(4, 3)]),
    ):
        w = torch.randn(d, vocab, generator=g, dtype=torch.float64)
        micro = []
        for i, (b, T) in enumerate(shapes):
            x = torch.randn(b, T, d, generator=g, dtype=torch.float64)
            y = torch.randint(vocab, (b, T), generator=g)
            y[:, T - 1 - i :] = IGNORE_INDEX  # padding: a different amount per micro-batch
            y[0, 0] = IGNORE_INDEX  # and a masked prompt token
            micro.append((x, y))
        cases.append((name, w, micro))
    return cases


@register(
    "scaling.masked_accumulation", chapter=CHAPTER, kind="build", title="Gradient accumulation with masked tokens"
)
def check_masked_accumulation(fn: Any) -> str:
    """Micro-batches of different sizes and different numbers of counted tokens."""
    for name, w, micro in _accumulation_cases():
        label = f"accumulated_grad(weights {tuple(w.shape)}, <{name}>)"
        got = call(fn, w.clone(), [(x.clone(), y.clone()) for x, y in micro], label=label)
        expected = reference_accumulated_grad(w, micro)
        got = tensor_answer(got, label, expected=expected, hint="return the gradient, a tensor shaped like weights.")
        if got.shape != expected.shape:
            raise mismatch(
                f"{label} has the wrong shape.",
                f"shape {tuple(expected.shape)}",
                got,
                "return the gradient with respect to weights, of the same shape.",
            )
        if not same(got, expected):
            raise mismatch(
                f"{label} is not the big batch's gradient.",
                expected,
                got,
                known_mistake(got, _accumulation_variants(w, micro))
                or "for each micro-batch: loss = cross_entropy(..., ignore_index=-100, reduction='sum') / "
                "(counted tokens in all micro-batches); loss.backward(); return weights.grad.",
            )
    return (
        "Correct: the accumulated gradient equals the big batch's, however the counted tokens are spread "
        "over the micro-batches."
    )


# --------------------------------------------------------------------------- ZeRO-1 Adam step

BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


def shard_bounds(n: int, world_size: int) -> list[tuple[int, int]]:
    """Rank r's slice [start, end) of a flat tensor of n numbers: ceil(n / world_size) each,
    the last ones shorter (or empty)."""
    size = -(-n // world_size)
    return [(min(r * size, n), min((r + 1) * size, n)) for r in range(world_size)]


def _adam(
    p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, step: int, lr: float, correct: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b1, b2 = BETAS
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat, v_hat = (m / (1 - b1**step), v / (1 - b2**step)) if correct else (m, v)
    return p - lr * m_hat / (v_hat.sqrt() + ADAM_EPS), m, v


def reference_zero1_step(
    param: torch.Tensor,
    rank_grads: Sequence[torch.Tensor],
    m_shards: Sequence[torch.Tensor],
    v_shards: Sequence[torch.Tensor],
    step: int,
    lr: float,
    *,
    reduce: str = "mean",
    own: bool = False,
    correct: bool = True,
    gather: bool = True,
) -> dict[str, Any]:
    """One Adam step with the optimizer states sharded over the ranks (ZeRO stage 1)."""
    world = len(rank_grads)
    stacked = torch.stack(list(rank_grads))
    full = stacked.mean(dim=0) if reduce == "mean" else stacked.sum(dim=0)
    new = param.clone()
    ms, vs = [], []
    for r, (a, b) in enumerate(shard_bounds(len(param), world)):
        g = rank_grads[r][a:b] if own else full[a:b]
        p, m, v = _adam(param[a:b], g, m_shards[r], v_shards[r], step, lr, correct)
        if gather or r == 0:
            new[a:b] = p
        ms.append(m)
        vs.append(v)
    return {"param": new, "m": ms, "v": vs}


def _zero_cases() -> list[
    tuple[str, torch.Tensor, list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], int, float]
]:
    g = torch.Generator().manual_seed(21)
    cases = []
    for name, n, world, step, lr in (
        ("8 numbers on 2 ranks, the first step", 8, 2, 1, 0.1),
        ("10 numbers on 4 ranks (3, 3, 3, 1), step 5", 10, 4, 5, 0.01),
        ("7 numbers on 3 ranks, step 100", 7, 3, 100, 0.05),
    ):
        param = torch.randn(n, generator=g, dtype=torch.float64)
        grads = [torch.randn(n, generator=g, dtype=torch.float64) for _ in range(world)]
        first = step == 1
        ms = [
            torch.zeros(b - a, dtype=torch.float64)
            if first
            else 0.1 * torch.randn(b - a, generator=g, dtype=torch.float64)
            for a, b in shard_bounds(n, world)
        ]
        vs = [
            torch.zeros(b - a, dtype=torch.float64)
            if first
            else 0.1 * torch.rand(b - a, generator=g, dtype=torch.float64)
            for a, b in shard_bounds(n, world)
        ]
        cases.append((name, param, grads, ms, vs, step, lr))
    return cases


def _zero_answer(got: Any, label: str, expected: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(got, dict) or not {"param", "m", "v"} <= set(got):
        raise CheckFailed(
            f"{label} should return a dict {{'param': ..., 'm': [...], 'v': [...]}}, but returned {describe(got)}."
        )
    for key in ("m", "v"):
        shards = got[key]
        if not isinstance(shards, (list, tuple)) or len(shards) != len(expected[key]):
            raise mismatch(
                f"{label}['{key}'] should be a list with one shard per rank.",
                [tuple(s.shape) for s in expected[key]],
                shards,
            )
        for r, (a, b) in enumerate(zip(shards, expected[key], strict=True)):
            if not isinstance(a, torch.Tensor) or a.shape != b.shape:
                raise mismatch(
                    f"{label}['{key}'][{r}] should be rank {r}'s shard, of shape {tuple(b.shape)}.",
                    b,
                    a,
                    "rank r owns numbers r * s to (r + 1) * s, with s = ceil(n / world_size).",
                )
    return got


def _same_zero(got: dict[str, Any], expected: dict[str, Any]) -> bool:
    return same(got["param"], expected["param"]) and all(
        same(a, b) for key in ("m", "v") for a, b in zip(got[key], expected[key], strict=True)
    )


@register("scaling.zero1_step", chapter=CHAPTER, kind="build", title="One ZeRO-1 Adam step across ranks")
def check_zero1_step(fn: Any) -> str:
    """Even and uneven shards, first and later steps."""
    for name, param, grads, ms, vs, step, lr in _zero_cases():
        label = f"zero1_step(<{name}>, step={step}, lr={lr})"
        got = call(
            fn,
            param.clone(),
            [x.clone() for x in grads],
            [x.clone() for x in ms],
            [x.clone() for x in vs],
            step,
            lr,
            label=label,
        )
        expected = reference_zero1_step(param, grads, ms, vs, step, lr)
        got = _zero_answer(got, label, expected)
        if not isinstance(got["param"], torch.Tensor) or got["param"].shape != param.shape:
            raise mismatch(
                f"{label}['param'] should be the whole updated parameter, gathered from all ranks.",
                expected["param"],
                got["param"],
                "put every rank's updated shard back in place.",
            )
        if not _same_zero(got, expected):
            variants: list[tuple[dict[str, Any], str]] = [
                (
                    {"reduce": "sum"},
                    "average the ranks' gradients (all-reduce, then divide by world_size); "
                    "a sum makes the step depend on the number of GPUs.",
                ),
                (
                    {"own": True},
                    "each rank's shard must be updated with the gradient averaged over *all* ranks "
                    "(reduce-scatter), not with that rank's own gradient.",
                ),
                (
                    {"correct": False},
                    "Adam divides m by (1 - beta1 ** step) and v by (1 - beta2 ** step) "
                    "(bias correction) before the update.",
                ),
                (
                    {"gather": False},
                    "only rank 0's shard of the parameter changed: gather every rank's updated "
                    "shard (all-gather) into the returned parameter.",
                ),
                (
                    {"step_shift": True},
                    "step is this step's number, counted from 1: use it as it is in the bias correction.",
                ),
            ]
            hint = None
            for kw, why in variants:
                if kw.pop("step_shift", False):
                    wrong = reference_zero1_step(param, grads, ms, vs, step + 1, lr)
                else:
                    wrong = reference_zero1_step(param, grads, ms, vs, step, lr, **kw)
                if _same_zero(got, wrong):
                    hint = why
                    break
            shown = "param" if not same(got["param"], expected["param"]) else "m"
            raise mismatch(
                f"{label}: {shown} is wrong.",
                expected[shown],
                got[shown],
                hint
                or "g = mean of rank_grads; for each rank r with slice [a, b): m_r = 0.9 m_r + 0.1 g[a:b], "
                "v_r = 0.999 v_r + 0.001 g[a:b]**2, param[a:b] -= lr * m_hat / (sqrt(v_hat) + 1e-8).",
            )
    return (
        "Correct: gradients averaged, each rank's Adam shard updated with its slice, the parameter gathered; "
        "the same numbers as Adam on one GPU, with 1 / world_size of its optimizer memory per rank."
    )


# --------------------------------------------------------------------------- compute-optimal size


def _optimal_ref(c: float) -> tuple[float, float]:
    n = math.sqrt(c / 120)
    return n, 20 * n


_OPTIMAL_MISTAKES: list[Mistake] = [
    (
        lambda c: (20 * math.sqrt(c / 120), math.sqrt(c / 120)),
        "you returned (n_tokens, n_params); return the parameters first: (n_params, n_tokens).",
    ),
    (
        lambda c: (math.sqrt(c / 20), 20 * math.sqrt(c / 20)),
        "you left out the 6 of C = 6·N·D: with D = 20·N, C = 120·N², so N = sqrt(C / 120).",
    ),
    (
        lambda c: (math.sqrt(c / 40), 20 * math.sqrt(c / 40)),
        "you used C = 2·N·D (forward only); training costs 6·N·D, so N = sqrt(C / 120).",
    ),
    (lambda c: (c / 120, 20 * c / 120), "you forgot the square root: C = 120·N² gives N = sqrt(C / 120)."),
    (
        lambda c: (math.sqrt(c / 120), math.sqrt(c / 120) / 20),
        "the data should be 20 tokens per parameter, D = 20·N, not N / 20.",
    ),
    (lambda c: (math.sqrt(c / 6), 20 * math.sqrt(c / 6)), "you left out the 20: D = 20·N turns C = 6·N·D into 120·N²."),
]


@register(
    "scaling.compute_optimal", chapter=CHAPTER, kind="formula", title="Chinchilla: the best model and data for a budget"
)
def check_compute_optimal(fn: Any) -> str:
    for c in (1.86e18, 5.76e23, 1e20, 120.0):
        label = f"compute_optimal({c:g})"
        got = call(fn, c, label=label)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise CheckFailed(f"{label} should return a pair (n_params, n_tokens), but returned {describe(got)}.")
        en, ed = _optimal_ref(c)
        n = float(number(got[0], f"{label}[0] (n_params)", en))
        d = float(number(got[1], f"{label}[1] (n_tokens)", ed))
        if not (close(n, en) and close(d, ed)):
            hint = known_mistake((n, d), _OPTIMAL_MISTAKES, c)
            if hint is None and close(n, en):
                hint = "n_params is right; the tokens are D = 20 · n_params."
            if hint is None and close(d, ed):
                hint = "n_tokens is right; n_params = n_tokens / 20."
            raise CheckFailed(
                f"{label} is wrong.\n  expected: (n_params={en:.6g}, n_tokens={ed:.6g})\n"
                f"  got:      (n_params={n:.6g}, n_tokens={d:.6g})\n"
                f"Hint: {hint or 'solve C = 6·N·D with D = 20·N: N = sqrt(C / 120), D = 20·N.'}"
            )
    n, d = _optimal_ref(5.76e23)
    return (
        f"Right in every case: Chinchilla's budget of 5.76e23 FLOPs buys {n / 1e9:.0f}B parameters "
        f"on {d / 1e12:.1f}T tokens."
    )


# --------------------------------------------------------------------------- experiment: a scaling law

LAW_MIN_PARAMS, LAW_MAX_PARAMS, LAW_TARGET = 1e3, 1e7, 1e9
LAW_MAX_RUNS, LAW_TOLERANCE, LAW_NOISE = 16, 0.03, 0.003
LAW_SEEDS = (0, 1, 2)


def hidden_law(seed: int) -> tuple[float, float, float]:
    """(E, A, alpha) of L(N) = E + A * N ** -alpha, drawn near Chinchilla's fit."""
    rng = random.Random(1000 + seed)
    return rng.uniform(1.6, 2.2), rng.uniform(200, 500), rng.uniform(0.28, 0.36)


class TrainingRuns:
    """What the learner's function receives as ``run``: the final loss of a model of n
    parameters (a hidden law, with 0.3 % run-to-run noise), at most LAW_MAX_RUNS times."""

    def __init__(self, seed: int) -> None:
        self.seed, self.law = seed, hidden_law(seed)
        self.sizes: list[float] = []

    def __call__(self, n_params: float) -> float:
        n = float(n_params)
        if not LAW_MIN_PARAMS <= n <= LAW_MAX_PARAMS:
            raise ValueError(f"run(n_params) takes {LAW_MIN_PARAMS:.0e} to {LAW_MAX_PARAMS:.0e} parameters, got {n:g}")
        if len(self.sizes) >= LAW_MAX_RUNS:
            raise ValueError(f"the budget is {LAW_MAX_RUNS} runs; this is run {len(self.sizes) + 1}")
        self.sizes.append(n)
        e, a, alpha = self.law
        noise = random.Random(f"{self.seed}-{n:.6g}").gauss(0.0, LAW_NOISE)
        return (e + a * n**-alpha) * (1 + noise)

    def true_loss(self, n: float) -> float:
        e, a, alpha = self.law
        return e + a * n**-alpha


def _pure_power_law(runs: TrainingRuns) -> float | None:
    """The prediction of a straight line in log-log space through the runs the learner made."""
    if len(set(runs.sizes)) < 2:
        return None
    x = torch.log(torch.tensor(runs.sizes, dtype=torch.float64))
    y = torch.log(torch.tensor([_noisy(runs, n) for n in runs.sizes], dtype=torch.float64))
    design = torch.stack([torch.ones_like(x), x], dim=1)
    a, b = torch.linalg.lstsq(design, y[:, None]).solution[:, 0].tolist()
    return math.exp(a + b * math.log(LAW_TARGET))


def _noisy(runs: TrainingRuns, n: float) -> float:
    e, a, alpha = runs.law
    return (e + a * n**-alpha) * (1 + random.Random(f"{runs.seed}-{n:.6g}").gauss(0.0, LAW_NOISE))


def _only_the_run(runs: TrainingRuns) -> Callable[[float], float]:
    """A plain function to hand the learner: it runs models and tells nothing of the law."""

    def run(n_params: float) -> float:
        return runs(n_params)

    return run


@register(
    "scaling.scaling_law",
    chapter=CHAPTER,
    kind="experiment",
    time_limit=30,
    title="Experiment: predict a bigger model's loss from a scaling law",
)
def check_scaling_law(fn: Any) -> str:
    """Three hidden laws; the learner's function runs models, fits, and predicts at 1e9."""
    lines = []
    for seed in LAW_SEEDS:
        runs = TrainingRuns(seed)
        label = f"predict_loss(run, max_params={LAW_MAX_PARAMS:.0e}, target_params={LAW_TARGET:.0e}) [law {seed}]"
        got = call(
            fn,
            _only_the_run(runs),
            LAW_MAX_PARAMS,
            LAW_TARGET,
            label=label,
            hints=[
                ("the budget is", f"make at most {LAW_MAX_RUNS} runs."),
                ("takes 1e+03 to 1e+07", "choose sizes between 1e3 and 1e7 parameters."),
            ],
        )
        truth = runs.true_loss(LAW_TARGET)
        value = number(got, label, truth)
        error = (value - truth) / truth
        if not math.isfinite(value) or abs(error) > LAW_TOLERANCE:
            spread = (math.log10(max(runs.sizes)) - math.log10(min(runs.sizes))) if runs.sizes else 0.0
            pure = _pure_power_law(runs)
            if not runs.sizes:
                hint = "call run(n_params) for the sizes you choose, and fit your law to the losses it returns."
            elif pure is not None and close(value, pure, rel=0.01):
                hint = (
                    "a straight line in log-log space is a pure power law, L = A * N ** -alpha, which falls "
                    "to 0 for big models. Real losses level off at an irreducible loss E: fit "
                    "L = E + A * N ** -alpha (for example, try many E below the smallest loss and fit "
                    "log(L - E) against log N for each; keep the E with the smallest error)."
                )
            elif spread < 3:
                hint = (
                    f"your runs span {spread:.1f} decades of size; spread them over the whole range "
                    f"(1e3 to 1e7, log-spaced) so the fit sees the curve bend."
                )
            else:
                hint = (
                    "fit L = E + A * N ** -alpha to your runs, and evaluate it at target_params. Use all "
                    f"{LAW_MAX_RUNS} runs, log-spaced: the noise is 0.3 % per run."
                )
            raise CheckFailed(
                f"{label} is off by {error:+.1%}.\n  expected: {truth:.4f} (within {LAW_TOLERANCE:.0%})\n"
                f"  got:      {value!r}\n  your runs: {len(runs.sizes)}, from {min(runs.sizes, default=0):.3g} to "
                f"{max(runs.sizes, default=0):.3g} parameters\nHint: {hint}"
            )
        lines.append(f"law {seed}: {value:.4f} against {truth:.4f} ({error:+.2%})")
    return (
        f"Predicted within {LAW_TOLERANCE:.0%} at {LAW_TARGET:.0e} parameters, 100 times the biggest run: "
        + "; ".join(lines)
    )
