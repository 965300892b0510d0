"""Chapter 11's checks (``llmbook.exercises.checks.ch11_emergent``): the table that
test_exercises_checks.py runs, and the experiment's margins on other seeds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmbook.exercises.checks import ch11_emergent as checks

CHAPTER = "11"


def induction_score(tokens, weights):
    last, queries, keys = {}, [], []
    for t, token in enumerate(tokens.tolist()):
        if token in last:
            queries.append(t)
            keys.append(last[token] + 1)
        last[token] = t
    if not queries:
        return torch.zeros(weights.shape[:-2])
    return weights[..., queries, keys].mean(dim=-1)


def induction_score_matrix(tokens, weights):
    """With a (T, T) table of equal tokens instead of a dictionary: must pass too."""
    T = len(tokens)
    earlier = (tokens[:, None] == tokens[None, :]) & torch.ones(T, T, dtype=torch.bool).tril(-1)
    position = torch.arange(T).expand(T, T)
    latest = torch.where(earlier, position, -1).max(dim=1).values
    queries = torch.nonzero(latest >= 0).flatten()
    if len(queries) == 0:
        return weights.new_zeros(weights.shape[:-2])
    return weights[..., queries, latest[queries] + 1].mean(dim=-1)


def reward_loss(r_chosen, r_rejected):
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def _logp(w, x, index):
    return torch.log_softmax(x @ w, dim=-1).gather(1, index[:, None])[:, 0]


def dpo_step(weights, ref_weights, x, chosen, rejected, beta, lr):
    w = weights.clone().requires_grad_(True)
    with torch.no_grad():
        ref_margin = _logp(ref_weights, x, chosen) - _logp(ref_weights, x, rejected)
    margin = _logp(w, x, chosen) - _logp(w, x, rejected) - ref_margin
    loss = -F.logsigmoid(beta * margin).mean()
    loss.backward()
    return (w - lr * w.grad).detach()


def dpo_step_by_hand(weights, ref_weights, x, chosen, rejected, beta, lr):
    """The gradient written out (softmax's Jacobian), no autograd: must pass too."""
    p = torch.softmax(x @ weights, dim=-1)
    margin = (
        _logp(weights, x, chosen)
        - _logp(weights, x, rejected)
        - _logp(ref_weights, x, chosen)
        + _logp(ref_weights, x, rejected)
    )
    push = -beta * torch.sigmoid(-beta * margin) / len(x)  # dloss / dmargin
    onehot = F.one_hot(chosen, p.shape[1]) - F.one_hot(rejected, p.shape[1])
    return weights - lr * x.T @ (push[:, None] * onehot.to(x.dtype))


def grpo_step(weights, old_weights, x, answers, rewards, group_size, clip_eps, lr):
    r = rewards.view(-1, group_size)
    adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-6)).flatten()
    w = weights.clone().requires_grad_(True)
    with torch.no_grad():
        old = _logp(old_weights, x, answers)
    ratio = (_logp(w, x, answers) - old).exp()
    objective = torch.min(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    (grad,) = torch.autograd.grad(-objective.mean(), w)
    return weights - lr * grad


def dpo_settings():
    return {"beta": 2.0, "lr": 0.1, "steps": 100}


CORRECT = {
    "emergent.induction_score": [induction_score, induction_score_matrix],
    "emergent.reward_loss": [reward_loss, lambda c, r: F.softplus(r - c).mean()],
    "emergent.dpo_step": [dpo_step, dpo_step_by_hand],
    "emergent.grpo_step": [grpo_step],
    "emergent.dpo_settings": [dpo_settings, lambda: {"beta": 2.5, "lr": 0.05, "steps": 200}],
}


def _first_occurrence(tokens, weights):
    first, queries, keys = {}, [], []
    for t, token in enumerate(tokens.tolist()):
        if token in first:
            queries.append(t)
            keys.append(first[token] + 1)
        else:
            first[token] = t
    return weights[..., queries, keys].mean(dim=-1) if queries else torch.zeros(weights.shape[:-2])


def _same_token(tokens, weights):
    last, queries, keys = {}, [], []
    for t, token in enumerate(tokens.tolist()):
        if token in last:
            queries.append(t)
            keys.append(last[token])
        last[token] = t
    return weights[..., queries, keys].mean(dim=-1) if queries else torch.zeros(weights.shape[:-2])


def _fixed_layout(tokens, weights):
    T = weights.shape[-1]
    t = torch.arange(T // 2, T)
    return weights[..., t, t - T // 2 + 1].mean(dim=-1)


def _dpo(beta_used=None, sign=-1.0, use_ref=True, reduce="mean"):
    def step(weights, ref_weights, x, chosen, rejected, beta, lr):
        w = weights.clone().requires_grad_(True)

        margin = _logp(w, x, chosen) - _logp(w, x, rejected)
        if use_ref:
            margin = margin - (_logp(ref_weights, x, chosen) - _logp(ref_weights, x, rejected)).detach()
        values = -F.logsigmoid((beta if beta_used is None else beta_used) * margin)
        (values.mean() if reduce == "mean" else values.sum()).backward()
        return (w + sign * lr * w.grad).detach()

    return step


def _grpo(advantages=None, clip=True, use_min=True, sign=-1.0):
    def step(weights, old_weights, x, answers, rewards, group_size, clip_eps, lr):
        r = rewards.view(-1, group_size)
        adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-6)).flatten()
        if advantages is not None:
            adv = advantages(rewards, group_size)
        w = weights.clone().requires_grad_(True)
        ratio = (_logp(w, x, answers) - _logp(old_weights, x, answers).detach()).exp()
        clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv
        objective = ratio * adv if not clip else torch.min(ratio * adv, clipped) if use_min else clipped
        (grad,) = torch.autograd.grad(-objective.mean(), w)
        return weights + sign * lr * grad

    return step


MISTAKES = {
    "emergent.induction_score": [
        (_first_occurrence, "*latest*"),
        (_same_token, ("the same token", "expected:", "got:")),
        (_fixed_layout, "fixed-layout"),
        (lambda tokens, w: induction_score(tokens, w).mean(), "wrong shape"),
        (lambda tokens, w: 0.5, ("a segment and its copy", "expected:")),
        (lambda tokens, w: [0.5], "torch.Tensor"),
    ],
    "emergent.reward_loss": [
        (lambda c, r: -F.logsigmoid(r - c).mean(), "sign is flipped"),
        (lambda c, r: F.logsigmoid(c - r).mean(), "forgot the minus"),
        (lambda c, r: -F.logsigmoid(c - r).sum(), "do not sum"),
        (lambda c, r: -torch.log(torch.sigmoid(c - r)).mean(), ("margin of -2000", "F.logsigmoid")),
        (lambda c, r: reward_loss(c, r).item(), "as a tensor"),
        (lambda c, r: -F.logsigmoid(c - r), "one number"),
    ],
    "emergent.dpo_step": [
        (_dpo(sign=1.0), "goes *up*"),
        (_dpo(beta_used=1.0), "beta is missing"),
        (_dpo(use_ref=False), "reference is missing"),
        (_dpo(reduce="sum"), "do not sum"),
        (lambda w, *rest: w.clone(), "did not move"),
        (lambda *args: None, ("dpo_step(weights (3, 5)", "torch.Tensor")),
    ],
    "emergent.grpo_step": [
        (_grpo(sign=1.0), "goes *up*"),
        (_grpo(clip=False), "clip is missing"),
        (_grpo(use_min=False), "*minimum*"),
        (_grpo(lambda r, n: (r - r.mean()) / (r.std() + 1e-6)), "whole batch"),
        (
            _grpo(
                lambda r, n: (
                    (r.view(-1, n) - r.view(-1, n).mean(1, keepdim=True))
                    / (r.view(-1, n).std(1, keepdim=True, unbiased=False) + 1e-6)
                ).flatten()
            ),
            "sample standard deviation",
        ),
        (_grpo(lambda r, n: r), "raw rewards"),
    ],
    "emergent.dpo_settings": [
        (lambda: {"beta": 0.1, "lr": 0.1, "steps": 100}, ("drifted too far", "larger* beta")),
        (lambda: {"beta": 10.0, "lr": 0.1, "steps": 100}, ("smaller* beta", "target:")),
        (lambda: {"beta": 2.0, "lr": 1e-4, "steps": 100}, "larger lr or more steps"),
        (lambda: {"beta": 2.0, "lr": 0.1, "steps": 1000}, "from 1 to 300"),
        (lambda: {"beta": 2.0, "lr": 0.1}, "exactly the keys"),
    ],
}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_reference_settings_pass_with_a_margin_on_other_worlds(seed: int) -> None:
    result = checks.train_dpo(dpo_settings(), seed=seed)
    assert result["after"] - result["before"] >= checks.DPO_MIN_GAIN + 0.03
    assert result["drift"] <= checks.DPO_MAX_DRIFT - 0.2
