"""Chapter 11's checks: right answers pass, the usual wrong answers fail with the right hint."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmbook.exercises import check, checks_for_chapter
from llmbook.model import IGNORE_INDEX


def k_shot_prompt(instruction, examples, query):
    lines = [instruction] if instruction else []
    lines += [f"{x}: {y}" for x, y in examples]
    return "\n".join(lines + [f"{query}:"])


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


def test_chapter_11_has_five_checks_in_exercise_order() -> None:
    names = [c.name for c in checks_for_chapter("11")]
    assert names == ["emergent.k_shot_prompt", "emergent.repeated_sequences", "emergent.induction_score",
                     "emergent.sequence_logprob", "emergent.dpo_loss"]


@pytest.mark.parametrize("name, answer", [
    ("emergent.k_shot_prompt", k_shot_prompt),
    ("emergent.repeated_sequences", repeated_sequences),
    ("emergent.repeated_sequences",
     lambda b, n, v, g: torch.randint(v, (b, n), generator=g).repeat(1, 2)),
    ("emergent.induction_score", induction_score),
    ("emergent.induction_score", induction_score_loop),
    ("emergent.sequence_logprob", sequence_logprob),
    ("emergent.sequence_logprob",
     lambda lg, y: -F.cross_entropy(lg.transpose(1, 2), y, reduction="none").sum(-1)),
    ("emergent.dpo_loss", dpo_loss),
])
def test_correct_answers_pass(name, answer) -> None:
    result = check(name, answer)
    assert result.passed, result.feedback


@pytest.mark.parametrize("answer, hint", [
    (lambda i, e, q: k_shot_prompt(i, e, q) + "\n", "no newline or space after"),
    (lambda i, e, q: k_shot_prompt(i, e, q) + " ", "no newline or space after"),
    (lambda i, e, q: "\n".join([i] + [f"{x}: {y}" for x, y in e] + [f"{q}:"]), "no blank first line"),
    (lambda i, e, q: " ".join(([i] if i else []) + [f"{x}: {y}" for x, y in e] + [f"{q}:"]), "own line"),
    (lambda i, e, q: "\n".join(([i] if i else []) + [f"{x}:{y}" for x, y in e] + [f"{q}:"]), "one space"),
    (lambda i, e, q: "\n".join([f"{x}: {y}" for x, y in e] + [f"{q}:"]), "first line"),
    (lambda i, e, q: ["x"], "one string"),
])
def test_k_shot_prompt_mistakes(answer, hint) -> None:
    result = check("emergent.k_shot_prompt", answer)
    assert not result.passed and hint in result.feedback, result.feedback


def test_k_shot_prompt_that_changes_its_input_fails() -> None:
    def mutating(instruction, examples, query):
        examples.append((query, "?"))
        return k_shot_prompt(instruction, examples[:-1], query)

    result = check("emergent.k_shot_prompt", mutating)
    assert not result.passed and "changed the list" in result.feedback, result.feedback


@pytest.mark.parametrize("answer, hint", [
    (lambda b, n, v, g: torch.randint(v, (b, n), generator=g).repeat_interleave(2, dim=1), "repeat_interleave"),
    (lambda b, n, v, g: torch.randint(v, (b, n), generator=g).repeat(2, 1), "dim=1"),
    (lambda b, n, v, g: torch.randint(v, (1, n), generator=g).repeat(b, 2), "same sequence"),
    (lambda b, n, v, g: torch.randint(v, (b, n), generator=g).repeat(1, 2).float(), "torch.long"),
    (lambda b, n, v, g: torch.randint(1, v + 1, (b, n), generator=g).repeat(1, 2), "0 .. "),
    (lambda b, n, v, g: torch.randint(v, (b, n)).repeat(1, 2), "generator"),
    (lambda b, n, v, g: torch.randint(v, (b, 2 * n), generator=g), "does not repeat"),
])
def test_repeated_sequences_mistakes(answer, hint) -> None:
    result = check("emergent.repeated_sequences", answer)
    assert not result.passed and hint in result.feedback, result.feedback


def _offset(start, offset):
    def score(weights):
        T = weights.shape[-1]
        t = torch.arange(start(T), T)
        return weights[..., t, t - offset(T)].mean(dim=-1)
    return score


@pytest.mark.parametrize("answer, hint", [
    (_offset(lambda T: T // 2, lambda T: T // 2), "t - L,"),
    (_offset(lambda T: T // 2, lambda T: 1), "t - 1"),
    (_offset(lambda T: 1, lambda T: T // 2 - 1), "second copy only"),
    (lambda w: induction_score(w).mean(), "wrong shape"),
    (lambda w: 0.5, "should be 1.0"),
])
def test_induction_score_mistakes(answer, hint) -> None:
    result = check("emergent.induction_score", answer)
    assert not result.passed and hint in result.feedback, result.feedback


def _mean_logprob(logits, targets):
    mask = targets != IGNORE_INDEX
    return sequence_logprob(logits, targets) / mask.sum(-1).clamp(min=1)


def _unmasked(logits, targets):
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1).sum(-1)


def _probabilities(logits, targets):
    mask = targets != IGNORE_INDEX
    p = logits.softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (p * mask).sum(-1)


def _raw_logits(logits, targets):
    mask = targets != IGNORE_INDEX
    return (logits.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask).sum(-1)


def _shifted(logits, targets):
    return sequence_logprob(logits[:, :-1], targets[:, 1:])


@pytest.mark.parametrize("answer, hint", [
    (_mean_logprob, "*mean*"),
    (_unmasked, "must not count"),
    (_probabilities, "not probabilities"),
    (_raw_logits, "raw logits"),
    (_shifted, "already aligned"),
    (lambda lg, y: sequence_logprob(lg, y).tolist(), "one log-probability per row"),
])
def test_sequence_logprob_mistakes(answer, hint) -> None:
    result = check("emergent.sequence_logprob", answer)
    assert not result.passed and hint in result.feedback, result.feedback


@pytest.mark.parametrize("answer, hint", [
    (lambda pc, pr, rc, rr, b: -F.logsigmoid((pc - rc) - (pr - rr)).mean(), "beta is missing"),
    (lambda pc, pr, rc, rr, b: -F.logsigmoid(-b * ((pc - rc) - (pr - rr))).mean(), "sign is flipped"),
    (lambda pc, pr, rc, rr, b: F.logsigmoid(b * ((pc - rc) - (pr - rr))).mean(), "minus sign"),
    (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pc - rc) - (pr - rr))).sum(), "do not sum"),
    (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((rc - pc) - (rr - pr))).mean(), "policy minus reference"),
    (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pc - rc) - (rr - pr))).mean(), "subtracted as a whole"),
    (lambda pc, pr, rc, rr, b: -torch.log(torch.sigmoid(b * ((pc - rc) - (pr - rr)))).mean(), "F.logsigmoid"),
    (lambda pc, pr, rc, rr, b: dpo_loss(pc, pr, rc, rr, b).item(), "as a tensor"),
    (lambda pc, pr, rc, rr, b: dpo_loss(pc, pr, rc, rr, b).detach(), "stay connected"),
    (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pc - rc) - (pr - rr))), "one number"),
])
def test_dpo_loss_mistakes(answer, hint) -> None:
    result = check("emergent.dpo_loss", answer)
    assert not result.passed and hint in result.feedback, result.feedback


def test_unwritten_exercise_scores_zero() -> None:
    def stub(*args):
        raise NotImplementedError("Write your solution here")

    for name in ("emergent.k_shot_prompt", "emergent.dpo_loss"):
        result = check(name, stub)
        assert not result.passed and "not written" in result.feedback
