"""Chapter 11's checks (``llmbook.exercises.checks.ch11_emergent``): the table that
test_exercises_checks.py runs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmbook.model import IGNORE_INDEX

CHAPTER = "11"


def k_shot_prompt(instruction, examples, query):
    lines = [instruction] if instruction else []
    lines += [f"{x}: {y}" for x, y in examples]
    return "\n".join([*lines, f"{query}:"])


def repeated_sequences(batch, length, vocab_size, generator):
    segment = torch.randint(vocab_size, (batch, length), generator=generator)
    return torch.cat([segment, segment], dim=1)


def induction_score(weights):
    T = weights.shape[-1]
    L = T // 2
    t = torch.arange(L, T)
    return weights[..., t, t - L + 1].mean(dim=-1)


def induction_score_loop(weights):
    """A slower, loop-based answer: must pass too."""
    T = weights.shape[-1]
    L = T // 2
    total = 0
    for t in range(L, T):
        total = total + weights[..., t, t - L + 1]
    return total / (T - L)


def sequence_logprob(logits, targets):
    logp = torch.log_softmax(logits, dim=-1)
    mask = targets != IGNORE_INDEX
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(dim=-1)


def dpo_loss(pc, pr, rc, rr, beta):
    return -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()


def group_advantages(rewards, group_size):
    r = rewards.view(-1, group_size)
    return ((r - r.mean(dim=1, keepdim=True)) / (r.std(dim=1, keepdim=True) + 1e-6)).view(-1)


def group_advantages_where(rewards, group_size):
    """Zero where a group's std is 0 instead of an eps: must pass too."""
    r = rewards.reshape(-1, group_size)
    std = r.std(dim=1, keepdim=True)
    centred = r - r.mean(dim=1, keepdim=True)
    return torch.where(std > 0, centred / std.clamp(min=1e-12), torch.zeros_like(r)).flatten()


def _grouped(rewards, group_size):
    return rewards.view(-1, group_size)


CORRECT = {
    "emergent.k_shot_prompt": [k_shot_prompt],
    "emergent.repeated_sequences": [
        repeated_sequences,
        lambda b, n, v, g: torch.randint(v, (b, n), generator=g).repeat(1, 2),
    ],
    "emergent.induction_score": [induction_score, induction_score_loop],
    "emergent.sequence_logprob": [
        sequence_logprob,
        lambda lg, y: -F.cross_entropy(lg.transpose(1, 2), y, reduction="none").sum(-1),
    ],
    "emergent.dpo_loss": [dpo_loss],
    "emergent.group_advantages": [group_advantages, group_advantages_where],
}


def _mutating(instruction, examples, query):
    examples.append((query, "?"))
    return k_shot_prompt(instruction, examples[:-1], query)


def _offset(start, offset):
    def score(weights):
        T = weights.shape[-1]
        t = torch.arange(start(T), T)
        return weights[..., t, t - offset(T)].mean(dim=-1)
    return score


def _picked(values, targets):
    return values.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)


def _mean_logprob(logits, targets):
    mask = targets != IGNORE_INDEX
    return sequence_logprob(logits, targets) / mask.sum(-1).clamp(min=1)


def _unmasked(logits, targets):
    return _picked(torch.log_softmax(logits, dim=-1), targets).sum(-1)


def _probabilities(logits, targets):
    return (_picked(logits.softmax(-1), targets) * (targets != IGNORE_INDEX)).sum(-1)


def _raw_logits(logits, targets):
    return (_picked(logits, targets) * (targets != IGNORE_INDEX)).sum(-1)


def _shifted(logits, targets):
    return sequence_logprob(logits[:, :-1], targets[:, 1:])


def _margin(pc, pr, rc, rr):
    return (pc - rc) - (pr - rr)


MISTAKES = {
    "emergent.k_shot_prompt": [
        (lambda i, e, q: k_shot_prompt(i, e, q) + "\n", "no newline or space after"),
        (lambda i, e, q: k_shot_prompt(i, e, q) + " ", "no newline or space after"),
        (lambda i, e, q: "\n".join([i] + [f"{x}: {y}" for x, y in e] + [f"{q}:"]), "no blank first line"),
        (lambda i, e, q: " ".join(([i] if i else []) + [f"{x}: {y}" for x, y in e] + [f"{q}:"]), "own line"),
        (lambda i, e, q: "\n".join(([i] if i else []) + [f"{x}:{y}" for x, y in e] + [f"{q}:"]), "one space"),
        (lambda i, e, q: "\n".join([f"{x}: {y}" for x, y in e] + [f"{q}:"]), "first line"),
        (lambda i, e, q: ["x"], "one string"),
        (_mutating, "changed the list"),
    ],
    "emergent.repeated_sequences": [
        (lambda b, n, v, g: torch.randint(v, (b, n), generator=g).repeat_interleave(2, dim=1), "repeat_interleave"),
        (lambda b, n, v, g: torch.randint(v, (b, n), generator=g).repeat(2, 1), "dim=1"),
        (lambda b, n, v, g: torch.randint(v, (1, n), generator=g).repeat(b, 2), "same sequence"),
        (lambda b, n, v, g: torch.randint(v, (b, n), generator=g).repeat(1, 2).float(), "torch.long"),
        (lambda b, n, v, g: torch.randint(1, v + 1, (b, n), generator=g).repeat(1, 2), "0 .. "),
        (lambda b, n, v, g: torch.randint(v, (b, n)).repeat(1, 2), "generator"),
        (lambda b, n, v, g: torch.randint(v, (b, 2 * n), generator=g), "does not repeat"),
    ],
    "emergent.induction_score": [
        (_offset(lambda T: T // 2, lambda T: T // 2), "t - L,"),
        (_offset(lambda T: T // 2, lambda T: 1), "t - 1"),
        (_offset(lambda T: 1, lambda T: T // 2 - 1), "second copy only"),
        (lambda w: induction_score(w).mean(), "wrong shape"),
        (lambda w: 0.5, "should be 1.0"),
    ],
    "emergent.sequence_logprob": [
        (_mean_logprob, "*mean*"),
        (_unmasked, "must not count"),
        (_probabilities, "not probabilities"),
        (_raw_logits, "raw logits"),
        (_shifted, "already aligned"),
        (lambda lg, y: sequence_logprob(lg, y).tolist(), "one log-probability per row"),
    ],
    "emergent.dpo_loss": [
        (lambda pc, pr, rc, rr, b: -F.logsigmoid(_margin(pc, pr, rc, rr)).mean(), "beta is missing"),
        (lambda pc, pr, rc, rr, b: -F.logsigmoid(-b * _margin(pc, pr, rc, rr)).mean(), "sign is flipped"),
        (lambda pc, pr, rc, rr, b: F.logsigmoid(b * _margin(pc, pr, rc, rr)).mean(), "minus sign"),
        (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * _margin(pc, pr, rc, rr)).sum(), "do not sum"),
        (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((rc - pc) - (rr - pr))).mean(), "policy minus reference"),
        (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pc - rc) - (rr - pr))).mean(), "subtracted as a whole"),
        (lambda pc, pr, rc, rr, b: -torch.log(torch.sigmoid(b * _margin(pc, pr, rc, rr))).mean(), "F.logsigmoid"),
        (lambda pc, pr, rc, rr, b: dpo_loss(pc, pr, rc, rr, b).item(), "as a tensor"),
        (lambda pc, pr, rc, rr, b: dpo_loss(pc, pr, rc, rr, b).detach(), "stay connected"),
        (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * _margin(pc, pr, rc, rr)), "one number"),
    ],    "emergent.group_advantages": [
        (lambda r, n: ((_grouped(r, n) - _grouped(r, n).mean(1, keepdim=True))
                       / (_grouped(r, n).std(1, keepdim=True, unbiased=False) + 1e-6)).view(-1),
         "sample standard deviation"),
        (lambda r, n: (_grouped(r, n) - _grouped(r, n).mean(1, keepdim=True)).view(-1),
         "not only subtract the mean"),
        (lambda r, n: (r - r.mean()) / (r.std() + 1e-6), "not over the whole batch"),
        (lambda r, n: ((r.view(n, -1) - r.view(n, -1).mean(0)) / (r.view(n, -1).std(0) + 1e-6)).view(-1),
         "consecutive"),
        (lambda r, n: -group_advantages(r, n), "sign is flipped"),
        (lambda r, n: ((_grouped(r, n) - _grouped(r, n).mean(1, keepdim=True))
                       / _grouped(r, n).std(1, keepdim=True)).view(-1), ("eps", "nan")),
        (lambda r, n: group_advantages(r, n).view(-1, n), "shape"),
        (lambda r, n: group_advantages(r, n).tolist(), "torch.Tensor"),
        (lambda r, n: r.sub_(r.mean()), "in place"),
    ],
}
