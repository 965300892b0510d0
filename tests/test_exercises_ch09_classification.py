"""Chapter 9's checks (``llmbook.exercises.checks.ch09_classification``): the table that
test_exercises_checks.py runs."""

from __future__ import annotations

import random

import torch

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
    keep = [torch.nonzero(labels_t == c).flatten()[torch.randperm(int((labels_t == c).sum()), generator=g)[:n]]
            for c in labels_t.unique()]
    return torch.cat(keep).sort().values  # a tensor of indices is accepted too


def pool_last(hidden, mask):
    return hidden[torch.arange(hidden.shape[0]), mask.sum(dim=1) - 1]


def pool_last_gather(hidden, mask):
    index = (mask.sum(1) - 1)[:, None, None].expand(-1, 1, hidden.shape[-1])
    return hidden.gather(1, index).squeeze(1)


def confusion_from_logits(logits, labels):
    k = logits.shape[-1]
    out = torch.zeros(k, k, dtype=torch.long)
    out.index_put_((labels, logits.argmax(-1)), torch.ones_like(labels), accumulate=True)
    return out


def confusion_bincount(logits, labels):
    k = logits.shape[-1]
    return torch.bincount(labels * k + logits.argmax(-1), minlength=k * k).view(k, k).float()


def freeze_all_but_head(model):
    model.requires_grad_(False)
    model.head.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


CORRECT = {
    "classification.balanced_indices": [balanced_indices, balanced_with_torch],
    "classification.last_token_pool": [pool_last, pool_last_gather],
    "classification.confusion_from_logits": [confusion_from_logits, confusion_bincount],
    "classification.freeze_all_but_head": [freeze_all_but_head],
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


def _pool_in_place(h, m):
    out = h[torch.arange(h.shape[0]), m.sum(1) - 1].clone()
    h.zero_()
    return out


def _shape_from_labels(logits, labels):
    k = int(labels.max()) + 1
    out = torch.zeros(k, k, dtype=torch.long)
    for t, p in zip(labels.tolist(), logits.argmax(-1).tolist(), strict=True):
        if p < k:
            out[t, p] += 1
    return out


def _gpt_only(model):
    for p in model.gpt.h.parameters():
        p.requires_grad_(False)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _no_reenable(model):
    for p in model.gpt.parameters():
        p.requires_grad_(False)
    return sum(p.numel() for p in model.head.parameters())


def _count_tensors(model):
    freeze_all_but_head(model)
    return sum(1 for p in model.parameters() if p.requires_grad)


def _count_all(model):
    freeze_all_but_head(model)
    return sum(p.numel() for p in model.parameters())


def _reinit(model):
    torch.nn.init.zeros_(model.head.weight)
    return freeze_all_but_head(model)


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
    "classification.last_token_pool": [
        (lambda h, m: h[:, -1], "hidden[:, -1]"),
        (lambda h, m: h[:, 0], "first position"),
        (lambda h, m: (h * m[..., None]).sum(1) / m.sum(1, keepdim=True), "mean pooling"),
        (lambda h, m: h[torch.arange(h.shape[0]), m.sum(1) - 2], "off by one"),
        (lambda h, m: h[torch.arange(h.shape[0]), m.sum(1) - 1][:, None], "drop the time dimension"),
        (lambda h, m: h[torch.arange(h.shape[0]), m.sum(1) - 1].tolist(), "torch.Tensor"),
        # one past the last real token: the first batch has a full row, so this indexes past its end
        (lambda h, m: h[torch.arange(h.shape[0]), m.sum(1)], "IndexError"),
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
    "classification.freeze_all_but_head": [
        (_gpt_only, "embeddings"),
        (_no_reenable, "even if it was frozen"),
        (lambda m: m.gpt.requires_grad_(False) and m.head.requires_grad_(False) and 0, "nothing is trainable"),
        (_count_tensors, "p.numel()"),
        (_count_all, "counted every parameter"),
        (lambda m: float(freeze_all_but_head(m)), "int"),
        (_reinit, "changed the values"),
    ],
}
