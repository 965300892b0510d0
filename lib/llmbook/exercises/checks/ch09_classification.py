"""Checks for chapter 9, "Fine-tuning for classification".

Six exercises build what turns a GPT into a spam filter, beyond what the chapter prints:
balanced undersampling (keep the rare class whole, draw the same number from each other
class at random), the other remedy for imbalance (a loss that weights each class by its
inverse frequency), pooling a padded batch two ways (the last real token and the mean of
the real tokens) whether the padding is on the right or on the left, a confusion matrix
straight from the classifier's logits, freezing all but the last k blocks of a
``GPTClassifier``, and an experiment: settings (how many blocks learn, the learning rate)
with which a toy GPT classifier, trained here in the check, reaches 90 % held-out
accuracy in 60 steps. Each check tries ordinary and edge cases and, when the answer is
wrong, names the input, shows what was expected and what came back, and recognises the
usual mistakes by computing them and comparing.
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
    scalar,
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
        raise CheckFailed(
            f"{label} returned the labels themselves.\nHint: return the positions (indices) "
            f"of the examples to keep, e.g. [0, 3, 4, ...], not their labels."
        )
    if any(not 0 <= i < len(labels) for i in got):
        bad = next(i for i in got if not 0 <= i < len(labels))
        raise CheckFailed(
            f"{label} returned the index {bad}, but labels has only {len(labels)} entries "
            f"(indices 0 to {len(labels) - 1})."
        )
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
        raise mismatch(
            f"{label}: wrong number of examples per class (class: count).", expected, dict(sorted(kept.items())), hint
        )
    rare = [c for c, k in counts.items() if k == n]
    if len(rare) == 1:
        missing = [i for i, y in enumerate(labels) if y == rare[0] and i not in set(got)]
        if missing:
            raise CheckFailed(
                f"{label}: every example of the rarest class ({rare[0]}) must be kept, "
                f"but index {missing[0]} is missing."
            )
    if got != sorted(got):
        raise CheckFailed(
            f"{label} returned the indices out of order: {got[:10]}...\n"
            f"Hint: return sorted(kept), so the kept examples stay in their original order."
        )
    again = _as_index_list(call(fn, list(labels), seed, label=label), label)
    if again != got:
        raise CheckFailed(
            f"{label} gave a different answer when called twice with the same seed.\nHint: make "
            f"the draw depend only on the seed: rng = random.Random(seed), then rng.sample(...), "
            f"rather than the global random module or torch's global generator."
        )
    return got


@register("classification.balanced_indices", chapter=CHAPTER, title="Balanced undersampling", kind="build")
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
            hint = (
                "you kept the first n examples of each class. Draw them at random instead, "
                "with a generator made from the seed: random.Random(seed).sample(indices, n)."
            )
        raise CheckFailed(
            f"balanced_indices(labels, seed) returned the same indices for seeds 0, 1, 2 and 3.\nHint: {hint}"
        )
    return (
        "Correct: every class keeps as many examples as the rarest one, the rarest class is kept "
        "whole, nothing is repeated, and the draw is random yet fixed by the seed."
    )


# --------------------------------------------------------------------------- class-weighted loss


def class_weights(class_counts: list[int]) -> torch.Tensor:
    """Inverse-frequency weights, total / (K * n_c): 1 for every class when they are balanced."""
    counts = torch.tensor(class_counts, dtype=torch.float64)
    return counts.sum() / (len(class_counts) * counts)


def reference_weighted_ce(logits: torch.Tensor, labels: torch.Tensor, class_counts: list[int]) -> torch.Tensor:
    w = class_weights(class_counts).to(logits.dtype)
    return torch.nn.functional.cross_entropy(logits, labels, weight=w)


def _weighted_ce_mistakes(logits: torch.Tensor, labels: torch.Tensor, class_counts: list[int]) -> list[tuple[Any, str]]:
    f = torch.nn.functional
    w = class_weights(class_counts).to(logits.dtype)
    per_example = f.cross_entropy(logits, labels, reduction="none")
    batch_counts = torch.bincount(labels, minlength=len(class_counts)).tolist()
    out: list[tuple[Any, str]] = [
        (
            lambda: per_example.mean(),
            "you took the plain mean: weight each example's loss by its true class's weight, "
            "total / (K * class_counts[c]).",
        ),
        (
            lambda: (w[labels] * per_example).sum() / len(labels),
            "you divided by the number of examples; a weighted mean divides by the sum of the weights "
            "of the batch's labels, w[labels].sum() (what F.cross_entropy(..., weight=w) does).",
        ),
        (
            lambda: f.cross_entropy(logits, labels, weight=1 / w),
            "the weights are upside down: the rare class must weigh more, w_c = total / (K * n_c), not n_c / total.",
        ),
        (
            lambda: (w[logits.argmax(-1)] * per_example).sum() / w[logits.argmax(-1)].sum(),
            "you weighted each example by its predicted class; weight it by its true class, w[labels].",
        ),
    ]
    if all(batch_counts) and batch_counts != list(class_counts):
        out.append(
            (
                lambda: f.cross_entropy(logits, labels, weight=class_weights(batch_counts).to(logits.dtype)),
                "you counted the classes in this batch; use class_counts, the counts of the whole "
                "training set, which the function is given.",
            )
        )
    return out


WEIGHTED_CE_CASES: list[tuple[list[int], list[int], str]] = [
    ([1, 0, 0, 1, 0, 0], [8, 2], "ham 8 : spam 2, two spam in the batch"),
    ([0, 0, 0, 0, 1], [1, 1], "balanced classes"),
    ([2, 0, 1, 1, 0, 2, 0], [50, 30, 20], "three classes"),
    ([1, 1, 1], [7, 3], "only spam in the batch"),
]


@register("classification.weighted_cross_entropy", chapter=CHAPTER, title="A class-weighted loss", kind="build")
def check_weighted_cross_entropy(fn: Any) -> str:
    """Two and three classes, balanced counts, a batch of one class; value and gradient."""
    gen = torch.Generator().manual_seed(5)
    for labels_list, counts, what in WEIGHTED_CE_CASES:
        labels = torch.tensor(labels_list)
        logits = torch.randn(len(labels_list), len(counts), generator=gen)
        label = f"weighted_cross_entropy(logits {tuple(logits.shape)}, labels {labels_list}, {counts}) ({what})"
        given = logits.clone().requires_grad_(True)
        got = call(fn, given, labels.clone(), list(counts), label=label)
        expected = reference_weighted_ce(logits, labels, counts)
        if not isinstance(got, torch.Tensor):
            raise mismatch(
                f"{label} should return the loss as a tensor (with its gradient), so that training can "
                f"call loss.backward().",
                expected,
                got,
                "don't call .item() or float(...) on the loss.",
            )
        if got.numel() != 1:
            raise mismatch(
                f"{label} should return one number, the batch's loss.",
                expected,
                got,
                "reduce the per-example losses to their weighted mean.",
            )
        value = got.detach().reshape(())
        if not same(value, expected, rtol=1e-5, atol=1e-6):
            hint = known_mistake(value, _weighted_ce_mistakes(logits, labels, counts), rtol=1e-5, atol=1e-6) or (
                "w_c = sum(class_counts) / (K * class_counts[c]); loss = sum_i w[y_i] * CE_i / sum_i w[y_i]."
            )
            raise mismatch(f"{label} is wrong.", expected, value, hint)
        if not got.requires_grad:
            raise CheckFailed(
                f"{label} returned the right value, but without a gradient: training could not "
                f"backpropagate through it.\nHint: compute it with torch operations on logits (no "
                f".detach(), .item() or torch.tensor(...) around the result)."
            )
    return (
        "Correct: each example weighs total / (K · n_c) for its true class c, and the loss is the "
        "weighted mean, so the rare class counts as much in all as the common one."
    )


# --------------------------------------------------------------------------- pooling, either padding side


def _last_real_index(mask: torch.Tensor) -> torch.Tensor:
    """Each row's last True position, wherever the padding is."""
    positions = torch.arange(mask.shape[1])
    return torch.where(mask, positions, -1).max(dim=1).values


def reference_pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    if how == "last":
        return hidden[torch.arange(hidden.shape[0]), _last_real_index(mask)]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1)


def _pool_mistakes(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> list[tuple[Any, str]]:
    rows = torch.arange(hidden.shape[0])
    lengths = mask.sum(dim=1)
    m = mask.unsqueeze(-1).to(hidden.dtype)
    left_padded = bool((~mask[:, 0]).any())
    out: list[tuple[Any, str]] = []
    if how == "last":
        if left_padded:
            out.append(
                (
                    lambda: hidden[rows, lengths - 1],
                    (
                        "you read position mask.sum(dim=1) - 1, which is the last real token only when "
                        "the padding is on the right. In a left-padded row the real tokens end at the "
                        "last position; find each row's last True position instead, e.g. "
                        "torch.where(mask, torch.arange(T), -1).max(dim=1).values."
                    ),
                )
            )
        else:
            out.append(
                (
                    lambda: hidden[:, -1],
                    (
                        "you read the last position of every row, hidden[:, -1]. In a right-padded batch "
                        "that is a padding position for every row but the longest: find each row's last "
                        "True position in the mask."
                    ),
                )
            )
        out += [
            (
                lambda: hidden[rows, _first_real_index(mask)],
                (
                    "you read each row's first real token; a GPT's attention is causal, so only the "
                    "last real token has seen the whole sequence."
                ),
            ),
            (
                lambda: (hidden * m).sum(1) / m.sum(1),
                "you averaged the real positions: that is "
                "how='mean'; how='last' asks for the hidden state of the last real token.",
            ),
            (
                lambda: hidden[rows, _last_real_index(mask) - 1],
                ("off by one: you read the token before the last real one."),
            ),
        ]
    else:
        out += [
            (
                lambda: hidden.mean(dim=1),
                (
                    "you averaged every position, padding included: average only where mask is "
                    "True, (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)."
                ),
            ),
            (
                lambda: (hidden * m).sum(1) / hidden.shape[1],
                (
                    "you summed the real positions but divided by the full length T; divide by each "
                    "row's number of real tokens, mask.sum(dim=1)."
                ),
            ),
            (
                lambda: (hidden * m).sum(1),
                "you summed the real positions; divide by each row's number of real tokens to get their mean.",
            ),
            (
                lambda: hidden[rows, _last_real_index(mask)],
                "you returned the last real token: that is how='last'; how='mean' averages the real positions.",
            ),
        ]
    return out


def _first_real_index(mask: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(mask.shape[1])
    return torch.where(mask, positions, mask.shape[1]).min(dim=1).values


def _pool_cases() -> list[tuple[torch.Tensor, torch.Tensor, str]]:
    gen = torch.Generator().manual_seed(9)
    cases = []
    for lengths, width, channels, side in [
        ([3, 5, 1], 5, 4, "right"),
        ([2, 2], 6, 3, "right"),
        ([7], 7, 8, "right"),
        ([4, 1, 6, 3], 9, 5, "left"),
        ([2, 5], 5, 3, "left"),
    ]:
        real = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
        mask = real if side == "right" else real.flip(1)
        cases.append(
            (
                torch.randn(len(lengths), width, channels, generator=gen),
                mask,
                f"{side}-padded rows of {lengths} real tokens",
            )
        )
    return cases


@register("classification.pool", chapter=CHAPTER, title="Pooling with a padding mask, two ways", kind="build")
def check_pool(fn: Any) -> str:
    """Right- and left-padded batches, rows of one real token and full rows, both poolings."""
    for how in ("last", "mean"):
        for hidden, mask, what in _pool_cases():
            label = f"pool(hidden {tuple(hidden.shape)}, mask of {what}, how={how!r})"
            given_h, given_m = hidden.clone(), mask.clone()
            expected = reference_pool(hidden, mask, how)
            got = tensor_answer(call(fn, given_h, given_m, how, label=label), label, expected=expected)
            unchanged(label, [given_h, given_m], [hidden, mask], ("hidden", "mask"))
            if tuple(got.shape) != tuple(expected.shape):
                hint = "one vector per row: shape (batch, channels)."
                if got.dim() == 3 and got.shape[1] == 1:
                    hint = "drop the time dimension: the result is (batch, channels), not (batch, 1, channels)."
                raise CheckFailed(
                    f"{label} returned shape {tuple(got.shape)}, expected {tuple(expected.shape)}.\nHint: {hint}"
                )
            if not same(got, expected, atol=1e-6):
                hint = known_mistake(got, _pool_mistakes(hidden, mask, how), atol=1e-6) or (
                    "how='last': row i's hidden state at its last True mask position; how='mean': "
                    "the average of row i's hidden states where the mask is True."
                )
                raise mismatch(
                    f"{label} is wrong (first numbers of each row shown).", expected[:, :3], got[:, :3], hint
                )
    return (
        "Correct on 10 batches: the last real token and the mean of the real tokens, whether "
        "the padding is on the right or on the left."
    )


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


@register("classification.confusion_from_logits", chapter=CHAPTER, title="A confusion matrix from logits", kind="build")
def check_confusion_from_logits(fn: Any) -> str:
    """Two and three classes, a class never predicted, a class absent from the labels."""
    gen = torch.Generator().manual_seed(4)
    logits3 = torch.randn(12, 3, generator=gen)
    logits3[:, 2] -= 10  # class 2 is never predicted...
    cases = [
        (
            torch.tensor([[2.0, -1.0], [0.5, 1.5], [-1.0, 0.0], [3.0, 1.0], [0.0, 2.0]]),
            torch.tensor([0, 0, 1, 1, 1]),
            "2 classes, 5 messages",
        ),
        (torch.randn(20, 2, generator=gen), torch.randint(0, 2, (20,), generator=gen), "2 classes, 20 messages"),
        (logits3, torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 1, 1, 2, 0]), "3 classes, class 2 never predicted"),
        (torch.randn(6, 3, generator=gen), torch.tensor([0, 1, 0, 1, 0, 1]), "3 classes, no example of class 2"),
        (torch.randn(4, 2, generator=gen), torch.tensor([1, 1, 1, 1]), "only spam"),
    ]
    for logits, labels, what in cases:
        label = f"confusion_from_logits(logits {tuple(logits.shape)}, labels {labels.tolist()}) ({what})"
        expected = reference_confusion(logits, labels)
        got = tensor_answer(call(fn, logits.clone(), labels.clone(), label=label), label, expected=expected)
        if tuple(got.shape) != tuple(expected.shape):
            hint = "the matrix is (n_classes, n_classes) with n_classes = logits.shape[-1]."
            if got.shape[0] < expected.shape[0]:
                hint = (
                    "take the number of classes from logits.shape[-1], not from the largest label: a "
                    "class may have no example in the batch, and it still gets a row and a column."
                )
            raise CheckFailed(
                f"{label} returned shape {tuple(got.shape)}, expected {tuple(expected.shape)}.\nHint: {hint}"
            )
        if torch.is_floating_point(got) and not torch.equal(got, got.round()):
            raise mismatch(f"{label} should hold whole counts.", expected, got)
        if not torch.equal(got.long(), expected):
            hint = "entry [t, p] counts the examples whose true class is t and whose predicted class is p."
            if torch.equal(got.long(), expected.T):
                hint = "the matrix is transposed: rows are the true classes, columns the predicted ones."
            elif int(got.sum()) != len(labels):
                hint = (
                    f"the counts add up to {int(got.sum())}, not to the {len(labels)} examples: each "
                    f"example adds exactly 1, at [true class, predicted class]."
                )
            elif _argmax_over_examples(logits, labels, got):
                hint = "take the argmax over the classes, logits.argmax(dim=-1), not over the examples (dim=0)."
            raise mismatch(f"{label} gave the wrong counts.", expected, got, hint)
    return (
        "Correct on 5 cases: rows are true classes, columns predicted classes (argmax of the "
        "logits), with a row and a column for every class, even an unused one."
    )


# --------------------------------------------------------------------------- freezing all but the last k blocks


def _tiny_classifier(n_embd: int, n_layer: int, n_classes: int, seed: int) -> GPTClassifier:
    torch.manual_seed(seed)
    config = GPTConfig(
        vocab_size=50, n_positions=16, n_embd=n_embd, n_layer=n_layer, n_head=2, dropout=0.0, name="tiny"
    )
    return GPTClassifier(GPT(config), n_classes=n_classes)


def expected_trainable(model: GPTClassifier, k: int) -> list[str]:
    """The names that learn: the head; with k >= 1, also the final layer norm and the last k blocks."""
    n_layer = len(model.gpt.h)
    names = ["head."]
    if k:
        names += ["gpt.ln_f."] + [f"gpt.h.{i}." for i in range(n_layer - k, n_layer)]
    return sorted(n for n, _ in model.named_parameters() if n.startswith(tuple(names)))


def _blocks_in(names: list[str]) -> list[int]:
    return sorted({int(n.split(".")[2]) for n in names if n.startswith("gpt.h.")})


def _freeze_hint(trainable: list[str], expected: list[str], k: int, n_layer: int) -> str:
    blocks, wanted = _blocks_in(trainable), _blocks_in(expected)
    if k == 0 and blocks == list(range(n_layer)):
        return (
            "with k = 0 every block stayed trainable: model.gpt.h[-0:] is the whole list "
            "(-0 is 0). Handle k = 0 on its own, or slice h[len(h) - k:]."
        )
    if blocks == list(range(k)) and blocks != wanted:
        return "you unfroze the first k blocks; fine-tuning trains the last k, nearest the head."
    if not any(n.startswith("head.") for n in trainable):
        return (
            "the head must be trainable even if it was frozen before you were called: set "
            "requires_grad = True on model.head's parameters explicitly."
        )
    if k and not any(n.startswith("gpt.ln_f.") for n in trainable):
        return (
            "the final layer norm (model.gpt.ln_f) sits between the last block and the head: "
            "when blocks learn, it learns too."
        )
    if k == 0 and any(n.startswith("gpt.ln_f.") for n in trainable):
        return "with k = 0 only the head learns; leave the final layer norm frozen."
    if any(n.startswith(("gpt.wte", "gpt.wpe")) for n in trainable):
        return "the embeddings (gpt.wte, gpt.wpe) stay frozen: only the last k blocks, ln_f and the head learn."
    if blocks != wanted:
        return f"blocks {wanted} should learn; you left {blocks} trainable."
    return "freeze every parameter first, then switch on the head, ln_f and the last k blocks."


@register("classification.freeze_last_blocks", chapter=CHAPTER, title="Fine-tune only the last k blocks", kind="build")
def check_freeze_last_blocks(fn: Any) -> str:
    """k from 0 to every block, fresh models, a model with its head frozen before."""
    cases = [
        (16, 3, 2, 1, "fresh"),
        (16, 3, 2, 0, "fresh"),
        (24, 4, 3, 2, "head_frozen"),
        (8, 2, 2, 2, "all_frozen"),
        (8, 3, 2, 0, "all_trainable"),
    ]
    for n_embd, n_layer, n_classes, k, state in cases:
        model = _tiny_classifier(n_embd, n_layer, n_classes, seed=n_embd + k)
        if state == "head_frozen":
            model.head.requires_grad_(False)
        elif state == "all_frozen":
            model.requires_grad_(False)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        what = {
            "fresh": "a fresh classifier",
            "head_frozen": "a classifier whose head had been frozen",
            "all_frozen": "a classifier with every parameter frozen",
            "all_trainable": "a fresh classifier",
        }[state]
        label = f"freeze_last_blocks(model, k={k}) on {what} ({n_layer} blocks, n_embd {n_embd})"
        got = call(fn, model, k, label=label)
        if any(not torch.equal(p, before[n]) for n, p in model.named_parameters()):
            raise CheckFailed(
                f"{label} changed the values of some weights. Only switch requires_grad; "
                f"do not re-initialise or modify the parameters."
            )
        trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
        expected_names = expected_trainable(model, k)
        if trainable != expected_names:
            shown = trainable if len(trainable) <= 6 else [*trainable[:6], f"... ({len(trainable)} in all)"]
            want = (
                expected_names
                if len(expected_names) <= 6
                else [*expected_names[:6], f"... ({len(expected_names)} in all)"]
            )
            raise mismatch(
                f"{label} left the wrong parameters trainable.",
                want,
                shown,
                _freeze_hint(trainable, expected_names, k, n_layer),
            )
        params = dict(model.named_parameters())
        expected_count = sum(params[n].numel() for n in expected_names)
        got = whole_number(
            got,
            label,
            expected_count,
            hint="return the number of trainable parameters as an int, e.g. sum(p.numel() for p in ...).",
        )
        if got != expected_count:
            total = sum(p.numel() for p in model.parameters())
            hint = "count the numbers inside the trainable tensors: sum(p.numel() for p in params if p.requires_grad)."
            if got == len(expected_names):
                hint = "you counted the trainable tensors; count their elements with p.numel() instead."
            elif got == total:
                hint = "you counted every parameter; count only those with requires_grad = True."
            elif got == total - expected_count:
                hint = "you counted the frozen parameters; count the trainable ones."
            raise mismatch(f"{label} returned the wrong count.", expected_count, got, hint)
    return (
        "Correct: the head always learns; with k >= 1 the final layer norm and exactly the last k "
        "blocks learn too; no weight changes, and the count is right, for k = 0 as well."
    )


# --------------------------------------------------------------------------- experiment: which blocks, which lr

TOKENS, CONTEXT, SPAM_TOKEN, EOT = 12, 17, 2, 1
EXPERIMENT_STEPS, EXPERIMENT_BATCH, TARGET_ACCURACY = 60, 32, 0.9
EXPERIMENT_SEEDS = (0, 1, 2)


def contains_task(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A toy spam filter: label 1 when token 2 (the 'spam word') occurs in the message.

    Messages are 5-16 random tokens from 2..11 then the end-of-text token 1, right-padded
    with 0: (ids, mask, labels)."""
    lengths = torch.randint(6, CONTEXT + 1, (n,), generator=gen)
    ids = torch.zeros(n, CONTEXT, dtype=torch.long)
    body = torch.randint(2, TOKENS, (n, CONTEXT), generator=gen)
    positions = torch.arange(CONTEXT)[None, :]
    real = positions < (lengths[:, None] - 1)
    ids[real] = body[real]
    ids[torch.arange(n), lengths - 1] = EOT
    mask = positions < lengths[:, None]
    labels = ((ids == SPAM_TOKEN) & real).any(dim=1).long()
    return ids, mask, labels


def toy_classifier(seed: int) -> GPTClassifier:
    """The tiny GPT classifier of the experiment (3 blocks, n_embd 32), seeded."""
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=TOKENS, n_positions=CONTEXT, n_embd=32, n_layer=3, n_head=4, dropout=0.0, name="toy")
    return GPTClassifier(GPT(config), n_classes=2)


def train_toy(settings: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Fine-tune the toy classifier with ``settings`` ({"blocks": k, "lr": lr}) for 60 steps
    of 32 messages (AdamW) and measure held-out accuracy on 512 new messages.

    Returns {"accuracy", "first_loss", "last_loss"} (the mean training loss of the first
    and the last 10 steps)."""
    gen = torch.Generator().manual_seed(1000 + seed)
    train_ids, train_mask, train_labels = contains_task(1024, gen)
    test_ids, test_mask, test_labels = contains_task(512, gen)
    with torch.random.fork_rng():
        model = toy_classifier(seed)
        k = int(settings["blocks"])
        model.requires_grad_(False)
        model.head.requires_grad_(True)
        if k:
            model.gpt.ln_f.requires_grad_(True)
            for block in model.gpt.h[len(model.gpt.h) - k :]:
                block.requires_grad_(True)
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=float(settings["lr"]), weight_decay=0.0
        )
        order = torch.Generator().manual_seed(seed)
        losses = []
        for _ in range(EXPERIMENT_STEPS):
            pick = torch.randint(0, len(train_ids), (EXPERIMENT_BATCH,), generator=order)
            loss = torch.nn.functional.cross_entropy(model(train_ids[pick], train_mask[pick]), train_labels[pick])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        with torch.no_grad():
            accuracy = (model(test_ids, test_mask).argmax(-1) == test_labels).float().mean().item()
    return {"accuracy": accuracy, "first_loss": sum(losses[:10]) / 10, "last_loss": sum(losses[-10:]) / 10}


def _settings(got: Any, label: str) -> dict[str, Any]:
    example = '{"blocks": 1, "lr": 1e-3}'
    if not isinstance(got, dict) or set(got) != {"blocks", "lr"}:
        raise CheckFailed(
            f"{label} should return a dict with exactly the keys 'blocks' and 'lr', "
            f"e.g. {example}, but returned {describe(got)}."
        )
    blocks, lr = got["blocks"], scalar(got["lr"])
    if not is_int(blocks) or not 0 <= blocks <= 3:
        raise CheckFailed(
            f"{label}: 'blocks' is how many of the toy GPT's 3 blocks learn, an int from "
            f"0 to 3; got {describe(blocks)}."
        )
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < 10 or lr != lr:
        raise CheckFailed(f"{label}: 'lr' is a learning rate, a positive number below 10; got {describe(lr)}.")
    return {"blocks": int(blocks), "lr": float(lr)}


@register(
    "classification.choose_blocks_and_lr",
    chapter=CHAPTER,
    kind="experiment",
    time_limit=30,
    title="Experiment: which blocks learn, and how fast",
)
def check_choose_blocks_and_lr(fn: Any) -> str:
    """Trains the toy classifier with the learner's settings on seeds 0-2; each must reach 90 %."""
    label = "choose_settings()"
    settings = _settings(call(fn, label=label), label)
    results = [train_toy(settings, seed) for seed in EXPERIMENT_SEEDS]
    worst = min(range(len(results)), key=lambda i: results[i]["accuracy"])
    r = results[worst]
    if r["accuracy"] >= TARGET_ACCURACY:
        accs = ", ".join(f"{x['accuracy']:.1%}" for x in results)
        return (
            f"Reached the target: held-out accuracy {accs} on seeds 0, 1, 2 (at least "
            f"{TARGET_ACCURACY:.0%}) after {EXPERIMENT_STEPS} steps with {settings}."
        )
    chance = 0.693  # ln 2: the loss of a coin toss
    if r["last_loss"] != r["last_loss"] or r["first_loss"] > chance + 0.1 or r["last_loss"] > r["first_loss"]:
        hint = (
            f"the training loss jumped ({r['first_loss']:.3f} over the first 10 steps, "
            f"{r['last_loss']:.3f} over the last 10, where guessing scores ln 2 = 0.693): the "
            f"learning rate is too large. Lower it, by factors of 3 to 10."
        )
    elif settings["blocks"] == 0 and r["first_loss"] - r["last_loss"] > 0.02:
        hint = (
            "with blocks = 0 only the head learns, and it reads the frozen last token's "
            "features, which were never trained to notice the spam word: let the last block "
            "learn as well (blocks = 1 or more)."
        )
    elif r["first_loss"] - r["last_loss"] < 0.1 and settings["lr"] >= 1e-2:
        hint = (
            f"the training loss hardly moved ({r['first_loss']:.3f} -> {r['last_loss']:.3f}): "
            f"with a learning rate this large, training can get stuck on a seed. Try one 3 "
            f"to 10 times smaller."
        )
    elif r["first_loss"] - r["last_loss"] < 0.1:
        hint = (
            f"the training loss hardly moved ({r['first_loss']:.3f} -> {r['last_loss']:.3f} "
            f"in {EXPERIMENT_STEPS} steps): the learning rate is too small. Raise it, by "
            f"factors of 3 to 10."
        )
    elif settings["blocks"] == 0:
        hint = "with blocks = 0 only the head learns: let the last block learn as well (blocks = 1 or more)."
    else:
        hint = (
            "the loss falls but not far enough: try a learning rate 3x larger or smaller, and another number of blocks."
        )
    raise CheckFailed(
        f"With {settings}, held-out accuracy after {EXPERIMENT_STEPS} steps is "
        f"{r['accuracy']:.1%} on seed {EXPERIMENT_SEEDS[worst]}; the target is at least "
        f"{TARGET_ACCURACY:.0%} on each of seeds 0, 1, 2 (always giving the commoner answer "
        f"scores about {_majority_share():.0%}).\nHint: {hint}"
    )


def _majority_share() -> float:
    _, _, labels = contains_task(512, torch.Generator().manual_seed(1000))
    share = float(labels.float().mean())
    return max(share, 1 - share)
