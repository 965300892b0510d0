"""Chapter 10's checks (``llmbook.exercises.checks.ch10_instruction``): the table that
test_exercises_checks.py runs, and the one test that does not fit it."""

from __future__ import annotations

import torch

from llmbook.exercises import check
from llmbook.finetune import ALPACA_PREAMBLE

CHAPTER = "10"


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


def f1(shared, prediction, reference):
    p, r = shared / len(prediction), shared / len(reference)
    return 2 * p * r / (p + r)


def rouge_l(prediction, reference):
    if not prediction and not reference:
        return 1.0
    n = lcs(prediction, reference)
    return f1(n, prediction, reference) if n else 0.0


def lora_forward(x, weight, bias, A, B, alpha):
    out = x @ weight.T + (alpha / A.shape[0]) * (x @ A.T) @ B.T
    return out + bias if bias is not None else out


CORRECT = {
    "instruction.alpaca_prompt": [alpaca_prompt],
    "instruction.masked_targets": [masked_targets],
    "instruction.pad_batch": [pad_batch],
    "instruction.rouge_l": [rouge_l],
    "instruction.lora_forward": [lora_forward],
}


def _always_input(entry):
    return f"### Instruction:\n{entry['instruction']}\n\n### Input:\n{entry['input']}\n\n### Response:\n"


def _mask_too_many(ids, prompt_length):
    x, y = masked_targets(ids, prompt_length)
    y[:prompt_length] = -100
    return x, y


def _mask_with_zeros(ids, prompt_length):
    x, y = masked_targets(ids, prompt_length)
    y[y == -100] = 0
    return x, y


def _unshifted(ids, prompt_length):
    y = torch.tensor(ids)
    y[:prompt_length] = -100
    return torch.tensor(ids), y


def _padding_targets_count(pairs, pad_id):
    X, Y = pad_batch(pairs, pad_id)
    for i, (x, _) in enumerate(pairs):
        Y[i, len(x):] = pad_id
    return X, Y


def _left_padded(pairs, pad_id):
    width = max(len(x) for x, _ in pairs)
    X = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    Y = torch.full((len(pairs), width), -100, dtype=torch.long)
    for i, (x, y) in enumerate(pairs):
        X[i, width - len(x):] = x
        Y[i, width - len(y):] = y
    return X, Y


def _x_padded_with_ignore(pairs, pad_id):
    X, Y = pad_batch(pairs, pad_id)
    for i, (x, _) in enumerate(pairs):
        X[i, len(x):] = -100
    return X, Y


def _substring_f1(p, r):
    if not p and not r:
        return 1.0
    best = 0
    for i in range(len(p)):
        for j in range(len(r)):
            k = 0
            while i + k < len(p) and j + k < len(r) and p[i + k] == r[j + k]:
                k += 1
            best = max(best, k)
    return f1(best, p, r) if best else 0.0


def _bag_of_words(p, r):
    if not p and not r:
        return 1.0
    shared = len(set(p) & set(r))
    return f1(shared, p, r) if shared else 0.0


def _crashes_on_empty(p, r):
    n = lcs(p, r)
    pr, rc = n / len(p), n / len(r)
    return 2 * pr * rc / (pr + rc) if n else 0.0


def _base(x, w, b):
    return x @ w.T + (b if b is not None else 0)


MISTAKES = {
    "instruction.alpaca_prompt": [
        (_always_input, "input is empty"),
        (lambda e: alpaca_prompt(e) + e["output"], "not part of the prompt"),
        (lambda e: alpaca_prompt(e).rstrip("\n"), "one newline"),
        (lambda e: alpaca_prompt(e).replace("\n\n", "\n"), "blank line"),
        (lambda e: ALPACA_PREAMBLE + "\n\n" + alpaca_prompt(e), "preamble"),
    ],
    "instruction.masked_targets": [
        (_mask_too_many, ("one too many", "prompt_length - 1")),
        (_mask_with_zeros, "not 0"),
        (_unshifted, "ids[:-1]"),
        (lambda ids, n: (torch.tensor(ids[:-1]), torch.tensor(ids[1:])), "nothing is masked"),
        (lambda ids, n: (ids[:-1], ids[1:]), "torch.Tensor"),
    ],
    "instruction.pad_batch": [
        (_padding_targets_count, "IGNORE_INDEX"),
        (_left_padded, "pad on the right"),
        (_x_padded_with_ignore, "pad it with pad_id"),
    ],
    "instruction.rouge_l": [
        (lambda p, r: lcs(p, r) / len(r) if r else 0.0, "recall"),
        (_substring_f1, "substring"),
        (_bag_of_words, "order"),
        (_crashes_on_empty, "ZeroDivisionError"),
        (lambda p, r: 0.0 if not p and not r else rouge_l(p, r), "both are empty"),
    ],
    "instruction.lora_forward": [
        (lambda x, w, b, A, B, a: lora_forward(x, w, b, A, B, a * A.shape[0]), "not alpha"),
        (lambda x, w, b, A, B, a: lora_forward(x, w, b, A, B, A.shape[0]), "multiply the low-rank term"),
        (lambda x, w, b, A, B, a: lora_forward(x, w, b, A, B, A.shape[0] ** 2 / a), "not r / alpha"),
        (lambda x, w, b, A, B, a: lora_forward(x, w, b, A, B, a) - _base(x, w, b), "frozen layer's own output"),
        (lambda x, w, b, A, B, a: lora_forward(x, w, None, A, B, a), "has a bias"),
        # B and A swapped: the shapes do not fit, and the error says so
        (lambda x, w, b, A, B, a: x @ w.T + b + (a / A.shape[0]) * (x @ B) @ A, "raised RuntimeError"),
    ],
}


def test_an_exponential_lcs_is_stopped_by_the_time_limit() -> None:
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
        return f1(n, p, r) if n else 0.0

    result = check("instruction.rouge_l", slow, timeout=2)
    assert not result.passed and "longer than" in result.feedback
