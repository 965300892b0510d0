"""Checks for chapter 9, "Fine-tuning for classification".

Four exercises rebuild the pieces that turn a GPT into a spam filter: balanced
undersampling (keep the rare class whole, draw the same number from each other class at
random), pooling the hidden state of each sequence's last real token in a right-padded
batch, a confusion matrix straight from the classifier's logits, and freezing every
parameter of a ``GPTClassifier`` except its head. Each check tries ordinary and edge
cases and, when the answer is wrong, names the input, shows what was expected and what
came back, and recognises the usual mistakes by computing them and comparing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from llmbook.classification import GPTClassifier
from llmbook.config import GPTConfig
from llmbook.exercises.compare import (
    is_int,
    known_mistake,
    same,
    tensor_answer,
    unchanged,
    whole_number,
)
from llmbook.exercises.core import CheckFailed, call, describe, mismatch, register
from llmbook.model import GPT

CHAPTER = "09"


# --------------------------------------------------------------------------- balanced undersampling


def _as_index_list(got: Any, label: str) -> list[int]:
    if isinstance(got, torch.Tensor):
        got = got.tolist()
    if not isinstance(got, (list, tuple)) or not all(is_int(i) for i in got):
        raise CheckFailed(
            f"{label} should return a list of integer indices, but returned {describe(got)}.\n"
            f"Hint: return positions in `labels` (e.g. [0, 3, 4, ...]), not the labels themselves."
        )
    return [int(i) for i in got]


def _check_balanced(fn: Any, labels: list[int], seed: int, what: str) -> list[int]:
    label = f"balanced_indices(labels, seed={seed}) with {what}"
    got = _as_index_list(call(fn, list(labels), seed, label=label), label)
    counts = Counter(labels)
    n = min(counts.values())
    if got == list(labels):
        raise CheckFailed(f"{label} returned the labels themselves.\nHint: return the positions (indices) "
                          f"of the examples to keep, e.g. [0, 3, 4, ...], not their labels.")
    if any(not 0 <= i < len(labels) for i in got):
        bad = next(i for i in got if not 0 <= i < len(labels))
        raise CheckFailed(f"{label} returned the index {bad}, but labels has only {len(labels)} entries "
                          f"(indices 0 to {len(labels) - 1}).")
    if len(set(got)) != len(got):
        twice = next(i for i, c in Counter(got).items() if c > 1)
        raise CheckFailed(
            f"{label} returned index {twice} more than once.\nHint: draw without replacement, "
            f"e.g. rng.sample(indices_of_that_class, n), so no example is used twice."
        )
    kept = Counter(labels[i] for i in got)
    expected = dict.fromkeys(sorted(counts), n)
    if dict(sorted(kept.items())) != expected:
        hint = f"every class should keep exactly n = {n} examples, the size of the rarest class."
        if kept == counts:
            hint = "you kept everything: undersample the larger classes down to the size of the rarest one."
        elif len(got) == n:
            hint = f"you returned {n} indices in all; keep n = {n} from *each* class ({n * len(counts)} in all)."
        raise mismatch(f"{label}: wrong number of examples per class (class: count).", expected,
                       dict(sorted(kept.items())), hint)
    rare = [c for c, k in counts.items() if k == n]
    if len(rare) == 1:
        missing = [i for i, y in enumerate(labels) if y == rare[0] and i not in set(got)]
        if missing:
            raise CheckFailed(f"{label}: every example of the rarest class ({rare[0]}) must be kept, "
                              f"but index {missing[0]} is missing.")
    if got != sorted(got):
        raise CheckFailed(f"{label} returned the indices out of order: {got[:10]}...\n"
                          f"Hint: return sorted(kept), so the kept examples stay in their original order.")
    again = _as_index_list(call(fn, list(labels), seed, label=label), label)
    if again != got:
        raise CheckFailed(
            f"{label} gave a different answer when called twice with the same seed.\nHint: make "
            f"the draw depend only on the seed: rng = random.Random(seed), then rng.sample(...), "
            f"rather than the global random module or torch's global generator."
        )
    return got


@register("classification.balanced_indices", chapter=CHAPTER, title="Balanced undersampling")
def check_balanced_indices(fn: Any) -> str:
    """Two and three classes, rare class first or last, a tie; determinism and real randomness."""
    cases = [
        ([0, 0, 1, 0, 0, 1, 0, 0, 0, 0], "8 ham and 2 spam"),
        ([1] * 5 + [0] * 20, "the rare class first"),
        ([0, 1] * 6, "classes already balanced"),
        ([2, 0, 0, 1, 0, 2, 0, 1, 0, 0, 1, 2, 0, 0], "three classes"),
    ]
    for labels, what in cases:
        _check_balanced(fn, labels, 0, what)
    labels = [0] * 60 + [1] * 10
    draws = {tuple(_check_balanced(fn, labels, seed, "60 ham and 10 spam")) for seed in range(4)}
    if len(draws) == 1:
        first = tuple(sorted([*range(10), *range(60, 70)]))
        hint = "the seed has no effect on which examples you keep."
        if first in draws:
            hint = ("you kept the first n examples of each class. Draw them at random instead, "
                    "with a generator made from the seed: random.Random(seed).sample(indices, n).")
        raise CheckFailed(f"balanced_indices(labels, seed) returned the same indices for seeds 0, 1, 2 and 3.\n"
                          f"Hint: {hint}")
    return ("Correct: every class keeps as many examples as the rarest one, the rarest class is kept "
            "whole, nothing is repeated, and the draw is random yet fixed by the seed.")


# --------------------------------------------------------------------------- last-real-token pooling


def reference_pool_last(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    last = mask.sum(dim=1) - 1
    return hidden[torch.arange(hidden.shape[0]), last]


def _pool_mistakes(hidden: torch.Tensor, mask: torch.Tensor) -> list[tuple[torch.Tensor, str]]:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    out = [
        (hidden[:, -1], ("you read the last position of every row, hidden[:, -1]. In a right-padded batch "
                        "that is a padding token for every row but the longest; use the mask to find "
                        "each row's last real position, mask.sum(dim=1) - 1.")),
        (hidden[:, 0], ("you read the first position. In a GPT only the last real token has seen the "
                       "whole sequence (attention is causal).")),
        ((hidden * m).sum(1) / m.sum(1), ("you averaged the real positions (mean pooling). This exercise "
                                         "asks for the hidden state of the last real token only.")),
    ]
    lengths = mask.sum(dim=1)
    if (lengths < mask.shape[1]).all():
        out.append((hidden[torch.arange(hidden.shape[0]), lengths],
                    ("off by one: a row with n real tokens has its last one at index n - 1, not n "
                    "(you read the first padding position).")))
    out.append((hidden[torch.arange(hidden.shape[0]), lengths - 2],
                "off by one: the last real token of a row with n real tokens is at index n - 1."))
    return out


@register("classification.last_token_pool", chapter=CHAPTER, title="Pooling the last real token")
def check_last_token_pool(fn: Any) -> str:
    """Right-padded batches with rows of length 1, full rows, and several widths."""
    gen = torch.Generator().manual_seed(9)
    cases = []
    for lengths, width, channels in [([3, 5, 1], 5, 4), ([2, 2], 6, 3), ([7], 7, 8), ([4, 1, 6, 3], 9, 5)]:
        mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
        cases.append((torch.randn(len(lengths), width, channels, generator=gen), mask, lengths))
    for hidden, mask, lengths in cases:
        label = f"pool_last(hidden {tuple(hidden.shape)}, mask of rows with {lengths} real tokens)"
        given_h, given_m = hidden.clone(), mask.clone()
        expected = reference_pool_last(hidden, mask)
        got = tensor_answer(call(fn, given_h, given_m, label=label), label, expected=expected)
        unchanged(label, [given_h, given_m], [hidden, mask], ("hidden", "mask"))
        if tuple(got.shape) != tuple(expected.shape):
            hint = "one vector per row: shape (batch, channels)."
            if got.dim() == 3 and got.shape[1] == 1:
                hint = "drop the time dimension: the result is (batch, channels), not (batch, 1, channels)."
            raise CheckFailed(f"{label} returned shape {tuple(got.shape)}, expected {tuple(expected.shape)}.\n"
                              f"Hint: {hint}")
        if not same(got, expected, atol=1e-6):
            hint = known_mistake(got, _pool_mistakes(hidden, mask), atol=1e-6) or (
                "row i's answer is hidden[i, n_i - 1], where n_i = mask[i].sum() is its number "
                "of real tokens.")
            raise mismatch(f"{label} picked the wrong positions (first numbers of each row shown).",
                           expected[:, :3], got[:, :3], hint)
    return ("Correct on 4 batches: each row's hidden state at its last real token, whether the row "
            "is full, has one real token, or is mostly padding.")


# --------------------------------------------------------------------------- confusion matrix


def reference_confusion(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    n = logits.shape[-1]
    preds = logits.argmax(dim=-1)
    out = torch.zeros(n, n, dtype=torch.long)
    for t, p in zip(labels.tolist(), preds.tolist(), strict=True):
        out[t, p] += 1
    return out


def _argmax_over_examples(logits: torch.Tensor, labels: torch.Tensor, got: torch.Tensor) -> bool:
    """Did the answer take the argmax along the wrong axis? (Only testable when that still runs.)"""
    wrong_preds = logits.argmax(dim=0)
    if len(wrong_preds) != len(labels) or int(wrong_preds.max()) >= logits.shape[-1]:
        return False
    one_hot = torch.nn.functional.one_hot(wrong_preds, logits.shape[-1]).float()
    return torch.equal(got.long(), reference_confusion(one_hot, labels))


@register("classification.confusion_from_logits", chapter=CHAPTER, title="A confusion matrix from logits")
def check_confusion_from_logits(fn: Any) -> str:
    """Two and three classes, a class never predicted, a class absent from the labels."""
    gen = torch.Generator().manual_seed(4)
    logits3 = torch.randn(12, 3, generator=gen)
    logits3[:, 2] -= 10  # class 2 is never predicted...
    cases = [
        (torch.tensor([[2.0, -1.0], [0.5, 1.5], [-1.0, 0.0], [3.0, 1.0], [0.0, 2.0]]),
         torch.tensor([0, 0, 1, 1, 1]), "2 classes, 5 messages"),
        (torch.randn(20, 2, generator=gen), torch.randint(0, 2, (20,), generator=gen), "2 classes, 20 messages"),
        (logits3, torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 1, 1, 2, 0]), "3 classes, class 2 never predicted"),
        (torch.randn(6, 3, generator=gen), torch.tensor([0, 1, 0, 1, 0, 1]), "3 classes, no example of class 2"),
        (torch.randn(4, 2, generator=gen), torch.tensor([1, 1, 1, 1]), "only spam"),
    ]
    for logits, labels, what in cases:
        label = f"confusion_from_logits(logits {tuple(logits.shape)}, labels {labels.tolist()}) ({what})"
        expected = reference_confusion(logits, labels)
        got = tensor_answer(call(fn, logits.clone(), labels.clone(), label=label), label,
                            expected=expected)
        if tuple(got.shape) != tuple(expected.shape):
            hint = "the matrix is (n_classes, n_classes) with n_classes = logits.shape[-1]."
            if got.shape[0] < expected.shape[0]:
                hint = ("take the number of classes from logits.shape[-1], not from the largest label: a "
                        "class may have no example in the batch, and it still gets a row and a column.")
            raise CheckFailed(f"{label} returned shape {tuple(got.shape)}, expected {tuple(expected.shape)}.\n"
                              f"Hint: {hint}")
        if torch.is_floating_point(got) and not torch.equal(got, got.round()):
            raise mismatch(f"{label} should hold whole counts.", expected, got)
        if not torch.equal(got.long(), expected):
            hint = "entry [t, p] counts the examples whose true class is t and whose predicted class is p."
            if torch.equal(got.long(), expected.T):
                hint = "the matrix is transposed: rows are the true classes, columns the predicted ones."
            elif int(got.sum()) != len(labels):
                hint = (f"the counts add up to {int(got.sum())}, not to the {len(labels)} examples: each "
                        f"example adds exactly 1, at [true class, predicted class].")
            elif _argmax_over_examples(logits, labels, got):
                hint = "take the argmax over the classes, logits.argmax(dim=-1), not over the examples (dim=0)."
            raise mismatch(f"{label} gave the wrong counts.", expected, got, hint)
    return ("Correct on 5 cases: rows are true classes, columns predicted classes (argmax of the "
            "logits), with a row and a column for every class, even an unused one.")


# --------------------------------------------------------------------------- freezing


def _tiny_classifier(n_embd: int, n_classes: int, seed: int) -> GPTClassifier:
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=50, n_positions=16, n_embd=n_embd, n_layer=2, n_head=2, dropout=0.0, name="tiny")
    return GPTClassifier(GPT(config), n_classes=n_classes)


@register("classification.freeze_all_but_head", chapter=CHAPTER, title="Freezing all but the head")
def check_freeze_all_but_head(fn: Any) -> str:
    """Fresh models, a model whose head was frozen before, another width and class count."""
    cases = [(16, 2, "fresh", "a fresh classifier (n_embd 16, 2 classes)"),
             (24, 3, "head_frozen", "a classifier whose head had been frozen (n_embd 24, 3 classes)"),
             (8, 2, "all_frozen", "a classifier with every parameter frozen (n_embd 8, 2 classes)")]
    for n_embd, n_classes, state, what in cases:
        model = _tiny_classifier(n_embd, n_classes, seed=n_embd)
        if state == "head_frozen":
            model.head.requires_grad_(False)
        elif state == "all_frozen":
            model.requires_grad_(False)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        label = f"freeze_all_but_head(model) on {what}"
        got = call(fn, model, label=label)
        trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
        expected_names = ["head.bias", "head.weight"]
        expected_count = n_embd * n_classes + n_classes
        if any(not torch.equal(p, before[n]) for n, p in model.named_parameters()):
            raise CheckFailed(f"{label} changed the values of some weights. Only switch requires_grad; "
                              f"do not re-initialise or modify the parameters.")
        if trainable != expected_names:
            if state != "fresh" and not set(expected_names) & set(trainable):
                hint = ("the head must be trainable even if it was frozen before you were called: set "
                        "requires_grad = True on model.head's parameters explicitly.")
            elif not trainable:
                hint = ("nothing is trainable any more: after freezing everything, switch the head back on "
                        "with model.head.requires_grad_(True) (or each of its parameters).")
            elif set(expected_names) - set(trainable):
                hint = ("the head must be trainable even if it was frozen before you were called: set "
                        "requires_grad = True on model.head's parameters explicitly.")
            elif any(n.startswith(("gpt.wte", "gpt.wpe")) for n in trainable):
                hint = "the embeddings (gpt.wte, gpt.wpe) belong to the GPT too: freeze every GPT parameter."
            else:
                hint = ("freeze every parameter of the GPT (model.gpt.parameters()) and leave only "
                        "model.head's weight and bias trainable.")
            shown = trainable if len(trainable) <= 6 else [*trainable[:6], f"... ({len(trainable)} in all)"]
            raise mismatch(f"{label} left the wrong parameters trainable.", expected_names, shown, hint)
        got = whole_number(got, label, expected_count, hint="return the number of trainable "
                           "parameters as an int, e.g. sum(p.numel() for p in ...).")
        if got != expected_count:
            total = sum(p.numel() for p in model.parameters())
            hint = "count the numbers inside the trainable tensors: sum(p.numel() for p in params if p.requires_grad)."
            if got == 2:
                hint = ("you counted the trainable tensors (weight and bias); count their elements with "
                        "p.numel() instead.")
            elif got == total:
                hint = "you counted every parameter; count only those with requires_grad = True."
            elif got == total - expected_count:
                hint = "you counted the frozen parameters; count the trainable ones."
            raise mismatch(f"{label} returned the wrong count.", expected_count, got, hint)
    return ("Correct: only the head's weight and bias stay trainable (even when they had been frozen), "
            "no weight changes, and the count is n_embd × n_classes + n_classes.")
