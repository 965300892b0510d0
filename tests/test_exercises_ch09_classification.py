"""Chapter 9's checks (``llmbook.exercises.checks.ch09_classification``): the table that
test_exercises_checks.py runs."""

from __future__ import annotations

import random

import torch

from llmbook.exercises.checks import ch09_classification as ch09

CHAPTER = "09"


def balanced_indices(labels, seed):
    rng = random.Random(seed)
    by_class = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    n = min(len(v) for v in by_class.values())
    return sorted(i for y in sorted(by_class) for i in rng.sample(by_class[y], n))


def balanced_with_torch(labels, seed):
    g = torch.Generator().manual_seed(seed)
    labels_t = torch.tensor(labels)
    n = min(int((labels_t == c).sum()) for c in labels_t.unique())
    keep = [
        torch.nonzero(labels_t == c).flatten()[torch.randperm(int((labels_t == c).sum()), generator=g)[:n]]
        for c in labels_t.unique()
    ]
    return torch.cat(keep).sort().values  # a tensor of indices is accepted too


def weighted_cross_entropy(logits, labels, class_counts):
    counts = torch.tensor(class_counts, dtype=torch.float)
    weights = counts.sum() / (len(class_counts) * counts)
    return torch.nn.functional.cross_entropy(logits, labels, weight=weights)


def weighted_by_hand(logits, labels, class_counts):
    w = torch.tensor([1 / n for n in class_counts])[labels]  # any scale: it cancels
    losses = -torch.log_softmax(logits, dim=-1)[torch.arange(len(labels)), labels]
    return (w * losses).sum() / w.sum()


def pool(hidden, mask, how):
    if how == "mean":
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1)
    positions = torch.arange(mask.shape[1]).expand_as(mask)
    last = torch.where(mask, positions, -1).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0]), last]


def pool_with_loops(hidden, mask, how):
    rows = []
    for h, m in zip(hidden, mask):
        real = h[m]
        rows.append(real.mean(dim=0) if how == "mean" else real[-1])
    return torch.stack(rows)


def confusion_from_logits(logits, labels):
    k = logits.shape[-1]
    out = torch.zeros(k, k, dtype=torch.long)
    out.index_put_((labels, logits.argmax(-1)), torch.ones_like(labels), accumulate=True)
    return out


def confusion_bincount(logits, labels):
    k = logits.shape[-1]
    return torch.bincount(labels * k + logits.argmax(-1), minlength=k * k).view(k, k).float()


def freeze_last_blocks(model, k):
    model.requires_grad_(False)
    model.head.requires_grad_(True)
    if k > 0:
        model.gpt.ln_f.requires_grad_(True)
        for block in model.gpt.h[-k:]:
            block.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def freeze_by_name(model, k):
    n = len(model.gpt.h)
    learn = ("head.",) + (("gpt.ln_f.",) + tuple(f"gpt.h.{i}." for i in range(n - k, n)) if k else ())
    count = 0
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith(learn)
        count += p.numel() if p.requires_grad else 0
    return count


def choose_settings():
    return {"blocks": 1, "lr": 3e-3}


CORRECT = {
    "classification.balanced_indices": [balanced_indices, balanced_with_torch],
    "classification.weighted_cross_entropy": [weighted_cross_entropy, weighted_by_hand],
    "classification.pool": [pool, pool_with_loops],
    "classification.confusion_from_logits": [confusion_from_logits, confusion_bincount],
    "classification.freeze_last_blocks": [freeze_last_blocks, freeze_by_name],
    "classification.choose_blocks_and_lr": [choose_settings, lambda: {"blocks": 3, "lr": 5e-3}],
}


def _by_class(labels):
    by_class = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    return by_class, min(len(v) for v in by_class.values())


def _first_n(labels, seed):
    by_class, n = _by_class(labels)
    return sorted(i for v in by_class.values() for i in v[:n])


def _global_random(labels, seed):
    by_class, n = _by_class(labels)
    return sorted(i for v in by_class.values() for i in random.sample(v, n))


def _with_replacement(labels, seed):
    rng = random.Random(seed)
    by_class, n = _by_class(labels)
    return sorted(i for v in by_class.values() for i in rng.choices(v, k=n))


def _unsorted(labels, seed):
    rng = random.Random(seed)
    by_class, n = _by_class(labels)
    return [i for y in sorted(by_class) for i in rng.sample(by_class[y], n)]


def _per_example(logits, labels):
    return torch.nn.functional.cross_entropy(logits, labels, reduction="none")


def _weights(counts):
    counts = torch.tensor(counts, dtype=torch.float)
    return counts.sum() / (len(counts) * counts)


def _divided_by_n(logits, labels, counts):
    return (_weights(counts)[labels] * _per_example(logits, labels)).sum() / len(labels)


def _batch_counts(logits, labels, counts):
    batch = torch.bincount(labels, minlength=len(counts)).clamp(min=1).tolist()
    return weighted_cross_entropy(logits, labels, batch)


def _pool_in_place(h, m, how):
    out = pool(h, m, how).clone()
    h.zero_()
    return out


def _right_padding_only(h, m, how):
    if how == "mean":
        return pool(h, m, how)
    return h[torch.arange(h.shape[0]), m.sum(1) - 1]


def _mean_over_everything(h, m, how):
    return h.mean(dim=1) if how == "mean" else pool(h, m, how)


def _mean_over_t(h, m, how):
    return (h * m[..., None]).sum(1) / h.shape[1] if how == "mean" else pool(h, m, how)


def _shape_from_labels(logits, labels):
    k = int(labels.max()) + 1
    out = torch.zeros(k, k, dtype=torch.long)
    for t, p in zip(labels.tolist(), logits.argmax(-1).tolist(), strict=True):
        if p < k:
            out[t, p] += 1
    return out


def _first_k(model, k):
    model.requires_grad_(False)
    model.head.requires_grad_(True)
    if k:
        model.gpt.ln_f.requires_grad_(True)
        for block in model.gpt.h[:k]:
            block.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _minus_zero(model, k):
    model.requires_grad_(False)
    for module in (model.head, model.gpt.ln_f, *model.gpt.h[-k:]):
        module.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _no_ln_f(model, k):
    freeze_last_blocks(model, k)
    model.gpt.ln_f.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _head_not_reenabled(model, k):
    for p in model.gpt.parameters():
        p.requires_grad_(False)
    if k:
        model.gpt.ln_f.requires_grad_(True)
        for block in model.gpt.h[-k:]:
            block.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _count_tensors(model, k):
    freeze_last_blocks(model, k)
    return sum(1 for p in model.parameters() if p.requires_grad)


def _count_all(model, k):
    freeze_last_blocks(model, k)
    return sum(p.numel() for p in model.parameters())


def _reinit(model, k):
    torch.nn.init.zeros_(model.head.weight)
    return freeze_last_blocks(model, k)


MISTAKES = {
    "classification.balanced_indices": [
        (_first_n, "first n examples"),
        (_global_random, "same seed"),
        (_with_replacement, "without replacement"),
        (_unsorted, "sorted"),
        (lambda labels, seed: list(range(len(labels))), "kept everything"),
        (lambda labels, seed: list(labels), "the labels themselves"),
        (lambda labels, seed: [labels.index(min(labels))] * 2, "more than once"),
        (lambda labels, seed: [len(labels)], "has only"),
    ],
    "classification.weighted_cross_entropy": [
        (lambda lo, la, c: torch.nn.functional.cross_entropy(lo, la), ("plain mean", "expected")),
        (_divided_by_n, "sum of the weights"),
        (lambda lo, la, c: weighted_cross_entropy(lo, la, [1 / n for n in c]), "upside down"),
        (_batch_counts, "counted the classes in this batch"),
        (lambda lo, la, c: weighted_cross_entropy(lo, la, c).item(), ".item()"),
        (lambda lo, la, c: weighted_cross_entropy(lo, la, c).detach(), "without a gradient"),
        (
            lambda lo, la, c: torch.nn.functional.cross_entropy(lo, la, weight=_weights(c), reduction="none"),
            "one number",
        ),
    ],
    "classification.pool": [
        (_right_padding_only, ("left-padded", "mask.sum(dim=1) - 1", "expected")),
        (lambda h, m, how: h[:, -1] if how == "last" else pool(h, m, how), "hidden[:, -1]"),
        (_mean_over_everything, "padding included"),
        (_mean_over_t, "divided by the full length T"),
        (lambda h, m, how: pool(h, m, "mean" if how == "last" else "last"), "how='last' asks"),
        (lambda h, m, how: pool(h, m, how)[:, None], "drop the time dimension"),
        (lambda h, m, how: pool(h, m, how).tolist(), "torch.Tensor"),
        (_pool_in_place, "in place"),
    ],
    "classification.confusion_from_logits": [
        (lambda lo, la: confusion_from_logits(lo, la).T, "transposed"),
        (lambda lo, la: confusion_from_logits(lo[:, : int(la.max()) + 1], la), "logits.shape[-1]"),
        (lambda lo, la: confusion_from_logits(lo, la) * 2, "add up to"),
        (lambda lo, la: confusion_from_logits(lo, la) / len(la), "whole counts"),
        (lambda lo, la: confusion_from_logits(lo, la).tolist(), "torch.Tensor"),
        (_shape_from_labels, "not from the largest label"),
    ],
    "classification.freeze_last_blocks": [
        (_minus_zero, ("k=0", "h[-0:]")),
        (_first_k, "first k blocks"),
        (_no_ln_f, "final layer norm"),
        (_head_not_reenabled, "even if it was frozen"),
        (_count_tensors, "p.numel()"),
        (_count_all, "counted every parameter"),
        (lambda m, k: float(freeze_last_blocks(m, k)), "int"),
        (_reinit, "changed the values"),
    ],
    "classification.choose_blocks_and_lr": [
        (lambda: {"blocks": 0, "lr": 3e-3}, ("blocks = 0", "let the last block learn", "target")),
        (lambda: {"blocks": 1, "lr": 1e-5}, "too small"),
        (lambda: {"blocks": 2, "lr": 1e-2}, ("seed 2", "get stuck")),
        (lambda: {"blocks": 1, "lr": 0.3}, "too large"),
        (lambda: {"blocks": 5, "lr": 1e-3}, "from 0 to 3"),
        (lambda: (1, 1e-3), "exactly the keys"),
        (lambda: {"blocks": 1, "lr": "3e-3"}, "positive number"),
    ],
}


def test_the_reference_settings_pass_with_a_margin_and_the_head_alone_fails() -> None:
    """Seeds 0-2: the reference clears the 90 % target by 5 points, the head alone misses it by 10."""
    for seed in ch09.EXPERIMENT_SEEDS:
        assert ch09.train_toy(choose_settings(), seed)["accuracy"] >= ch09.TARGET_ACCURACY + 0.05
        assert ch09.train_toy({"blocks": 0, "lr": 3e-3}, seed)["accuracy"] <= ch09.TARGET_ACCURACY - 0.1
