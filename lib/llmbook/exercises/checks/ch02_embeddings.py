"""Checks for chapter 2, "Autoencoders and embeddings".

Five exercises build what the chapter explained but took ready-made from ``llmbook``,
and measure one claim of its own:

- ``embeddings.bottleneck`` (experiment): the learner chooses a code size, width,
  learning rate and number of steps; the check trains the chapter's autoencoder with them
  on the 8×8 digits and measures nearest-neighbour recognition from the code on the test
  images, which must beat PCA with more numbers.
- ``embeddings.keep_probability`` (formula): word2vec's subsampling, min(1, √(t/f)).
- ``embeddings.skipgram_pairs`` (build): the vectorised pair generator, with word2vec's
  per-center window sizes, compared as a multiset with the reference.
- ``embeddings.sgns_step`` (build): one stochastic-gradient step on the center and context
  tables, repeated words in the batch included.
- ``embeddings.analogy`` (build): b − a + c by cosine similarity, the query words left out.

Each check names the failing input, shows expected against got, and recognises the usual
mistakes by recomputing them (a window counted from the context word, a sum for a mean,
a step uphill, an update that drops repeated words, the query words left in, ...).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmbook.exercises.compare import (
    first_row,
    head,
    is_int,
    known_mistake,
    one_thread,
    same,
    tensor_answer,
    tensor_tuple,
    unchanged,
)
from llmbook.exercises.core import CheckFailed, call, describe, mismatch, register

CHAPTER = "02"
ATOL = 1e-6  # probabilities and updated vectors are compared more tightly than the default


# --------------------------------------------------------------------------- the bottleneck

MAX_CODE = 3
MAX_STEPS = 600
MAX_HIDDEN = 512
TARGET = 0.86
BATCH = 128
SEED = 0


@lru_cache(maxsize=1)
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The chapter's split of scikit-learn's 8×8 digits: (X_train, y_train, X_test, y_test),
    pixels scaled to 0..1, a fixed stratified 30% held out."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target)
    train, test = train_test_split(np.arange(len(x)), test_size=0.3, stratify=data.target, random_state=0)
    return x[train], y[train], x[test], y[test]


def knn_accuracy(train_vectors: torch.Tensor, test_vectors: torch.Tensor) -> float:
    """Share of test digits whose nearest training vector (Euclidean) has the same label."""
    _, y_train, _, y_test = digits()
    closest = torch.cdist(test_vectors, train_vectors).argmin(dim=1)
    return (y_train[closest] == y_test).float().mean().item()


@lru_cache(maxsize=8)
def pca_accuracy(k: int) -> float:
    """Nearest-neighbour accuracy of the k principal components of the pixels."""
    x_train, _, x_test, _ = digits()
    mean = x_train.mean(0)
    _, _, components = torch.linalg.svd(x_train - mean, full_matrices=False)
    p = components[:k].T
    return knn_accuracy((x_train - mean) @ p, (x_test - mean) @ p)


def train_bottleneck(code_size: int, hidden: int, lr: float, steps: int, seed: int = SEED) -> dict[str, Any]:
    """Train the chapter's autoencoder (64 → hidden → code → hidden → 64, sigmoid output,
    Adam, batches of 128) and measure its code: the check runs it, and so can the
    exercise notebook. Returns the test reconstruction loss, the mean training loss of
    every 100 steps, and the nearest-neighbour accuracy of the code on the test digits."""
    x_train, _, x_test, _ = digits()
    with one_thread():  # the same numbers on every machine
        with torch.enable_grad():
            torch.manual_seed(seed)
            encoder = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, code_size))
            decoder = nn.Sequential(nn.Linear(code_size, hidden), nn.ReLU(), nn.Linear(hidden, 64), nn.Sigmoid())
            params = [*encoder.parameters(), *decoder.parameters()]
            optimizer = torch.optim.Adam(params, lr=lr)
            gen = torch.Generator().manual_seed(seed)
            curve, running = [], []
            for step in range(steps):
                batch = x_train[torch.randint(len(x_train), (BATCH,), generator=gen)]
                loss = ((decoder(encoder(batch)) - batch) ** 2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                running.append(loss.item())
                if len(running) == 100 or step == steps - 1:
                    curve.append(sum(running) / len(running))  # mean loss per 100 steps
                    running = []
        with torch.no_grad():
            test_loss = ((decoder(encoder(x_test)) - x_test) ** 2).mean().item()
            accuracy = knn_accuracy(encoder(x_train), encoder(x_test))
    return {"accuracy": accuracy, "test_loss": test_loss, "curve": curve}


def _setting(settings: dict[str, Any], key: str, kind: type, low: float, high: float) -> Any:
    if key not in settings:
        raise CheckFailed(
            f"the settings have no {key!r}: give all four, e.g. "
            f"{{'code_size': 3, 'hidden': 64, 'lr': 1e-3, 'steps': 300}}; got {describe(settings)}."
        )
    value = settings[key]
    ok = is_int(value) if kind is int else isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value):
        raise CheckFailed(
            f"settings[{key!r}] should be {'an int' if kind is int else 'a number'}, got {describe(value)}."
        )
    if not low <= value <= high:
        rule = {
            "code_size": f"the code may hold at most {MAX_CODE} numbers per image (and at least 1)",
            "steps": f"train for at most {MAX_STEPS} steps (and at least 1)",
            "hidden": f"the hidden layers may have 1 to {MAX_HIDDEN} units",
            "lr": "the learning rate must be positive and at most 1",
        }[key]
        raise CheckFailed(f"settings[{key!r}] = {value!r} breaks the rules: {rule}.")
    return kind(value)


@lru_cache(maxsize=1)
def average_image_loss() -> float:
    """The test loss of always answering the average training image: a network that does
    no better has learned nothing about the individual digit."""
    x_train, _, x_test, _ = digits()
    return ((x_train.mean(0) - x_test) ** 2).mean().item()


def _bottleneck_hint(code_size: int, hidden: int, lr: float, steps: int, result: dict[str, Any]) -> str:
    """What to try, from what the run shows."""
    curve, test_loss = result["curve"], result["test_loss"]
    if not math.isfinite(test_loss) or test_loss > 0.8 * average_image_loss():
        if lr > 3e-2:
            return (
                f"the test loss ({test_loss:.4f}) is not clearly below that of always "
                f"answering the average image ({average_image_loss():.4f}): a learning rate of "
                f"{lr:g} is too large for Adam here and training is stuck. Try one ten "
                f"times smaller."
            )
        return (
            f"the test loss ({test_loss:.4f}) is not clearly below that of always answering "
            f"the average image ({average_image_loss():.4f}): the network has barely trained. "
            f"Raise the learning rate or the number of steps."
        )
    if lr > 3e-2:
        return (
            f"a learning rate of {lr:g} makes Adam's steps jumpy, so the code ends up "
            f"wherever the last steps threw it; try 1e-2 and a few values around it."
        )
    if code_size < MAX_CODE:
        return (
            f"{code_size} number{'s' if code_size > 1 else ''} per image is a tighter "
            f"squeeze than needed: the rule allows {MAX_CODE}, and each number more keeps "
            f"more of what tells digits apart."
        )
    if hidden < 64:
        return (
            f"a hidden layer of {hidden} units is narrow: the encoder has little room to "
            f"bend the pixels into a good code. Try 128 or 256."
        )
    if steps < MAX_STEPS:
        return f"you stopped after {steps} steps; the rule allows {MAX_STEPS}, and the training loss was still falling."
    if lr < 5e-3 and len(curve) >= 2:
        return (
            f"the network was still learning when it stopped (mean training loss "
            f"{curve[-2]:.4f} over the last 100 steps but one, {curve[-1]:.4f} over the "
            f"last): with only {steps} steps a larger learning rate gets further. Try a "
            f"few between 3e-3 and 3e-2."
        )
    return (
        "compare a few learning rates (3e-3 to 3e-2) and widths (64 to 256) with "
        "train_bottleneck in the notebook, and keep the best."
    )


@register(
    "embeddings.bottleneck",
    chapter=CHAPTER,
    kind="experiment",
    time_limit=30,
    title="A 3-number code that recognises digits better than PCA's 4",
)
def check_bottleneck(settings: Any) -> str:  # the function bottleneck_settings, or its dict
    """Trains the chapter's autoencoder with the learner's settings (seed 0, one thread,
    about a second) and measures the code's nearest-neighbour accuracy on the test digits."""
    if callable(settings):
        settings = call(settings, label="bottleneck_settings()")
    if not isinstance(settings, dict):
        raise CheckFailed(
            f"bottleneck_settings() should return a dict of settings, e.g. {{'code_size': 3, "
            f"'hidden': 64, 'lr': 1e-3, 'steps': 300}}; got {describe(settings)}."
        )
    code_size = _setting(settings, "code_size", int, 1, MAX_CODE)
    hidden = _setting(settings, "hidden", int, 1, MAX_HIDDEN)
    lr = _setting(settings, "lr", float, 1e-8, 1.0)
    steps = _setting(settings, "steps", int, 1, MAX_STEPS)
    unknown = sorted(set(settings) - {"code_size", "hidden", "lr", "steps"})
    if unknown:
        raise CheckFailed(
            f"settings has keys the check does not use: {unknown}. Give exactly code_size, hidden, lr and steps."
        )
    result = train_bottleneck(code_size, hidden, lr, steps)
    pca_same, pca_more = pca_accuracy(code_size), pca_accuracy(MAX_CODE + 1)
    summary = (
        f"code_size={code_size}, hidden={hidden}, lr={lr:g}, steps={steps}: test "
        f"reconstruction loss {result['test_loss']:.4f}; nearest-neighbour accuracy of the "
        f"code on the {len(digits()[3])} test digits"
    )
    if not result["accuracy"] >= TARGET:
        raise CheckFailed(
            f"{summary}:\n  expected: at least {TARGET:.0%} (PCA gets {pca_more:.1%} from "
            f"{MAX_CODE + 1} numbers, {pca_same:.1%} from {code_size})\n  got:      "
            f"{result['accuracy']:.1%}\nHint: " + _bottleneck_hint(code_size, hidden, lr, steps, result)
        )
    return (
        f"{summary}: {result['accuracy']:.1%}, above the target of {TARGET:.0%}. PCA gets "
        f"{pca_same:.1%} from {code_size} numbers and {pca_more:.1%} from {MAX_CODE + 1}: "
        f"the non-linear code keeps more of what tells digits apart."
    )


# --------------------------------------------------------------------------- subsampling


def reference_keep(counts: torch.Tensor, threshold: float) -> torch.Tensor:
    freq = counts.double() / counts.double().sum()
    return torch.sqrt(threshold / freq).clamp(max=1.0)


def _keep_mistakes(counts: torch.Tensor, t: float) -> list[tuple[torch.Tensor, str]]:
    c = counts.double()
    f = c / c.sum()
    return [
        (torch.sqrt(t / c).clamp(max=1.0), "use the frequency f = count / total count, not the raw count."),
        (torch.sqrt(t / f), "a probability is at most 1: clamp it, min(1, √(t/f)) (.clamp(max=1.0))."),
        ((t / f).clamp(max=1.0), "take the square root: √(t/f)."),
        (
            (1 - torch.sqrt(t / f)).clamp(min=0.0),
            "1 − √(t/f) is the probability of *dropping* the word; return the probability of keeping it.",
        ),
        (
            torch.sqrt(f / t).clamp(max=1.0),
            "the fraction is upside down: √(t/f), threshold over frequency, so frequent words get less.",
        ),
    ]


@register(
    "embeddings.keep_probability",
    chapter=CHAPTER,
    kind="formula",
    title="word2vec's subsampling: the probability of keeping each word",
)
def check_keep_probability(fn: Any) -> str:
    """Zipf-like counts of several vocabularies and thresholds."""
    gen = torch.Generator().manual_seed(21)
    cases = [
        (torch.tensor([1000.0, 10.0, 1.0]), 1e-2),
        (torch.tensor([50.0, 30.0, 20.0]), 1e-3),
        ((1e5 / torch.arange(1, 201).double()).floor().float(), 1e-3),
        ((torch.rand(50, generator=gen) * 500 + 1).round(), 1e-2),
    ]
    for counts, t in cases:
        label = f"keep_probability(counts of {len(counts)} words, threshold={t:g})"
        given = counts.clone()
        got = call(fn, given, t, label=label)
        unchanged(label, [given], [counts], ["counts"])
        expected = reference_keep(counts, t)
        got = tensor_answer(
            got,
            label,
            shape=tuple(counts.shape),
            expected=expected,
            hint="return one probability per word, a tensor like counts.",
        )
        if not same(got, expected, atol=ATOL):
            hint = known_mistake(got, _keep_mistakes(counts, t), atol=ATOL) or (
                "f = counts / counts.sum(), then torch.sqrt(threshold / f).clamp(max=1.0)."
            )
            raise mismatch(
                f"{label} gave other probabilities (counts {head(counts, 4, 0)}...).", head(expected), head(got), hint
            )
    return (
        "Matches min(1, √(t/f)) on 4 vocabularies: words rarer than the threshold are "
        "always kept, and the most frequent are kept least often."
    )


# --------------------------------------------------------------------------- skip-gram pairs


def reference_pairs(ids: torch.Tensor, reach: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (center, context) at most ``reach[center position]`` apart, both ways."""
    n = len(ids)
    centers, contexts = [torch.empty(0, dtype=torch.long)], [torch.empty(0, dtype=torch.long)]
    for d in range(1, min(int(reach.max()) if n else 0, n - 1) + 1):
        right, left = reach[:-d] >= d, reach[d:] >= d
        centers += [ids[:-d][right], ids[d:][left]]
        contexts += [ids[d:][right], ids[:-d][left]]
    return torch.cat(centers), torch.cat(contexts)


def _pair_mistakes(ids: torch.Tensor, reach: torch.Tensor) -> list[tuple[Any, str]]:
    n = len(ids)
    if n > 40:  # the small texts come first and show the mistake; this is O(n²)
        return []

    def pairs(
        keep: Any, *, wrap: bool = False, self_pairs: bool = False, right_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cs, xs = [], []
        for i in range(n):
            for j in range(n):
                d = abs(i - j)
                if wrap:
                    d = min(d, n - d)
                if (i == j and not self_pairs) or (right_only and j < i):
                    continue
                if keep(i, j, d):
                    cs.append(int(ids[i]))
                    xs.append(int(ids[j]))
        return torch.tensor(cs, dtype=torch.long), torch.tensor(xs, dtype=torch.long)

    r = reach.tolist()
    biggest = max(r) if r else 0
    return [
        (
            pairs(lambda i, j, d: d <= r[j]),
            "the window belongs to the center word: keep (center i, context j) when |i − j| ≤ "
            "reach[i], the reach of the center, not of the context.",
        ),
        (
            pairs(lambda i, j, d: d <= biggest),
            "every center has its own window: keep a pair only when the distance is at most "
            "reach[i] of that center, not the largest reach.",
        ),
        (
            pairs(lambda i, j, d: d < r[i]),
            "the window is one too narrow: a context exactly reach[i] places away counts.",
        ),
        (pairs(lambda i, j, d: d <= r[i], self_pairs=True), "a word is not its own context: start the distances at 1."),
        (
            pairs(lambda i, j, d: d <= r[i], right_only=True),
            "you kept only the contexts to the right; each center also pairs with the words before it.",
        ),
        (
            pairs(lambda i, j, d: d <= r[i], wrap=True),
            "the pairs wrap around the ends of the text (torch.roll does that); slice instead: "
            "ids[:-d] against ids[d:].",
        ),
    ]


def _pair_keys(pairs: tuple[torch.Tensor, torch.Tensor], base: int) -> torch.Tensor:
    """The pairs as sorted numbers center·base + context: equal keys, equal multisets."""
    centers, contexts = pairs
    return (centers.long() * base + contexts.long()).sort().values


def _show(pairs: tuple[torch.Tensor, torch.Tensor], n: int = 8) -> list[tuple[int, int]]:
    centers, contexts = pairs
    return sorted(zip(centers.tolist(), contexts.tolist(), strict=True))[:n]


@register(
    "embeddings.skipgram_pairs",
    chapter=CHAPTER,
    kind="build",
    title="Skip-gram pairs, vectorised, with a window per center word",
)
def check_skipgram_pairs(fn: Any) -> str:
    """Distinct and repeated ids, reaches of 1 to 5, texts of 1 to 2,000 words; the order
    of the pairs is free."""
    gen = torch.Generator().manual_seed(22)
    cases = [
        (torch.tensor([10, 11, 12, 13, 14]), torch.tensor([1, 1, 1, 1, 1])),
        (torch.tensor([10, 11, 12, 13, 14]), torch.tensor([2, 1, 1, 1, 2])),
        (torch.randperm(12, generator=gen) + 100, torch.randint(1, 4, (12,), generator=gen)),
        (torch.tensor([7, 3, 7, 3, 7, 3]), torch.tensor([3, 1, 2, 1, 1, 3])),
        (torch.tensor([5]), torch.tensor([2])),
        (torch.tensor([4, 9]), torch.tensor([5, 5])),
        (torch.randint(0, 50, (2000,), generator=gen), torch.randint(1, 6, (2000,), generator=gen)),
    ]
    for ids, reach in cases:
        shown = (
            f"tensor({ids.tolist()}), reach=tensor({reach.tolist()})"
            if len(ids) <= 12
            else f"{len(ids)} ids, reach of 1 to {int(reach.max())}"
        )
        label = f"skipgram_pairs({shown})"
        given = [ids.clone(), reach.clone()]
        got = call(fn, *given, label=label)
        unchanged(label, given, [ids, reach], ["ids", "reach"])
        expected = reference_pairs(ids, reach)
        centers, contexts = tensor_tuple(
            got, label, ["centers", "contexts"], hint="return two 1-d tensors of ids, (centers, contexts)."
        )
        if centers.shape != contexts.shape or centers.dim() != 1:
            raise CheckFailed(
                f"{label}: centers and contexts should be 1-d tensors of the same "
                f"length, got shapes {tuple(centers.shape)} and {tuple(contexts.shape)}."
            )
        if centers.is_floating_point() or contexts.is_floating_point():
            raise CheckFailed(f"{label}: return ids as integer tensors (torch.long), not floats.")
        base = int(ids.max()) + 1
        got_keys, want_keys = _pair_keys((centers, contexts), base), _pair_keys(expected, base)
        if not torch.equal(got_keys, want_keys):
            mistakes = [(_pair_keys(p, base), why) for p, why in _pair_mistakes(ids, reach)]
            hint = known_mistake(got_keys, mistakes) or (
                "for each distance d from 1 to reach.max(), pair ids[:-d] with ids[d:] where "
                "reach[:-d] >= d (context to the right), and ids[d:] with ids[:-d] where "
                "reach[d:] >= d (context to the left)."
            )
            raise mismatch(
                f"{label} gave {len(centers)} pairs, expected {len(expected[0])} (shown sorted, "
                f"as (center, context), first few).",
                _show(expected),
                _show((centers, contexts)),
                hint,
            )
    return (
        "Right pairs, as a multiset, for 7 texts: reaches that differ per center, repeated "
        "words, a one-word text, and 2,000 words."
    )


# --------------------------------------------------------------------------- one SGNS step


def _loss(
    v: torch.Tensor,
    u: torch.Tensor,
    c: torch.Tensor,
    o: torch.Tensor,
    n: torch.Tensor,
    reduce: str = "mean",
    negatives: bool = True,
    noise_table: str = "context",
) -> torch.Tensor:
    center = v[c]
    positive = F.logsigmoid((center * u[o]).sum(-1))
    noise = (u if noise_table == "context" else v)[n]
    negative = F.logsigmoid(-(noise * center[:, None]).sum(-1)).sum(-1)
    total = positive + (negative if negatives else 0)
    return -(total.mean() if reduce == "mean" else total.sum())


def reference_step(
    v: torch.Tensor, u: torch.Tensor, c: torch.Tensor, o: torch.Tensor, n: torch.Tensor, lr: float, **how: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        vv, uu = v.clone().requires_grad_(True), u.clone().requires_grad_(True)
        gv, gu = torch.autograd.grad(_loss(vv, uu, c, o, n, **how), (vv, uu))
    return v - lr * gv, u - lr * gu


def _dropped_repeats(
    v: torch.Tensor, u: torch.Tensor, c: torch.Tensor, o: torch.Tensor, n: torch.Tensor, lr: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """An update written with W[ids] = W[ids] - lr * grad: a repeated word keeps one change."""
    with torch.enable_grad():
        center, context = v[c].requires_grad_(True), u[o].requires_grad_(True)
        noise = u[n].requires_grad_(True)
        positive = F.logsigmoid((center * context).sum(-1))
        negative = F.logsigmoid(-(noise * center[:, None]).sum(-1)).sum(-1)
        gc, go, gn = torch.autograd.grad(-(positive + negative).mean(), (center, context, noise))
    new_v, new_u = v.clone(), u.clone()
    new_v[c] = v[c] - lr * gc
    new_u[o] = u[o] - lr * go
    new_u[n] = u[n] - lr * gn
    return new_v, new_u


def _step_mistakes(
    v: torch.Tensor, u: torch.Tensor, c: torch.Tensor, o: torch.Tensor, n: torch.Tensor, lr: float
) -> list[tuple[Any, str]]:
    new_v, new_u = reference_step(v, u, c, o, n, lr)
    return [
        (
            (new_v, u),
            "you updated the center table only; the context table learns too (the "
            "loss depends on it through u_o and the noise words' u).",
        ),
        (
            (v, new_u),
            "you updated the context table only; the center vectors v_c are the ones we keep, so they must learn.",
        ),
        ((new_u, new_v), "you returned (context, center); return (center, context)."),
        ((2 * v - new_v, 2 * u - new_u), "you stepped uphill: subtract lr × gradient."),
        (
            reference_step(v, u, c, o, n, lr, reduce="sum"),
            "you summed the loss over the batch; take the mean over the B pairs, as in the chapter's loss.",
        ),
        (
            reference_step(v, u, c, o, n, lr, negatives=False),
            "your step ignores the noise words: the loss has the term −Σ log σ(−u_k·v_c).",
        ),
        (
            reference_step(v, u, c, o, n, lr, noise_table="center"),
            "the noise words' vectors come from the context table u, like u_o.",
        ),
        (
            _dropped_repeats(v, u, c, o, n, lr),
            "a word that appears several times in the batch must get the sum of all its "
            "changes; W[ids] = W[ids] - ... keeps only one of them. Let autograd compute the "
            "gradient of the whole table (or use index_add_).",
        ),
    ]


@register(
    "embeddings.sgns_step",
    chapter=CHAPTER,
    kind="build",
    title="One gradient step of word2vec on the center and context tables",
)
def check_sgns_step(fn: Any) -> str:
    """Small tables, batches with repeated words, several learning rates; then 300 steps of
    the learner's update on a tiny corpus of two topics, which must separate them."""
    gen = torch.Generator().manual_seed(23)
    cases = [
        (6, 3, torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([[4], [5]]), 0.5),
        (
            12,
            5,
            torch.tensor([0, 3, 3, 7, 0, 11, 3, 5]),
            torch.tensor([1, 4, 1, 8, 1, 10, 2, 5]),
            torch.randint(0, 12, (8, 3), generator=gen),
            0.1,
        ),
        (
            30,
            8,
            torch.randint(0, 30, (64,), generator=gen),
            torch.randint(0, 30, (64,), generator=gen),
            torch.randint(0, 30, (64, 5), generator=gen),
            2.0,
        ),
    ]
    for vocab, dim, c, o, n, lr in cases:
        v = torch.randn(vocab, dim, generator=gen) * 0.5
        u = torch.randn(vocab, dim, generator=gen) * 0.5
        label = (
            f"sgns_step(center {tuple(v.shape)}, context {tuple(u.shape)}, centers "
            f"{tuple(c.shape)}, contexts {tuple(o.shape)}, noise {tuple(n.shape)}, lr={lr})"
        )
        given = [v.clone(), u.clone(), c.clone(), o.clone(), n.clone()]
        got = call(fn, *given, lr, label=label)
        unchanged(label, given, [v, u, c, o, n], ["center", "context", "centers", "contexts", "noise"])
        expected = reference_step(v, u, c, o, n, lr)
        new_v, new_u = tensor_tuple(
            got, label, ["center", "context"], hint="return the two updated tables, (center, context)."
        )
        new_v, new_u = new_v.detach(), new_u.detach()
        if not (same(new_v, expected[0], atol=ATOL) and same(new_u, expected[1], atol=ATOL)):
            hint = known_mistake((new_v, new_u), _step_mistakes(v, u, c, o, n, lr), atol=ATOL) or (
                "compute the mean SGNS loss of the batch from center[centers], "
                "context[contexts] and context[noise], take its gradient with respect to both "
                "tables, and return table - lr * gradient for each."
            )
            wrong = "center" if not same(new_v, expected[0], atol=ATOL) else "context"
            which = 0 if wrong == "center" else 1
            row = (
                int((((new_v, new_u)[which] - expected[which]).abs().sum(-1)).argmax())
                if ((new_v, new_u)[which].shape == expected[which].shape)
                else 0
            )
            raise mismatch(
                f"{label}: the updated {wrong} table is wrong (row {row} shown).",
                first_row(expected[which][row : row + 1]),
                first_row((new_v, new_u)[which][row : row + 1])
                if (new_v, new_u)[which].dim() == 2
                else (new_v, new_u)[which],
                hint,
            )
    before, after = _train_two_topics(fn)
    if not after > before + 0.3:
        raise CheckFailed(
            f"300 of your steps on a corpus of two topics should pull the words of a topic "
            f"together: the mean cosine within a topic minus across topics went from "
            f"{before:.2f} to {after:.2f}, expected a gain of more than 0.3."
        )
    return (
        f"Matches the reference step on 3 batches (repeated words included), and 300 of "
        f"your steps on a two-topic corpus raise the cosine gap between topics from "
        f"{before:.2f} to {after:.2f}."
    )


def _topic_gap(v: torch.Tensor) -> float:
    """Mean cosine within a topic (words 0-7, 8-15) minus mean cosine across the topics."""
    unit = F.normalize(v, dim=-1)
    cos = unit @ unit.T
    same_topic = torch.zeros(16, 16, dtype=torch.bool)
    same_topic[:8, :8] = same_topic[8:, 8:] = True
    off = ~torch.eye(16, dtype=torch.bool)
    return (cos[same_topic & off].mean() - cos[~same_topic].mean()).item()


def _train_two_topics(fn: Any) -> tuple[float, float]:
    """Words 0-7 only ever appear next to each other, and so do words 8-15."""
    gen = torch.Generator().manual_seed(24)
    v = (torch.rand(16, 8, generator=gen) - 0.5) / 8
    u = torch.zeros(16, 8)
    before = _topic_gap(v)
    for _ in range(300):
        topic = torch.randint(0, 2, (32,), generator=gen) * 8
        c = topic + torch.randint(0, 8, (32,), generator=gen)
        o = topic + torch.randint(0, 8, (32,), generator=gen)
        n = torch.randint(0, 16, (32, 4), generator=gen)
        got = call(fn, v, u, c, o, n, 0.5, label="sgns_step(...) in the training loop")
        v, u = (t.detach() for t in tensor_tuple(got, "sgns_step", ["center", "context"]))
    return before, _topic_gap(v)


# --------------------------------------------------------------------------- analogies


def reference_analogy(vectors: torch.Tensor, words: list[str], a: str, b: str, c: str, k: int = 1) -> list[str]:
    unit = F.normalize(vectors, dim=-1)
    ia, ib, ic = (words.index(w) for w in (a, b, c))
    sims = unit @ (unit[ib] - unit[ia] + unit[ic])
    sims[[ia, ib, ic]] = -float("inf")
    return [words[i] for i in sims.topk(k).indices.tolist()]


def _analogy_variants(
    vectors: torch.Tensor, words: list[str], a: str, b: str, c: str, k: int
) -> list[tuple[list[str], str]]:
    unit = F.normalize(vectors, dim=-1)
    ia, ib, ic = (words.index(w) for w in (a, b, c))

    def top(sims: torch.Tensor, exclude: list[int]) -> list[str]:
        sims = sims.clone()
        sims[exclude] = -float("inf")
        return [words[i] for i in sims.topk(k).indices.tolist()]

    return [
        (
            top(unit @ (unit[ib] - unit[ia] + unit[ic]), []),
            "leave the three query words out of the answers (set their scores to -inf).",
        ),
        (
            top(unit @ (unit[ia] - unit[ib] + unit[ic]), [ia, ib, ic]),
            "a is to b as c is to ?: the query is b - a + c, not a - b + c.",
        ),
        (
            top(vectors @ (vectors[ib] - vectors[ia] + vectors[ic]), [ia, ib, ic]),
            "normalise the vectors to length 1 first and rank by cosine similarity, not by raw dot products.",
        ),
        (
            top(unit @ (vectors[ib] - vectors[ia] + vectors[ic]), [ia, ib, ic]),
            "normalise the three query vectors before adding them: unit(b) - unit(a) + unit(c).",
        ),
        (
            top(vectors @ (unit[ib] - unit[ia] + unit[ic]), [ia, ib, ic]),
            "compare the query with the normalised vectors of the whole vocabulary, not the raw ones.",
        ),
    ]


@register(
    "embeddings.analogy",
    chapter=CHAPTER,
    kind="build",
    title="Solving analogies, query words excluded",
)
def check_analogy(fn: Any) -> str:
    """A planted king/queen example, then random vectors of very different lengths."""
    gen = torch.Generator().manual_seed(6)
    planted = ["king", "queen", "man", "woman", "prince", "apple", "boy"]
    base = torch.randn(len(planted), 6, generator=gen) * 0.2
    royal, female = torch.eye(6)[0], torch.eye(6)[1]
    for i, w in enumerate(planted):
        base[i] += royal * (w in ("king", "queen", "prince")) + female * (w in ("queen", "woman"))
        base[i] += torch.eye(6)[2] * (w in ("king", "man", "prince", "boy"))
    base *= torch.tensor([3.0, 0.5, 2.0, 1.0, 0.3, 1.5, 0.8])[:, None]  # lengths differ a lot
    cases = [(base, planted, ("man", "king", "woman"), 1)]
    words = [f"w{i}" for i in range(40)]
    vectors = torch.randn(40, 8, generator=gen) * (torch.rand(40, 1, generator=gen) * 10 + 0.1)
    for q, k in [((0, 1, 2), 3), ((5, 9, 14), 5), ((21, 3, 30), 1), ((7, 8, 39), 4)]:
        cases.append((vectors, words, (words[q[0]], words[q[1]], words[q[2]]), k))
    for vecs, vocab, (a, b, c), k in cases:
        label = f"analogy(vectors {tuple(vecs.shape)}, words, {a!r}, {b!r}, {c!r}, k={k})"
        got = call(fn, vecs.clone(), list(vocab), a, b, c, k, label=label)
        expected = reference_analogy(vecs, vocab, a, b, c, k)
        if isinstance(got, torch.Tensor) or (isinstance(got, list) and got and not isinstance(got[0], str)):
            raise mismatch(
                f"{label} should return a list of k words (strings), best first.",
                expected,
                got,
                "turn row indices into words with words[i].",
            )
        if not isinstance(got, list) or list(got) != expected:
            hint = known_mistake(got, _analogy_variants(vecs, vocab, a, b, c, k)) or (
                "rank every word by cosine similarity with unit(b) - unit(a) + unit(c)."
            )
            if isinstance(got, list) and len(got) != k:
                hint = f"return exactly k = {k} words."
            raise mismatch(f"{label} gave the wrong words.", expected, got, hint)
    return "Right answers on 5 analogies: king - man + woman = queen, and random vectors of many lengths."
