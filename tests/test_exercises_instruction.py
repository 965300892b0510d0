"""Chapter 10's checks (``llmbook.exercises.instruction``): correct answers pass, and the usual
mistakes fail with a hint that names them."""

from __future__ import annotations

import pytest
import torch

from llmbook.exercises import check, checks_for_chapter
from llmbook.exercises.core import REPORT_ENV, TIMEOUT_ENV

NAMES = ["instruction.alpaca_prompt", "instruction.masked_targets", "instruction.pad_batch",
         "instruction.rouge_l", "instruction.lora_forward"]


@pytest.fixture(autouse=True)
def _no_grading_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REPORT_ENV, raising=False)
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)


# --------------------------------------------------------------------------- reference answers


def alpaca_prompt(entry):
    text = f"### Instruction:\n{entry['instruction']}\n\n"
    if entry["input"]:
        text += f"### Input:\n{entry['input']}\n\n"
    return text + "### Response:\n"


def masked_targets(ids, prompt_length):
    x = torch.tensor(ids[:-1], dtype=torch.long)
    y = torch.tensor(ids[1:], dtype=torch.long)
    y[: prompt_length - 1] = -100
    return x, y


def pad_batch(pairs, pad_id):
    width = max(len(x) for x, _ in pairs)
    X = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    Y = torch.full((len(pairs), width), -100, dtype=torch.long)
    for i, (x, y) in enumerate(pairs):
        X[i, : len(x)] = x
        Y[i, : len(y)] = y
    return X, Y


def lcs(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


def rouge_l(prediction, reference):
    if not prediction and not reference:
        return 1.0
    n = lcs(prediction, reference)
    if n == 0:
        return 0.0
    p, r = n / len(prediction), n / len(reference)
    return 2 * p * r / (p + r)


def lora_forward(x, weight, bias, A, B, alpha):
    out = x @ weight.T + (alpha / A.shape[0]) * (x @ A.T) @ B.T
    return out + bias if bias is not None else out


CORRECT = {
    "instruction.alpaca_prompt": alpaca_prompt,
    "instruction.masked_targets": masked_targets,
    "instruction.pad_batch": pad_batch,
    "instruction.rouge_l": rouge_l,
    "instruction.lora_forward": lora_forward,
}


def failing(name: str, answer) -> str:
    result = check(name, answer)
    assert not result.passed, f"{name} accepted a wrong answer"
    return result.feedback


def test_chapter_10_registers_the_five_checks_in_order() -> None:
    assert [c.name for c in checks_for_chapter("10")] == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_correct_answers_pass(name: str) -> None:
    result = check(name, CORRECT[name])
    assert result.passed, result.feedback
    assert result.points == result.max_points == 1


@pytest.mark.parametrize("name", NAMES)
def test_a_stub_scores_zero_and_says_so(name: str) -> None:
    def stub(*args):
        raise NotImplementedError("Write your solution here")

    assert "not written this yet" in failing(name, stub)


# --------------------------------------------------------------------------- the prompt


def test_prompt_with_an_empty_input_section_is_named() -> None:
    def always_input(entry):
        return f"### Instruction:\n{entry['instruction']}\n\n### Input:\n{entry['input']}\n\n### Response:\n"

    assert "input is empty" in failing("instruction.alpaca_prompt", always_input)


def test_prompt_with_the_output_is_named() -> None:
    assert "not part of the prompt" in failing("instruction.alpaca_prompt",
                                               lambda e: alpaca_prompt(e) + e["output"])


def test_prompt_without_the_final_newline_is_named() -> None:
    assert "one newline" in failing("instruction.alpaca_prompt", lambda e: alpaca_prompt(e).rstrip("\n"))


def test_prompt_with_single_newlines_is_named() -> None:
    assert "blank line" in failing("instruction.alpaca_prompt", lambda e: alpaca_prompt(e).replace("\n\n", "\n"))


def test_prompt_with_the_preamble_is_named() -> None:
    from llmbook.finetune import ALPACA_PREAMBLE

    assert "preamble" in failing("instruction.alpaca_prompt", lambda e: ALPACA_PREAMBLE + "\n\n" + alpaca_prompt(e))


# --------------------------------------------------------------------------- masked targets


def test_masking_one_target_too_many_is_named() -> None:
    def too_many(ids, prompt_length):
        x, y = masked_targets(ids, prompt_length)
        y[: prompt_length] = -100
        return x, y

    feedback = failing("instruction.masked_targets", too_many)
    assert "one too many" in feedback and "prompt_length - 1" in feedback


def test_masking_with_zero_is_named() -> None:
    def zeros(ids, prompt_length):
        x, y = masked_targets(ids, prompt_length)
        y[y == -100] = 0
        return x, y

    assert "not 0" in failing("instruction.masked_targets", zeros)


def test_unshifted_targets_are_named() -> None:
    def unshifted(ids, prompt_length):
        y = torch.tensor(ids)
        y[: prompt_length] = -100
        return torch.tensor(ids), y

    assert "ids[:-1]" in failing("instruction.masked_targets", unshifted)


def test_nothing_masked_and_lists_are_named() -> None:
    assert "nothing is masked" in failing(
        "instruction.masked_targets", lambda ids, n: (torch.tensor(ids[:-1]), torch.tensor(ids[1:])))
    assert "torch.Tensor" in failing("instruction.masked_targets", lambda ids, n: (ids[:-1], ids[1:]))


# --------------------------------------------------------------------------- padding


def test_padding_targets_that_count_are_named() -> None:
    def unmasked(pairs, pad_id):
        X, Y = pad_batch(pairs, pad_id)
        Y[(X == pad_id) & (Y == -100)] = pad_id
        for i, (x, _) in enumerate(pairs):
            Y[i, len(x):] = pad_id
        return X, Y

    assert "IGNORE_INDEX" in failing("instruction.pad_batch", unmasked)


def test_left_padding_is_named() -> None:
    def left(pairs, pad_id):
        width = max(len(x) for x, _ in pairs)
        X = torch.full((len(pairs), width), pad_id, dtype=torch.long)
        Y = torch.full((len(pairs), width), -100, dtype=torch.long)
        for i, (x, y) in enumerate(pairs):
            X[i, width - len(x):] = x
            Y[i, width - len(y):] = y
        return X, Y

    assert "pad on the right" in failing("instruction.pad_batch", left)


def test_padding_x_with_ignore_index_is_named() -> None:
    def bad(pairs, pad_id):
        X, Y = pad_batch(pairs, pad_id)
        for i, (x, _) in enumerate(pairs):
            X[i, len(x):] = -100
        return X, Y

    assert "pad it with pad_id" in failing("instruction.pad_batch", bad)


# --------------------------------------------------------------------------- ROUGE-L


def test_recall_only_is_named() -> None:
    assert "recall" in failing("instruction.rouge_l", lambda p, r: lcs(p, r) / len(r) if r else 0.0)


def test_substring_instead_of_subsequence_is_named() -> None:
    def substring_f1(p, r):
        if not p and not r:
            return 1.0
        best = 0
        for i in range(len(p)):
            for j in range(len(r)):
                k = 0
                while i + k < len(p) and j + k < len(r) and p[i + k] == r[j + k]:
                    k += 1
                best = max(best, k)
        if best == 0:
            return 0.0
        pr, rc = best / len(p), best / len(r)
        return 2 * pr * rc / (pr + rc)

    assert "substring" in failing("instruction.rouge_l", substring_f1)


def test_bag_of_words_is_named() -> None:
    def bag(p, r):
        if not p and not r:
            return 1.0
        shared = len(set(p) & set(r))
        if not shared:
            return 0.0
        pr, rc = shared / len(p), shared / len(r)
        return 2 * pr * rc / (pr + rc)

    assert "order" in failing("instruction.rouge_l", bag)


def test_empty_lists_are_explained() -> None:
    def crashes_on_empty(p, r):
        n = lcs(p, r)
        pr, rc = n / len(p), n / len(r)
        return 2 * pr * rc / (pr + rc) if n else 0.0

    assert "ZeroDivisionError" in failing("instruction.rouge_l", crashes_on_empty)

    def zero_when_both_empty(p, r):
        return 0.0 if not p and not r else rouge_l(p, r)

    assert "both are empty" in failing("instruction.rouge_l", zero_when_both_empty)


def test_exponential_recursion_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TIMEOUT_ENV, "2")

    def slow_lcs(a, b):
        if not a or not b:
            return 0
        if a[0] == b[0]:
            return 1 + slow_lcs(a[1:], b[1:])
        return max(slow_lcs(a[1:], b), slow_lcs(a, b[1:]))

    def slow(p, r):
        if not p and not r:
            return 1.0
        n = slow_lcs(p, r)
        if n == 0:
            return 0.0
        pr, rc = n / len(p), n / len(r)
        return 2 * pr * rc / (pr + rc)

    assert "longer than" in failing("instruction.rouge_l", slow)


# --------------------------------------------------------------------------- LoRA forward


@pytest.mark.parametrize(("wrong", "needle"), [
    (lambda x, w, b, A, B, a: lora_forward(x, w, b, A, B, a * A.shape[0]), "not alpha"),
    (lambda x, w, b, A, B, a: lora_forward(x, w, b, A, B, A.shape[0]), "multiply the low-rank term"),
    (lambda x, w, b, A, B, a: lora_forward(x, w, b, A, B, A.shape[0] ** 2 / a), "not r / alpha"),
    (lambda x, w, b, A, B, a: lora_forward(x, w, b, A, B, a) - (x @ w.T + (b if b is not None else 0)),
     "frozen layer's own output"),
    (lambda x, w, b, A, B, a: lora_forward(x, w, None, A, B, a), "has a bias"),
])
def test_lora_mistakes_are_named(wrong, needle: str) -> None:
    assert needle in failing("instruction.lora_forward", wrong)


def test_lora_with_b_and_a_swapped_fails_with_a_shape_hint() -> None:
    feedback = failing("instruction.lora_forward",
                       lambda x, w, b, A, B, a: x @ w.T + b + (a / A.shape[0]) * (x @ B) @ A)
    assert "raised RuntimeError" in feedback or "shape" in feedback
