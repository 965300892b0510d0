"""Checks for chapter 10, "Instruction fine-tuning and LoRA".

Five exercises rebuild what the chapter adds on top of a base model: the Alpaca prompt
format, the shifted targets with the prompt masked out of the loss, a padding collate
that keeps padding out of the loss too, ROUGE-L (the longest common subsequence of two
word lists, turned into an F1 score), and the forward pass of a LoRA layer. Each check
compares the learner's function with ``llmbook``'s on ordinary and edge-case inputs and,
when they differ, names the input, shows expected and actual values, and recognises the
usual mistakes (an off-by-one in the mask, padding targets that count, a contiguous
substring instead of a subsequence, a scale of alpha instead of alpha / r) by computing
them and comparing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from llmbook.exercises.compare import (
    close,
    first_difference,
    known_mistake,
    number,
    same,
    tensor_answer,
    tensor_tuple,
    token_ids,
)
from llmbook.exercises.core import CheckFailed, call, mismatch, register
from llmbook.finetune import ALPACA_PREAMBLE, format_prompt
from llmbook.finetune import masked_targets as reference_masked_targets
from llmbook.finetune import pad_batch as reference_pad_batch
from llmbook.lora import LoRALinear
from llmbook.metrics import lcs_length
from llmbook.model import IGNORE_INDEX

CHAPTER = "10"


# --------------------------------------------------------------------------- the prompt format


PROMPT_CASES: list[dict[str, str]] = [
    {"instruction": "Name a primary colour.", "input": "", "output": "Red."},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
    {"instruction": "Sort the list.", "input": "3, 1, 2", "output": "1, 2, 3"},
    {"instruction": "Fix the grammar:\nkeep the meaning.", "input": "He go home.\nThen he sleep.",
     "output": "He goes home. Then he sleeps."},
    {"instruction": "Summarise «this» in one word.", "input": "café au lait", "output": "Coffee."},
]


def _prompt_hint(entry: dict[str, str], got: str) -> str:
    expected = format_prompt(entry)
    if entry["output"] and got.rstrip().endswith(entry["output"]):
        return ("the prompt stops after '### Response:' and its newline; the output is what the "
                "model must write, so it is not part of the prompt.")
    if ALPACA_PREAMBLE[:30] in got:
        return "leave Alpaca's preamble sentence out: this course's prompt starts with '### Instruction:'."
    if not entry["input"] and "### Input:" in got:
        return "when the record's input is empty, leave the whole '### Input:' section out."
    if entry["input"] and "### Input:" not in got:
        return "when the record has an input, add a section '### Input:', a newline, then the input."
    if got == expected.rstrip("\n") or got == expected.rstrip("\n") + " ":
        return "end the prompt with '### Response:' followed by one newline ('\\n')."
    if got.replace("\n\n", "\n") == expected.replace("\n\n", "\n"):
        return ("separate the sections with a blank line ('\\n\\n'); inside a section the header "
                "and its text are separated by one '\\n'.")
    if got.strip() == expected.strip():
        return "the words are right but there is extra or missing whitespace at the start or end."
    return first_difference(expected, got)


@register("instruction.alpaca_prompt", chapter=CHAPTER, title="The Alpaca prompt")
def check_alpaca_prompt(fn: Any) -> str:
    """Records with and without input, multi-line fields, non-ASCII text."""
    for entry in PROMPT_CASES:
        label = f"alpaca_prompt({entry!r})"
        got = call(fn, dict(entry), label=label)
        expected = format_prompt(entry)
        if not isinstance(got, str):
            raise mismatch(f"{label} should return a str.", expected, got)
        if got != expected:
            raise CheckFailed(f"{label} is not the expected prompt.\n  expected: {expected!r}\n"
                              f"  got:      {got!r}\nHint: {_prompt_hint(entry, got)}")
    return ("Correct on every record: sections separated by blank lines, '### Input:' only when "
            "there is an input, and the prompt ends where the model's answer begins.")


# --------------------------------------------------------------------------- masked targets


MASK_CASES: list[tuple[list[int], int]] = [
    ([10, 11, 12, 13, 20, 21, 256], 4),
    ([5, 6, 7, 8, 9], 1),
    ([1, 2, 3, 4, 5, 6, 7, 8], 7),
    ([*range(30, 60), 256], 22),
]


def _as_pair(out: Any, label: str, names: tuple[str, str] = ("x", "y")) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = tensor_tuple(out, label, names, hint="build each with torch.tensor(..., dtype=torch.long).")
    for name, t in zip(names, (x, y), strict=True):
        token_ids(t, label, name)
    return x, y


def _mask_hint(ids: list[int], n_prompt: int, x: torch.Tensor, y: torch.Tensor) -> str:
    seq = torch.tensor(ids)
    ref_x, ref_y = reference_masked_targets(ids, n_prompt)
    if torch.equal(x, seq) or len(x) == len(ids):
        return "x and y are one token shorter than ids: x = ids[:-1] (inputs), y = ids[1:] (next tokens)."
    if not torch.equal(x, ref_x):
        return "x should be the ids without the last one, unmasked: x = ids[:-1]."
    if torch.equal(y, seq[1:]):
        return "nothing is masked: set the targets that are prompt tokens to -100."
    for shift, what in ((1, "one too many"), (-1, "one too few")):
        k = n_prompt - 1 + shift
        if 0 <= k <= len(ids) - 1:
            wrong = seq[1:].clone()
            wrong[:k] = IGNORE_INDEX
            if torch.equal(y, wrong):
                return (f"you masked {what} target(s). y[t] is the token after ids[t], so the "
                        f"prompt's tokens are y[0] .. y[prompt_length - 2]: mask the first "
                        f"prompt_length - 1 targets. y[prompt_length - 1] is the response's first "
                        f"token, which the model must learn to predict.")
    if ((y == 0) & (ref_y == IGNORE_INDEX)).any():
        return "masked targets are -100 (IGNORE_INDEX), not 0: 0 is a real token id."
    return "y = ids[1:], with its first prompt_length - 1 entries replaced by -100."


@register("instruction.masked_targets", chapter=CHAPTER, title="Targets with the prompt masked")
def check_masked_targets(fn: Any) -> str:
    """Short and long sequences, a one-token prompt and a one-token response."""
    for ids, n_prompt in MASK_CASES:
        label = f"masked_targets({ids}, prompt_length={n_prompt})"
        x, y = _as_pair(call(fn, list(ids), n_prompt, label=label), label)
        ref_x, ref_y = reference_masked_targets(ids, n_prompt)
        if not (torch.equal(x, ref_x) and torch.equal(y, ref_y)):
            raise CheckFailed(
                f"{label} is wrong.\n  expected: x = {ref_x.tolist()}\n            y = {ref_y.tolist()}\n"
                f"  got:      x = {x.tolist()}\n            y = {y.tolist()}\n"
                f"Hint: {_mask_hint(ids, n_prompt, x, y)}"
            )
    return ("Correct: x = ids[:-1], y = ids[1:], and exactly the targets that are prompt tokens "
            "are -100, so the first counted target is the response's first token.")


# --------------------------------------------------------------------------- padding


def _pairs(lengths: list[int], n_masked: list[int], offset: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for k, (n, m) in enumerate(zip(lengths, n_masked, strict=True)):
        x = torch.arange(n, dtype=torch.long) + 10 * k + offset
        y = x + 1
        y[:m] = IGNORE_INDEX
        out.append((x, y))
    return out


PAD_CASES = [(_pairs([3, 5, 2], [1, 2, 0]), 256), (_pairs([4], [2]), 99), (_pairs([2, 6, 6, 1], [0, 3, 1, 0], 5), 0)]


def _pad_hint(pairs: list, pad_id: int, X: torch.Tensor, Y: torch.Tensor) -> str:
    ref_X, ref_Y = reference_pad_batch(pairs, pad_id)
    if X.shape != ref_X.shape or Y.shape != ref_Y.shape:
        return ("pad every row to the length of the longest x in this batch: the result is "
                "(number of pairs, longest length).")
    unmasked = reference_pad_batch(pairs, pad_id, mask_padding=False)[1]
    if torch.equal(X, ref_X) and torch.equal(Y, unmasked):
        return ("the padding targets hold pad_id, so the model is trained to predict padding. Pad y "
                "with -100 (IGNORE_INDEX) so that padding adds nothing to the loss.")
    if torch.equal(X[ref_Y != IGNORE_INDEX], ref_X[ref_Y != IGNORE_INDEX]) and (X == IGNORE_INDEX).any():
        return "x is a row of token ids: pad it with pad_id (a real token); only y is padded with -100."
    for row, (x, _) in enumerate(pairs):
        if len(x) < X.shape[1] and torch.equal(X[row, -len(x):], x) and not torch.equal(X[row, : len(x)], x):
            return ("pad on the right: each row starts with its own tokens and the padding follows "
                    "(left padding is for generation, where every prompt must end at the same place).")
    return "X[i, :len(x_i)] = x_i and Y[i, :len(y_i)] = y_i; the rest of X is pad_id and the rest of Y is -100."


@register("instruction.pad_batch", chapter=CHAPTER, title="A padding collate")
def check_pad_batch(fn: Any) -> str:
    """Batches of one and of several pairs, different pad ids, masked prompt targets kept."""
    for pairs, pad_id in PAD_CASES:
        label = f"pad_batch(<{len(pairs)} pairs of lengths {[len(x) for x, _ in pairs]}>, pad_id={pad_id})"
        copies = [(x.clone(), y.clone()) for x, y in pairs]
        X, Y = _as_pair(call(fn, copies, pad_id, label=label), label, ("X", "Y"))
        ref_X, ref_Y = reference_pad_batch(pairs, pad_id)
        if not (X.shape == ref_X.shape and Y.shape == ref_Y.shape and torch.equal(X, ref_X) and torch.equal(Y, ref_Y)):
            raise CheckFailed(
                f"{label} is wrong.\n  expected: X = {ref_X.tolist()}\n            Y = {ref_Y.tolist()}\n"
                f"  got:      X = {X.tolist()}\n            Y = {Y.tolist()}\n"
                f"Hint: {_pad_hint(pairs, pad_id, X, Y)}"
            )
    return ("Correct: rows padded on the right to the longest example, inputs with pad_id, "
            "targets with -100, so the padding never counts in the loss.")


# --------------------------------------------------------------------------- ROUGE-L


def reference_rouge_l(prediction: list[str], reference: list[str]) -> float:
    """ROUGE-L F1 of two word lists: LCS / len as precision and recall, harmonic mean."""
    if not prediction and not reference:
        return 1.0
    lcs = lcs_length(prediction, reference)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(prediction), lcs / len(reference)
    return 2 * p * r / (p + r)


def _longest_common_substring(a: list[str], b: list[str]) -> int:
    best = 0
    for i in range(len(a)):
        for j in range(len(b)):
            k = 0
            while i + k < len(a) and j + k < len(b) and a[i + k] == b[j + k]:
                k += 1
            best = max(best, k)
    return best


def _rouge_variants(pred: list[str], ref: list[str]) -> list[tuple[float, str]]:
    if not pred or not ref:
        return []
    lcs = lcs_length(pred, ref)
    sub = _longest_common_substring(pred, ref)
    p, r = lcs / len(pred), lcs / len(ref)
    shared = len(set(pred) & set(ref))
    variants = [
        (r, "you returned the recall (LCS / len(reference)); ROUGE-L is the F1 of precision and recall."),
        (p, "you returned the precision (LCS / len(prediction)); ROUGE-L is the F1 of precision and recall."),
        ((p + r) / 2, "you averaged precision and recall; F1 is their harmonic mean, 2PR / (P + R)."),
        (float(lcs), "you returned the LCS length itself; turn it into precision, recall and their F1."),
    ]
    if sub:
        ps, rs = sub / len(pred), sub / len(ref)
        variants.append((2 * ps * rs / (ps + rs), (
            "you found the longest common *substring* (words next to each other). A subsequence may "
            "skip words: 'the cat sat' and 'the black cat sat' share the subsequence 'the cat sat'.")))
    if shared:
        pw, rw = shared / len(pred), shared / len(ref)
        variants.append((2 * pw * rw / (pw + rw), (
            "you counted shared words regardless of their order; the LCS keeps the order of the words.")))
    return variants


def _short(words: list[str]) -> str:
    return repr(words) if len(words) <= 8 else f"<a list of {len(words)} words>"


ROUGE_CASES: list[tuple[str, str]] = [
    ("the cat sat on the mat", "the cat lay on the mat"),
    ("the black cat sat", "the cat sat"),
    ("mat the on sat cat the", "the cat sat on the mat"),
    ("paris", "the capital of france is paris"),
    ("a b c d e f g", "x y z"),
    ("the", "the"),
    ("", "something"),
    ("", ""),
    (" ".join(f"w{i % 7}" for i in range(60)), " ".join(f"w{i % 5}" for i in range(70))),
]


@register("instruction.rouge_l", chapter=CHAPTER, title="ROUGE-L from the longest common subsequence")
def check_rouge_l(fn: Any) -> str:
    """Hand-worked pairs, reordered words, no overlap, empty lists, and two 60-70 word lists."""
    for pred_text, ref_text in ROUGE_CASES:
        pred, ref = pred_text.split(), ref_text.split()
        label = f"rouge_l({_short(pred)}, {_short(ref)})"
        expected = reference_rouge_l(pred, ref)
        got = number(call(fn, list(pred), list(ref), label=label), label, expected)
        if not close(float(got), expected):
            hint = known_mistake(float(got), _rouge_variants(pred, ref))
            if hint is None and not (pred and ref):
                hint = ("when one list is empty nothing is shared: return 0.0; when both are empty "
                        "they agree: return 1.0 (and never divide by zero).")
            hint = hint or ("LCS by dynamic programming, then P = LCS/len(prediction), "
                            "R = LCS/len(reference), F1 = 2PR/(P+R).")
            raise CheckFailed(f"{label} is wrong.\n  expected: {expected:.6f}\n  got:      {float(got):.6f}\n"
                              f"Hint: {hint}")
    return "Correct on every pair, including reordered words, empty answers and long lists."


# --------------------------------------------------------------------------- LoRA forward


def reference_lora_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                           A: torch.Tensor, B: torch.Tensor, alpha: float) -> torch.Tensor:
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    lora = LoRALinear(layer, r=A.shape[0], alpha=alpha)
    with torch.no_grad():
        lora.lora_A.copy_(A)
        lora.lora_B.copy_(B)
        return lora(x)


def _lora_mistakes(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, A: torch.Tensor,
                   B: torch.Tensor, alpha: float) -> list[tuple[Callable[[], torch.Tensor], str]]:
    r = A.shape[0]
    base = x @ weight.T + (bias if bias is not None else 0)
    low = (x @ A.T) @ B.T
    return [
        (lambda: base + alpha * low, "the scale is alpha / r, not alpha (r = A.shape[0])."),
        (lambda: base + low, "multiply the low-rank term by the scale alpha / r."),
        (lambda: base + (r / alpha) * low, "the scale is alpha / r, not r / alpha."),
        (lambda: (alpha / r) * low, "add the frozen layer's own output, x @ weight.T + bias."),
        (lambda: base, "add the low-rank update (alpha / r) * (x @ A.T) @ B.T to the base output."),
        (lambda: x @ weight.T + (alpha / r) * low, "the frozen layer has a bias: add it."),
    ]


@register("instruction.lora_forward", chapter=CHAPTER, title="A LoRA layer's forward pass")
def check_lora_forward(fn: Any) -> str:
    """Batched inputs, ranks 1 to 4, alpha equal to and different from r, with and without bias."""
    g = torch.Generator().manual_seed(10)
    shapes = [((2, 3, 6), 5, 2, 4.0, True), ((4, 8), 8, 1, 1.0, True), ((1, 5, 7), 3, 3, 3.0, False),
              ((3, 6), 10, 4, 16.0, True)]
    for x_shape, d_out, r, alpha, has_bias in shapes:
        d_in = x_shape[-1]
        x = torch.randn(*x_shape, generator=g)
        weight = torch.randn(d_out, d_in, generator=g) / d_in**0.5
        bias = torch.randn(d_out, generator=g) if has_bias else None
        A = torch.randn(r, d_in, generator=g) * 0.5
        B = torch.randn(d_out, r, generator=g) * 0.5
        label = (f"lora_forward(x of shape {tuple(x.shape)}, weight {tuple(weight.shape)}, "
                 f"bias {'None' if bias is None else tuple(bias.shape)}, A {tuple(A.shape)}, "
                 f"B {tuple(B.shape)}, alpha={alpha})")
        args = (x.clone(), weight.clone(), None if bias is None else bias.clone(), A.clone(), B.clone(), alpha)
        got = call(fn, *args, label=label)
        expected = reference_lora_forward(x, weight, bias, A, B, alpha)
        got = tensor_answer(got, label, shape=expected.shape, expected=expected,
                            hint="x @ weight.T has the last dimension out_features; (x @ A.T) @ B.T "
                                 "must too.")
        if not same(got, expected):
            hint = known_mistake(got, _lora_mistakes(x, weight, bias, A, B, alpha)) or (
                "y = x @ weight.T + bias + (alpha / r) * (x @ A.T) @ B.T, with r = A.shape[0].")
            raise mismatch(f"{label} is wrong.", expected, got, hint)
    return ("Correct: the frozen layer's output plus the low-rank update (alpha / r) · B A x, "
            "for batched inputs, every rank and with or without a bias.")
