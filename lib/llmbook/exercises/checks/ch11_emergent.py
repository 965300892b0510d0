"""Checks for chapter 11, "Emergent abilities and learning from preferences".

Five exercises build what the chapter measured with the library or on fixed layouts:
the induction score of an attention map for *any* token sequence (the chapter's score
assumed a segment followed by its copy), the reward model's pairwise loss, one DPO step
and one GRPO step on a tiny linear policy (the loss, its gradient and the update), and an
experiment: choose DPO's beta and learning rate so that the policy ranks held-out pairs
better without drifting far from its reference. Each check names the input that failed,
shows expected and actual values, and recognises the usual mistakes (the first instead of
the latest occurrence, the same-token or previous-token key, a missing beta, an ascent
instead of a descent, a sum where the mean belongs, no clip or no min in PPO's objective,
advantages normalised over the batch, a population std, ``log(sigmoid(.))`` that
overflows) by recomputing the answer with that mistake.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from llmbook.exercises.compare import known_mistake, number, same, tensor_answer
from llmbook.exercises.core import CheckFailed, call, describe, mismatch, register

CHAPTER = "11"


def _in_shape(got: Any, shape: torch.Size) -> Any:
    """The answer in the reference's shape when it holds as many numbers, so that a known
    mistake is still recognised in an answer of shape (B, 1) instead of (B,)."""
    if isinstance(got, torch.Tensor) and got.numel() == shape.numel():
        return got.reshape(shape)
    return got


# --------------------------------------------------------------------------- induction score


def _induction_pairs(tokens: torch.Tensor, *, latest: bool = True, shift: int = 1) -> tuple[list[int], list[int]]:
    """(queries, keys): each position whose token occurred before, and the position after
    that earlier occurrence (the latest one, or the first when ``latest`` is False)."""
    seen: dict[int, int] = {}
    queries, keys = [], []
    for t, token in enumerate(tokens.tolist()):
        if token in seen:
            queries.append(t)
            keys.append(seen[token] + shift)
        if latest or token not in seen:
            seen[token] = t
    return queries, keys


def reference_induction_score(tokens: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean attention from every query whose token occurred earlier to the key right after
    the latest earlier occurrence; 0 per map when no token repeats."""
    queries, keys = _induction_pairs(tokens)
    if not queries:
        return torch.zeros(weights.shape[:-2], dtype=weights.dtype)
    return weights[..., queries, keys].mean(dim=-1)


def _induction_variants(tokens: torch.Tensor, weights: torch.Tensor) -> list[tuple[Any, str]]:
    T = weights.shape[-1]
    L = T // 2

    def score(queries: list[int], keys: list[int]) -> torch.Tensor:
        return weights[..., queries, keys].mean(dim=-1)

    q, k = _induction_pairs(tokens)
    q_first, k_first = _induction_pairs(tokens, latest=False)
    q_same, k_same = _induction_pairs(tokens, shift=0)
    fixed = list(range(L, T))
    return [
        (
            score(q_first, k_first),
            "when a token occurred several times before, look after its *latest* "
            "earlier occurrence (update the position you remember at every step).",
        ),
        (
            score(q_same, k_same),
            "you scored attention to the earlier occurrence itself (the same token); "
            "an induction head looks one further, at the token that came *after* it.",
        ),
        (
            score(q, [t - 1 for t in q]),
            "you scored attention to the previous token (t - 1): that is a previous-token head, not an induction head.",
        ),
        (
            weights[..., q, k].sum(dim=-1) / T,
            "average over the queries whose token occurred before only; "
            "the others have nothing to look back at and must not count.",
        ),
        (
            score(fixed, [t - L + 1 for t in fixed]),
            "that is the chapter's fixed-layout score (key t - L + 1, "
            "L = T // 2), which only fits a segment followed by its copy. Find each token's earlier "
            "occurrence in `tokens` instead.",
        ),
    ]


def _induction_cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(11)

    def maps(shape: tuple[int, ...]) -> torch.Tensor:
        T = shape[-1]
        scores = torch.randn(shape, generator=g, dtype=torch.float64) * 2
        future = torch.ones(T, T, dtype=torch.bool).triu(1)
        return scores.masked_fill(future, float("-inf")).softmax(dim=-1)

    repeat = torch.tensor([5, 9, 2, 7, 5, 9, 2, 7])
    prefix = torch.tensor([11, 12, 3, 8, 1, 6, 13, 3, 8, 1, 6, 14])
    thrice = torch.tensor([4, 0, 4, 1, 2, 4, 3, 0, 4, 1])
    return [
        ("a segment and its copy (T = 8)", repeat, maps((8, 8))),
        ("noise, a segment, noise, the segment again", prefix, maps((3, 12, 12))),
        ("token 4 at positions 0, 2, 5 and 8", thrice, maps((2, 2, 10, 10))),
        ("no token repeats", torch.arange(6), maps((4, 6, 6))),
    ]


@register("emergent.induction_score", chapter=CHAPTER, kind="build", title="The induction score of any sequence")
def check_induction_score(fn: Any) -> str:
    """A perfect induction head on a noisy sequence, then random maps with leading dims."""
    for name, tokens, weights in _induction_cases():
        label = f"induction_score(tokens={tokens.tolist()}, <attention of shape {tuple(weights.shape)}>) [{name}]"
        got = call(fn, tokens.clone(), weights.clone(), label=label)
        expected = reference_induction_score(tokens, weights)
        if expected.dim() == 0 and isinstance(got, float):  # one map: a float will do
            got = torch.tensor(got, dtype=expected.dtype)
        got = tensor_answer(
            got, label, expected=expected, hint="return one score per map, as a tensor of shape weights.shape[:-2]."
        )
        if got.shape != expected.shape:
            raise mismatch(
                f"{label} has the wrong shape.",
                f"shape {tuple(expected.shape)}",
                got,
                "average over the selected queries only (the last dimension after indexing), "
                "keeping the leading dimensions (batch, heads).",
            )
        if not same(got, expected):
            hint = (
                known_mistake(got, _induction_variants(tokens, weights))
                if len(_induction_pairs(tokens)[0])
                else "when no token repeats there is nothing to score: return zeros of shape "
                "weights.shape[:-2] (a mean of nothing would be nan)."
            )
            raise mismatch(
                f"{label} is not the induction score.",
                expected,
                got,
                hint
                or "average weights[..., t, s + 1] over the positions t whose token occurred "
                "before, s being its latest earlier position.",
            )
    tokens = torch.tensor([11, 12, 3, 8, 1, 6, 13, 3, 8, 1, 6, 14])
    q, k = _induction_pairs(tokens)
    perfect = torch.zeros(12, 12, dtype=torch.float64)
    perfect[torch.arange(12), torch.arange(12)] = 1.0
    perfect[q] = 0.0
    perfect[q, k] = 1.0
    label = f"induction_score(tokens={tokens.tolist()}, <a perfect induction head, (12, 12)>)"
    got = call(fn, tokens.clone(), perfect.clone(), label=label)
    value = scalar_or_none(got)
    if value is None or not math.isclose(value, 1.0, rel_tol=1e-6):
        raise mismatch(
            f"{label} should be 1.",
            1.0,
            got,
            known_mistake(_in_shape(got, torch.Size()), _induction_variants(tokens, perfect))
            or "for each position t whose token occurred before, find its latest earlier "
            "position s and read weights[..., t, s + 1]; average those.",
        )
    return (
        "Correct: attention from each repeated token to the token after its latest earlier occurrence, "
        "averaged per map, for any sequence."
    )


def scalar_or_none(value: Any) -> float | None:
    """A number or one-element tensor as a float; None for anything else."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


# --------------------------------------------------------------------------- the reward model's loss


def reference_reward_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry: mean of -log sigmoid(r_chosen - r_rejected)."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


_REWARD_MISTAKES: list[tuple[Callable[..., Any], str]] = [
    (
        lambda c, r: -F.logsigmoid(r - c).mean(),
        "the sign is flipped: the loss must be small when the "
        "chosen answer's reward is the *higher* one, so use sigmoid(r_chosen - r_rejected).",
    ),
    (lambda c, r: F.logsigmoid(c - r).mean(), "the loss is *minus* log sigmoid(...): you forgot the minus."),
    (lambda c, r: -F.logsigmoid(c - r).sum(), "average over the pairs (.mean()), do not sum."),
    (lambda c, r: -torch.sigmoid(c - r).mean(), "take the log of the sigmoid (F.logsigmoid)."),
    (
        lambda c, r: (r - c).clamp(min=0).mean(),
        "that is a hinge loss; the reward model's loss is -log sigmoid(r_chosen - r_rejected).",
    ),
]


@register("emergent.reward_loss", chapter=CHAPTER, kind="formula", title="The reward model's pairwise loss")
def check_reward_loss(fn: Any) -> str:
    """Random rewards, equal rewards (log 2), a huge wrong margin (finite)."""
    g = torch.Generator().manual_seed(3)
    cases = [
        (
            f"{n} pairs",
            torch.randn(n, generator=g, dtype=torch.float64) * 3,
            torch.randn(n, generator=g, dtype=torch.float64) * 3,
        )
        for n in (5, 1, 12)
    ]
    cases.append(("equal rewards", torch.ones(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)))
    cases.append(
        (
            "a margin of -2000",
            torch.tensor([-1000.0, 2.0], dtype=torch.float64),
            torch.tensor([1000.0, 1.0], dtype=torch.float64),
        )
    )
    for name, chosen, rejected in cases:
        label = f"reward_loss(r_chosen, r_rejected) [{name}]"
        got = call(fn, chosen.clone(), rejected.clone(), label=label)
        expected = reference_reward_loss(chosen, rejected)
        if not isinstance(got, torch.Tensor):
            raise mismatch(
                f"{label} should return the loss as a tensor, so that training can differentiate it.",
                expected,
                got,
                "keep it a tensor: no .item() or float(...) at the end.",
            )
        if got.numel() != 1:
            raise mismatch(
                f"{label} should return one number, the mean over the pairs.", expected, got, "finish with .mean()."
            )
        if not same(got.reshape(()), expected):
            hint = known_mistake(got.reshape(()), _REWARD_MISTAKES, chosen, rejected)
            if hint is None and not torch.isfinite(got).all():
                hint = (
                    "torch.log(torch.sigmoid(x)) rounds sigmoid(-2000) to 0 and gives inf; F.logsigmoid(x) "
                    "computes the same value accurately."
                )
            raise mismatch(
                f"{label} is not the pairwise loss.",
                expected,
                got,
                hint or "loss = -F.logsigmoid(r_chosen - r_rejected).mean()",
            )
    return "Correct: -log sigmoid(r_chosen - r_rejected), averaged, log 2 for a tie and finite for huge margins."


# --------------------------------------------------------------------------- a tiny linear policy


def _policy_logp(weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log pi(answer | prompt) for every answer: log_softmax(x @ W), (n, K)."""
    return torch.log_softmax(x @ weights, dim=-1)


def _picked(logp: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return logp.gather(1, index[:, None])[:, 0]


def _descend(
    weights: torch.Tensor, loss_of: Callable[[torch.Tensor], torch.Tensor], lr: float, sign: float = -1.0
) -> torch.Tensor:
    w = weights.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_of(w), w)
    return (weights + sign * lr * grad).detach()


def _dpo_loss_of(
    ref: torch.Tensor,
    x: torch.Tensor,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    beta: float,
    *,
    use_ref: bool = True,
    reduce: str = "mean",
    swap: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    def loss(w: torch.Tensor) -> torch.Tensor:
        pi, rf = _policy_logp(w, x), _policy_logp(ref, x)
        c, r = (rejected, chosen) if swap else (chosen, rejected)
        margin = _picked(pi, c) - _picked(pi, r)
        if use_ref:
            margin = margin - (_picked(rf, c) - _picked(rf, r))
        values = -F.logsigmoid(beta * margin)
        return values.mean() if reduce == "mean" else values.sum()

    return loss


def reference_dpo_step(
    weights: torch.Tensor,
    ref_weights: torch.Tensor,
    x: torch.Tensor,
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    beta: float,
    lr: float,
) -> torch.Tensor:
    """The weights after one gradient-descent step on the mean DPO loss of the pairs."""
    return _descend(weights, _dpo_loss_of(ref_weights, x, chosen, rejected, beta), lr)


def _dpo_case(seed: int, n: int, d: int, k: int, moved: float) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(d, k, generator=g, dtype=torch.float64)
    weights = ref + moved * torch.randn(d, k, generator=g, dtype=torch.float64)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    chosen = torch.randint(k, (n,), generator=g)
    rejected = (chosen + 1 + torch.randint(k - 1, (n,), generator=g)) % k
    return weights, ref, x, chosen, rejected


def _dpo_variants(
    w: torch.Tensor, ref: torch.Tensor, x: torch.Tensor, c: torch.Tensor, r: torch.Tensor, beta: float, lr: float
) -> list[tuple[Any, str]]:
    def step(sign: float = -1.0, **kw: Any) -> torch.Tensor:
        return _descend(w, _dpo_loss_of(ref, x, c, r, beta, **kw), lr, sign)

    grad = (reference_dpo_step(w, ref, x, c, r, beta, lr) - w) / -lr
    return [
        (step(sign=1.0), "that step goes *up* the loss: gradient descent subtracts, W - lr * grad."),
        (
            _descend(w, _dpo_loss_of(ref, x, c, r, 1.0), lr),
            "beta is missing: multiply the difference of log-ratios by beta before the sigmoid.",
        ),
        (
            step(use_ref=False),
            "the reference is missing: each answer's score is the log-ratio "
            "log pi(answer) - log pi_ref(answer), not log pi(answer) alone.",
        ),
        (step(reduce="sum"), "average the loss over the pairs (.mean()), do not sum."),
        (step(swap=True), "chosen and rejected are swapped: the loss must fall when the chosen answer gains."),
        (grad, "return the new weights, W - lr * grad, not the gradient."),
        (
            w,
            "the weights did not move: take the gradient of the loss with respect to W "
            "(W.requires_grad_() and loss.backward(), or torch.autograd.grad) and step.",
        ),
    ]


@register("emergent.dpo_step", chapter=CHAPTER, kind="build", title="One DPO step on a tiny policy")
def check_dpo_step(fn: Any) -> str:
    """A policy equal to its reference (margin 0), then policies that have moved."""
    for seed, (n, d, k, moved, beta, lr) in enumerate(
        ((4, 3, 5, 0.0, 0.1, 1.0), (6, 4, 6, 0.5, 0.5, 0.3), (16, 8, 6, 1.0, 2.0, 0.1), (1, 2, 3, 0.3, 1.0, 2.0))
    ):
        w, ref, x, c, r = _dpo_case(seed, n, d, k, moved)
        label = (
            f"dpo_step(weights ({d}, {k}), ref_weights, x ({n}, {d}), chosen={c.tolist()}, "
            f"rejected={r.tolist()}, beta={beta}, lr={lr})"
        )
        got = call(fn, w.clone(), ref.clone(), x.clone(), c.clone(), r.clone(), beta, lr, label=label)
        expected = reference_dpo_step(w, ref, x, c, r, beta, lr)
        got = tensor_answer(got, label, expected=expected, hint="return the updated weights, a tensor like W.")
        if got.shape != expected.shape:
            raise mismatch(
                f"{label} has the wrong shape.",
                f"shape {tuple(expected.shape)}",
                got,
                "return the whole weight matrix after the step, shape (d, K).",
            )
        if isinstance(got, torch.Tensor) and got.requires_grad:
            got = got.detach()
        if not same(got, expected, rtol=1e-4, atol=1e-6):
            hint = known_mistake(got, _dpo_variants(w, ref, x, c, r, beta, lr), rtol=1e-4, atol=1e-6)
            raise mismatch(
                f"{label} gives the wrong weights.",
                expected,
                got,
                hint
                or (
                    "loss = -logsigmoid(beta * ((log pi_w - log ref_w) - (log pi_l - log ref_l))).mean() with "
                    "log pi = log_softmax(x @ W); then W - lr * dloss/dW."
                ),
            )
    return "Correct: the DPO loss of a linear policy against its frozen reference, its gradient, and one descent step."


# --------------------------------------------------------------------------- one GRPO step

GRPO_EPS = 1e-6


def _advantages(
    rewards: torch.Tensor, group_size: int, *, unbiased: bool = True, whole: bool = False, scale: bool = True
) -> torch.Tensor:
    r = rewards.reshape(1, -1) if whole else rewards.reshape(-1, group_size)
    centred = r - r.mean(dim=1, keepdim=True)
    if scale:
        centred = centred / (r.std(dim=1, keepdim=True, unbiased=unbiased) + GRPO_EPS)
    return centred.reshape(-1)


def _grpo_loss_of(
    old: torch.Tensor,
    x: torch.Tensor,
    answers: torch.Tensor,
    advantages: torch.Tensor,
    clip_eps: float,
    *,
    clip: bool = True,
    use_min: bool = True,
    reduce: str = "mean",
    inverted: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    old_logp = _picked(_policy_logp(old, x), answers).detach()

    def loss(w: torch.Tensor) -> torch.Tensor:
        logp = _picked(_policy_logp(w, x), answers)
        ratio = torch.exp(old_logp - logp) if inverted else torch.exp(logp - old_logp)
        plain = ratio * advantages
        if not clip:
            objective = plain
        else:
            clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages
            objective = torch.minimum(plain, clipped) if use_min else clipped
        return -(objective.mean() if reduce == "mean" else objective.sum())

    return loss


def reference_grpo_step(
    weights: torch.Tensor,
    old_weights: torch.Tensor,
    x: torch.Tensor,
    answers: torch.Tensor,
    rewards: torch.Tensor,
    group_size: int,
    clip_eps: float,
    lr: float,
) -> torch.Tensor:
    """One descent step on -mean(min(rho A, clip(rho) A)) with group-normalised A."""
    adv = _advantages(rewards, group_size)
    return _descend(weights, _grpo_loss_of(old_weights, x, answers, adv, clip_eps), lr)


def _grpo_case(seed: int, groups: int, size: int, d: int, k: int, moved: float) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(100 + seed)
    old = torch.randn(d, k, generator=g, dtype=torch.float64)
    weights = old + moved * torch.randn(d, k, generator=g, dtype=torch.float64)
    prompts = torch.randn(groups, d, generator=g, dtype=torch.float64)
    x = prompts.repeat_interleave(size, dim=0)
    answers = torch.randint(k, (groups * size,), generator=g)
    rewards = torch.randint(2, (groups * size,), generator=g).double()
    rewards[:size] = torch.tensor([1.0] + [0.0] * (size - 1), dtype=torch.float64)
    return weights, old, x, answers, rewards


def _grpo_variants(
    w: torch.Tensor,
    old: torch.Tensor,
    x: torch.Tensor,
    a: torch.Tensor,
    rewards: torch.Tensor,
    size: int,
    eps: float,
    lr: float,
) -> list[tuple[Any, str]]:
    adv = _advantages(rewards, size)

    def step(advantages: torch.Tensor = adv, sign: float = -1.0, **kw: Any) -> torch.Tensor:
        return _descend(w, _grpo_loss_of(old, x, a, advantages, eps, **kw), lr, sign)

    return [
        (
            step(sign=1.0),
            "that step goes *up* the loss: the loss is minus the objective, and gradient "
            "descent subtracts, W - lr * grad.",
        ),
        (step(clip=False), "the clip is missing: PPO's objective is min(rho * A, clip(rho, 1 - eps, 1 + eps) * A)."),
        (
            step(use_min=False),
            "take the *minimum* of the plain and the clipped term, min(rho * A, "
            "clip(rho) * A); the clipped term alone lets a ratio below 1 - eps pay for itself when A > 0.",
        ),
        (
            step(_advantages(rewards, size, whole=True)),
            "normalise each reward within its own group (reshape to (-1, group_size)), not over the whole batch.",
        ),
        (
            step(_advantages(rewards, size, unbiased=False)),
            "use the sample standard deviation (torch.std's default, n - 1), not unbiased=False.",
        ),
        (
            step(_advantages(rewards, size, scale=False)),
            "divide the centred rewards by their group's std (+ 1e-6), not only subtract the mean.",
        ),
        (step(rewards), "the advantages are the rewards normalised within their group, not the raw rewards."),
        (step(inverted=True), "the ratio is pi / pi_old = exp(log pi - log pi_old), not the other way round."),
        (step(reduce="sum"), "average the per-answer objective over the batch (.mean()), do not sum."),
        (w, "the weights did not move: differentiate the loss with respect to W and step."),
    ]


@register("emergent.grpo_step", chapter=CHAPTER, kind="build", title="One GRPO step on a tiny policy")
def check_grpo_step(fn: Any) -> str:
    """A policy equal to the sampler (rho = 1), then policies far enough for the clip to act."""
    for seed, (groups, size, d, k, moved, eps, lr) in enumerate(
        (
            (2, 4, 3, 5, 0.0, 0.2, 1.0),
            (3, 4, 4, 6, 0.8, 0.2, 0.5),
            (4, 3, 5, 4, 1.5, 0.1, 0.3),
            (1, 6, 2, 3, 1.0, 0.3, 1.0),
        )
    ):
        w, old, x, a, rewards = _grpo_case(seed, groups, size, d, k, moved)
        label = (
            f"grpo_step(weights ({d}, {k}), old_weights, x ({groups * size}, {d}), answers={a.tolist()}, "
            f"rewards={rewards.tolist()}, group_size={size}, clip_eps={eps}, lr={lr})"
        )
        got = call(fn, w.clone(), old.clone(), x.clone(), a.clone(), rewards.clone(), size, eps, lr, label=label)
        expected = reference_grpo_step(w, old, x, a, rewards, size, eps, lr)
        got = tensor_answer(got, label, expected=expected, hint="return the updated weights, a tensor like W.")
        if got.shape != expected.shape:
            raise mismatch(
                f"{label} has the wrong shape.",
                f"shape {tuple(expected.shape)}",
                got,
                "return the whole weight matrix after the step, shape (d, K).",
            )
        if got.requires_grad:
            got = got.detach()
        if not same(got, expected, rtol=1e-4, atol=1e-6):
            hint = known_mistake(got, _grpo_variants(w, old, x, a, rewards, size, eps, lr), rtol=1e-4, atol=1e-6)
            raise mismatch(
                f"{label} gives the wrong weights.",
                expected,
                got,
                hint
                or (
                    "A = (r - group mean) / (group std + 1e-6); rho = exp(log pi(a) - log pi_old(a)); loss = "
                    "-mean(min(rho * A, clamp(rho, 1 - eps, 1 + eps) * A)); then W - lr * dloss/dW."
                ),
            )
    return (
        "Correct: group-normalised advantages, PPO's clipped ratio against the sampling policy, and one descent step."
    )


# --------------------------------------------------------------------------- experiment: DPO's beta

DPO_DIM, DPO_ANSWERS, DPO_TRAIN, DPO_TEST = 8, 6, 512, 2000
DPO_MAX_STEPS = 300
DPO_MIN_GAIN, DPO_MAX_DRIFT = 0.07, 0.7
DPO_SEED = 0


def dpo_world(seed: int) -> dict[str, Any]:
    """A hidden reward over K answers, a reference policy that knows a little of it, and
    train and held-out preference pairs labelled by that reward (Bradley-Terry noise)."""
    g = torch.Generator().manual_seed(seed)
    true = torch.randn(DPO_DIM, DPO_ANSWERS, generator=g)
    ref = 0.3 * true + torch.randn(DPO_DIM, DPO_ANSWERS, generator=g)

    def pairs(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.randn(n, DPO_DIM, generator=g)
        a = torch.randint(DPO_ANSWERS, (n,), generator=g)
        b = (a + 1 + torch.randint(DPO_ANSWERS - 1, (n,), generator=g)) % DPO_ANSWERS
        reward = x @ true
        first = torch.rand(n, generator=g) < torch.sigmoid(_picked(reward, a) - _picked(reward, b))
        return x, torch.where(first, a, b), torch.where(first, b, a)

    return {"ref": ref, "train": pairs(DPO_TRAIN), "test": pairs(DPO_TEST)}


def pair_accuracy(weights: torch.Tensor, pairs: tuple[torch.Tensor, ...]) -> float:
    """Share of pairs whose chosen answer the policy finds more likely than the rejected."""
    x, c, r = pairs
    logp = _policy_logp(weights, x)
    return (_picked(logp, c) > _picked(logp, r)).float().mean().item()


def drift(weights: torch.Tensor, ref: torch.Tensor, x: torch.Tensor) -> float:
    """Mean KL(pi || pi_ref) over the prompts x, in nats."""
    p, q = _policy_logp(weights, x), _policy_logp(ref, x)
    return (p.exp() * (p - q)).sum(dim=-1).mean().item()


def train_dpo(settings: dict[str, Any], seed: int = DPO_SEED) -> dict[str, float]:
    """DPO with Adam, full batch, from the reference; held-out accuracy and drift."""
    world = dpo_world(seed)
    ref = world["ref"]
    x, c, r = world["train"]
    torch.manual_seed(seed)
    w = ref.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([w], lr=settings["lr"])
    loss_of = _dpo_loss_of(ref, x, c, r, settings["beta"])
    for _ in range(settings["steps"]):
        optimizer.zero_grad()
        loss_of(w).backward()
        optimizer.step()
    w = w.detach()
    test = world["test"]
    return {
        "before": pair_accuracy(ref, test),
        "after": pair_accuracy(w, test),
        "drift": drift(w, ref, test[0]),
        "train": pair_accuracy(w, world["train"]),
    }


def _settings(got: Any, label: str) -> dict[str, Any]:
    example = "{'beta': ..., 'lr': ..., 'steps': ...}"
    if not isinstance(got, dict) or set(got) != {"beta", "lr", "steps"}:
        raise CheckFailed(
            f"{label} should return a dict with exactly the keys 'beta', 'lr' and 'steps', "
            f"like {example}; it returned {describe(got)}."
        )
    beta = number(got["beta"], f"{label}['beta']")
    lr = number(got["lr"], f"{label}['lr']")
    steps = got["steps"]
    if not (isinstance(steps, int) and not isinstance(steps, bool)) or not 1 <= steps <= DPO_MAX_STEPS:
        raise CheckFailed(
            f"{label}['steps'] should be a whole number from 1 to {DPO_MAX_STEPS}, got {describe(steps)}."
        )
    if not (beta > 0 and math.isfinite(beta)) or not (0 < lr <= 10 and math.isfinite(lr)):
        raise CheckFailed(f"{label}: beta must be positive and lr in (0, 10]; got beta={beta!r}, lr={lr!r}.")
    return {"beta": float(beta), "lr": float(lr), "steps": steps}


@register(
    "emergent.dpo_settings",
    chapter=CHAPTER,
    kind="experiment",
    time_limit=30,
    title="Experiment: DPO that learns without drifting",
)
def check_dpo_settings(fn: Any) -> str:
    """Trains the check's own DPO with the learner's settings; measures held-out ranking
    accuracy and the KL to the reference."""
    label = "dpo_settings()"
    settings = _settings(call(fn, label=label), label)
    result = train_dpo(settings)
    gain = result["after"] - result["before"]
    said = (
        f"With beta={settings['beta']:g}, lr={settings['lr']:g} and {settings['steps']} steps, held-out "
        f"accuracy went from {result['before']:.3f} to {result['after']:.3f} ({gain:+.3f}) and the drift "
        f"KL(pi || pi_ref) is {result['drift']:.3f} nats."
    )
    if result["drift"] > DPO_MAX_DRIFT:
        raise CheckFailed(
            f"{said}\n  target: gain >= {DPO_MIN_GAIN}, drift <= {DPO_MAX_DRIFT}\nHint: the policy drifted too "
            f"far from its reference. beta is the leash: DPO stops pulling once beta times the change in "
            f"log-ratio covers the data's preference, so a *larger* beta stops it nearer the reference. "
            f"(Fewer steps or a smaller lr only stop it early, on the way out.)"
        )
    if gain < DPO_MIN_GAIN:
        longer = train_dpo({**settings, "lr": max(settings["lr"], 0.1), "steps": DPO_MAX_STEPS})
        if longer["after"] - longer["before"] >= DPO_MIN_GAIN:
            hint = (
                "the policy stopped before DPO had finished: with this beta, a larger lr or more steps "
                f"(up to {DPO_MAX_STEPS}) reach a gain of {longer['after'] - longer['before']:+.3f}. "
                "Adam moves each weight by about lr per step."
            )
        else:
            hint = (
                "even trained to the end, this beta holds the policy too close to its reference "
                f"(gain {longer['after'] - longer['before']:+.3f}): a *smaller* beta lets DPO move further "
                "before it stops."
            )
        raise CheckFailed(f"{said}\n  target: gain >= {DPO_MIN_GAIN}, drift <= {DPO_MAX_DRIFT}\nHint: {hint}")
    return f"Target met. {said}"
