"""Chapter 9's checks: right answers pass, the usual wrong answers fail with the right hint."""

from __future__ import annotations

import random

import pytest
import torch

from llmbook.exercises import check, checks_for_chapter

# --------------------------------------------------------------------------- reference answers


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


def test_chapter_9_has_four_checks_in_exercise_order():
    names = [c.name for c in checks_for_chapter("09")]
    assert names == ["classification.balanced_indices", "classification.last_token_pool",
                     "classification.confusion_from_logits", "classification.freeze_all_but_head"]


@pytest.mark.parametrize("name, answer", [
    ("classification.balanced_indices", balanced_indices),
    ("classification.balanced_indices", balanced_with_torch),
    ("classification.last_token_pool", pool_last),
    ("classification.last_token_pool", pool_last_gather),
    ("classification.confusion_from_logits", confusion_from_logits),
    ("classification.confusion_from_logits", confusion_bincount),
    ("classification.freeze_all_but_head", freeze_all_but_head),
])
def test_correct_answers_pass(name, answer):
    result = check(name, answer)
    assert result.passed, result.feedback


# --------------------------------------------------------------------------- typical mistakes


def _first_n(labels, seed):
    by_class = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    n = min(len(v) for v in by_class.values())
    return sorted(i for v in by_class.values() for i in v[:n])


def _global_random(labels, seed):
    by_class = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    n = min(len(v) for v in by_class.values())
    return sorted(i for v in by_class.values() for i in random.sample(v, n))


def _with_replacement(labels, seed):
    rng = random.Random(seed)
    by_class = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    n = min(len(v) for v in by_class.values())
    return sorted(i for v in by_class.values() for i in rng.choices(v, k=n))


def _unsorted(labels, seed):
    rng = random.Random(seed)
    by_class = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    n = min(len(v) for v in by_class.values())
    return [i for y in sorted(by_class) for i in rng.sample(by_class[y], n)]


@pytest.mark.parametrize("answer, hint", [
    (_first_n, "first n examples"),
    (_global_random, "same seed"),
    (_with_replacement, "without replacement"),
    (_unsorted, "sorted"),
    (lambda labels, seed: list(range(len(labels))), "kept everything"),
    (lambda labels, seed: [y for y in labels], "the labels themselves"),
    (lambda labels, seed: [labels.index(min(labels))] * 2, "more than once"),
    (lambda labels, seed: [len(labels)], "has only"),
])
def test_balanced_indices_mistakes(answer, hint):
    result = check("classification.balanced_indices", answer)
    assert not result.passed and hint in result.feedback, result.feedback


@pytest.mark.parametrize("answer, hint", [
    (lambda h, m: h[:, -1], "hidden[:, -1]"),
    (lambda h, m: h[:, 0], "first position"),
    (lambda h, m: (h * m[..., None]).sum(1) / m.sum(1, keepdim=True), "mean pooling"),
    (lambda h, m: h[torch.arange(h.shape[0]), m.sum(1) - 2], "off by one"),
    (lambda h, m: h[torch.arange(h.shape[0]), m.sum(1) - 1][:, None], "drop the time dimension"),
    (lambda h, m: h[torch.arange(h.shape[0]), m.sum(1) - 1].tolist(), "torch.Tensor"),
])
def test_last_token_pool_mistakes(answer, hint):
    result = check("classification.last_token_pool", answer)
    assert not result.passed and hint in result.feedback, result.feedback


def test_last_token_pool_off_by_one_past_the_end_is_explained():
    result = check("classification.last_token_pool", lambda h, m: h[torch.arange(h.shape[0]), m.sum(1)])
    assert not result.passed, result.feedback
    assert "IndexError" in result.feedback or "off by one" in result.feedback, result.feedback


def test_last_token_pool_in_place_change_is_caught():
    def in_place(h, m):
        out = h[torch.arange(h.shape[0]), m.sum(1) - 1].clone()
        h.zero_()
        return out

    result = check("classification.last_token_pool", in_place)
    assert not result.passed and "in place" in result.feedback


@pytest.mark.parametrize("answer, hint", [
    (lambda lo, la: confusion_from_logits(lo, la).T, "transposed"),
    (lambda lo, la: confusion_from_logits(lo[:, : int(la.max()) + 1], la), "logits.shape[-1]"),
    (lambda lo, la: confusion_from_logits(lo, la) * 2, "add up to"),
    (lambda lo, la: confusion_from_logits(lo, la) / len(la), "whole counts"),
    (lambda lo, la: confusion_from_logits(lo, la).tolist(), "torch.Tensor"),
])
def test_confusion_mistakes(answer, hint):
    result = check("classification.confusion_from_logits", answer)
    assert not result.passed and hint in result.feedback, result.feedback


def _shape_from_labels(logits, labels):
    k = int(labels.max()) + 1
    out = torch.zeros(k, k, dtype=torch.long)
    for t, p in zip(labels.tolist(), logits.argmax(-1).tolist()):
        if p < k:
            out[t, p] += 1
    return out


def test_confusion_size_from_labels_gets_the_hint():
    result = check("classification.confusion_from_logits", _shape_from_labels)
    assert not result.passed and "not from the largest label" in result.feedback, result.feedback


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


@pytest.mark.parametrize("answer, hint", [
    (_gpt_only, "embeddings"),
    (_no_reenable, "even if it was frozen"),
    (lambda m: m.gpt.requires_grad_(False) and m.head.requires_grad_(False) and 0, "nothing is trainable"),
    (_count_tensors, "p.numel()"),
    (_count_all, "counted every parameter"),
    (lambda m: float(freeze_all_but_head(m)), "int"),
    (_reinit, "changed the values"),
])
def test_freeze_mistakes(answer, hint):
    result = check("classification.freeze_all_but_head", answer)
    assert not result.passed and hint in result.feedback, result.feedback


def test_unwritten_exercise_is_reported_as_not_written():
    def stub(*args):
        raise NotImplementedError("Write your solution here")

    for name in ("classification.balanced_indices", "classification.last_token_pool",
                 "classification.confusion_from_logits", "classification.freeze_all_but_head"):
        result = check(name, stub)
        assert not result.passed and "not written this yet" in result.feedback
