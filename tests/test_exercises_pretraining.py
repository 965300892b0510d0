"""Chapter 8's checks (``llmbook.exercises.pretraining``): correct answers pass, and the
usual mistakes fail with a hint that names them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmbook.data import TokenWindows
from llmbook.exercises import check, checks_for_chapter
from llmbook.exercises.core import REPORT_ENV, TIMEOUT_ENV
from llmbook.generate import filtered_probs

NAMES = ["pretraining.next_token_pairs", "pretraining.cross_entropy", "pretraining.bits_per_byte",
         "pretraining.top_k_probs", "pretraining.top_p_probs"]


@pytest.fixture(autouse=True)
def _no_grading_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REPORT_ENV, raising=False)
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)


# --------------------------------------------------------------------------- reference answers


def next_token_pairs(tokens, context_length):
    t = torch.as_tensor(tokens, dtype=torch.long)
    n = (len(t) - 1) // context_length
    x = torch.stack([t[i * context_length: (i + 1) * context_length] for i in range(n)])
    y = torch.stack([t[i * context_length + 1: (i + 1) * context_length + 1] for i in range(n)])
    return x, y


def cross_entropy(logits, targets):
    keep = targets != -100
    z, t = logits[keep], targets[keep]
    m = z.max(dim=-1, keepdim=True).values
    log_probs = z - m - torch.log(torch.exp(z - m).sum(dim=-1, keepdim=True))
    return -log_probs[torch.arange(len(t)), t].mean()


def bits_per_byte(loss, n_tokens, n_bytes):
    return loss * n_tokens / n_bytes / math.log(2)


def top_k_probs(logits, temperature, k):
    z = logits / temperature
    k = min(k, z.size(-1))
    kth = torch.topk(z, k, dim=-1).values[..., -1:]
    return torch.softmax(z.masked_fill(z < kth, float("-inf")), dim=-1)


def top_p_probs(logits, p):
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs
    keep_sorted = before < p
    keep = keep_sorted.scatter(-1, order, keep_sorted)
    kept = probs * keep
    return kept / kept.sum(dim=-1, keepdim=True)


CORRECT = {
    "pretraining.next_token_pairs": next_token_pairs,
    "pretraining.cross_entropy": cross_entropy,
    "pretraining.bits_per_byte": bits_per_byte,
    "pretraining.top_k_probs": top_k_probs,
    "pretraining.top_p_probs": top_p_probs,
}


def failing(name: str, answer) -> str:
    result = check(name, answer)
    assert not result.passed, f"{name} accepted a wrong answer"
    return result.feedback


# --------------------------------------------------------------------------- correct answers


def test_chapter_8_registers_the_five_checks_in_order() -> None:
    assert [c.name for c in checks_for_chapter("08")] == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_correct_answers_pass(name: str) -> None:
    result = check(name, CORRECT[name])
    assert result.passed, result.feedback
    assert result.points == result.max_points == 1


def test_library_equivalents_pass() -> None:
    def via_windows(tokens, T):
        ds = TokenWindows(list(tokens), T)
        return torch.stack([ds[i][0] for i in range(len(ds))]), torch.stack([ds[i][1] for i in range(len(ds))])

    assert check("pretraining.next_token_pairs", via_windows)
    assert check("pretraining.cross_entropy", lambda z, t: F.cross_entropy(z, t, ignore_index=-100))
    assert check("pretraining.top_k_probs", lambda z, t, k: filtered_probs(z, t, top_k=k))
    assert check("pretraining.top_p_probs", lambda z, p: filtered_probs(z, 1.0, top_p=p))
    assert check("pretraining.bits_per_byte", lambda loss, t, b: torch.tensor(loss * t / b / math.log(2)))


def test_the_not_written_stub_scores_nothing() -> None:
    def stub(*args):
        raise NotImplementedError("Write your solution here")

    for name in NAMES:
        assert "not written this yet" in failing(name, stub)


# --------------------------------------------------------------------------- next-token pairs


def _pairs(offset_x=0, offset_y=1, stride=None, n_fn=lambda L, T: (L - 1) // T, dtype=torch.long):
    def fn(tokens, T):
        t = torch.as_tensor(list(tokens), dtype=dtype)
        s = stride or T
        n = n_fn(len(t), T)
        return (torch.stack([t[i * s + offset_x: i * s + offset_x + T] for i in range(n)]),
                torch.stack([t[i * s + offset_y: i * s + offset_y + T] for i in range(n)]))
    return fn


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (_pairs(offset_y=0), "targets equal your inputs"),
        (_pairs(offset_x=1, offset_y=0), "swapped"),
        (_pairs(n_fn=lambda L, T: (L - 1) // T - 1), "one window too few"),
        (_pairs(stride=1, n_fn=lambda L, T: L - T), "overlap"),
        (_pairs(n_fn=lambda L, T: L // T), "a window needs T + 1 tokens"),
        (_pairs(dtype=torch.float32), "torch.long"),
        (lambda tokens, T: next_token_pairs(tokens, T)[0], "two tensors"),
    ],
)
def test_next_token_pairs_mistakes_get_their_hint(wrong, hint) -> None:
    assert hint in failing("pretraining.next_token_pairs", wrong)


def test_next_token_pairs_feedback_shows_the_windows() -> None:
    feedback = failing("pretraining.next_token_pairs", _pairs(offset_y=0))
    assert "next_token_pairs(tokens=[10, 11, ..., 18]" in feedback
    assert "expected: x [[10, 11, 12, 13], [14, 15, 16, 17]]" in feedback


# --------------------------------------------------------------------------- cross-entropy


def _log_probs(z):
    return torch.log_softmax(z, dim=-1)


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda z, t: -_log_probs(z)[torch.arange(len(t)), t.clamp(min=0)][t != -100].sum(), "summed"),
        (lambda z, t: -(_log_probs(z)[torch.arange(len(t)), t.clamp(min=0)] * (t != -100)).sum() / len(t),
         "divided by all positions"),
        (lambda z, t: _log_probs(z)[torch.arange(len(t)), t.clamp(min=0)][t != -100].mean(), "sign"),
        (lambda z, t: -torch.log_softmax(z, 0)[torch.arange(len(t)), t.clamp(min=0)][t != -100].mean(),
         "wrong dimension"),
        (lambda z, t: F.cross_entropy(z, t, ignore_index=-100) / math.log(2), "nats"),
        (lambda z, t: -torch.log(torch.exp(z) / torch.exp(z).sum(-1, keepdim=True))[
            torch.arange(len(t)), t.clamp(min=0)][t != -100].mean(), "overflows"),
        (lambda z, t: -_log_probs(z)[torch.arange(len(t)), t].mean(), "marks a position to ignore"),
        (lambda z, t: F.cross_entropy(z, t, ignore_index=-100, reduction="none"), "one number"),
    ],
)
def test_cross_entropy_mistakes_get_their_hint(wrong, hint) -> None:
    assert hint in failing("pretraining.cross_entropy", wrong)


def test_cross_entropy_that_ignores_nothing_is_told_about_minus_100() -> None:
    def counts_ignored(z, t):
        return -_log_probs(z)[torch.arange(len(t)), t.clamp(min=0)].mean()

    assert "-100 must not count" in failing("pretraining.cross_entropy", counts_ignored)


# --------------------------------------------------------------------------- bits per byte


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda loss, t, b: loss * t / b, "nats per byte"),
        (lambda loss, t, b: loss / math.log(2), "bits per TOKEN"),
        (lambda loss, t, b: loss * t / b * math.log(2), "DIVIDE"),
        (lambda loss, t, b: loss * b / t / math.log(2), "upside down"),
        (lambda loss, t, b: loss * t / b / math.log10(2), "log10"),
        (lambda loss, t, b: f"{loss * t / b / math.log(2):.3f}", "should return a number"),
    ],
)
def test_bits_per_byte_mistakes_get_their_hint(wrong, hint) -> None:
    assert hint in failing("pretraining.bits_per_byte", wrong)


# --------------------------------------------------------------------------- temperature + top-k


def _cut(z, k):
    kth = torch.topk(z, min(k, z.size(-1)), dim=-1).values[..., -1:]
    return z.masked_fill(z < kth, float("-inf"))


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (lambda z, t, k: torch.softmax(_cut(z * t, k), -1), "multiplied the logits"),
        (lambda z, t, k: torch.softmax(_cut(z, k), -1), "temperature is missing"),
        (lambda z, t, k: torch.softmax(z / t, -1) * (_cut(z, k) > float("-inf")), "renormalise"),
        (lambda z, t, k: torch.softmax(_cut(z / t, k + 1), -1), "k + 1"),
        (lambda z, t, k: torch.softmax(_cut(z / t, max(k - 1, 1)), -1), "k - 1"),
        (lambda z, t, k: torch.softmax((z / t).masked_fill(_cut(z, k) > float("-inf"), float("-inf")), -1),
         "MOST likely"),
        (lambda z, t, k: torch.softmax(_cut(z / t, k).masked_fill(_cut(z, k) == float("-inf"), 0.0), -1),
         "-inf (not 0)"),
        (lambda z, t, k: torch.softmax(z, -1) / t, "before the softmax"),
        (lambda z, t, k: (z / t)[..., :k], "shape"),
    ],
)
def test_top_k_mistakes_get_their_hint(wrong, hint) -> None:
    assert hint in failing("pretraining.top_k_probs", wrong)


def test_top_k_that_changes_the_logits_in_place_fails() -> None:
    def in_place(z, t, k):
        z /= t
        return top_k_probs(z, 1.0, k)

    assert "in-place" in failing("pretraining.top_k_probs", in_place)


def test_top_k_that_cuts_the_whole_batch_together_fails() -> None:
    def flat(z, t, k):
        return top_k_probs(z.reshape(-1), t, k).reshape(z.shape)

    assert "a batch of 3 rows" in failing("pretraining.top_k_probs", flat)


# --------------------------------------------------------------------------- top-p


def _top_p_with(rule):
    def fn(z, p):
        probs = torch.softmax(z, -1)
        sp, order = torch.sort(probs, dim=-1, descending=True)
        keep_sorted = rule(sp.cumsum(-1), sp, p)
        keep = keep_sorted.scatter(-1, order, keep_sorted)
        return torch.softmax(z.masked_fill(~keep, float("-inf")), -1)
    return fn


@pytest.mark.parametrize(
    "wrong, hint",
    [
        (_top_p_with(lambda cum, sp, p: cum <= p), "crosses"),
        (lambda z, p: torch.softmax(z, -1) * (top_p_probs(z, p) > 0), "renormalised"),
        (lambda z, p: torch.softmax(z, -1), "nothing was cut"),
        (lambda z, p: top_p_probs(z, 1 - p), "is wrong"),
    ],
)
def test_top_p_mistakes_get_their_hint(wrong, hint) -> None:
    assert hint in failing("pretraining.top_p_probs", wrong)


def test_top_p_that_can_keep_nothing_says_so() -> None:
    feedback = failing("pretraining.top_p_probs", _top_p_with(lambda cum, sp, p: cum < p))
    assert "most likely token" in feedback
