"""Checks for chapter 2, "Autoencoders and embeddings".

Five functions carry the chapter: the reconstruction loss an autoencoder minimises (the
mean squared error), cosine similarity between two sets of vectors, the (center,
context) pairs of skip-gram, the negative-sampling loss of a batch, and an analogy
solver that leaves the three query words out. Each check compares the learner's function
with a reference on several inputs and, when they differ, names the input, shows
expected and actual values, and recognises the usual mistakes (a sum for a mean, a
missing normalisation, a window that is one too wide, a wrong sign, the query words left
in) by recomputing the answer with that mistake.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from llmbook.exercises.compare import known_mistake, same, tensor_answer, unchanged
from llmbook.exercises.core import CheckFailed, call, mismatch, register

CHAPTER = "02"
ATOL = 1e-6  # losses and cosines are compared more tightly than the default


def _tensor_answer(fn: Any, args: tuple[Any, ...], label: str, expected: torch.Tensor,
                   variants: Callable[[], list[tuple[torch.Tensor, str]]], default_hint: str) -> Any:
    """Call, then compare a tensor answer with ``expected``; the shared core of three checks."""
    given = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    got = call(fn, *given, label=label)
    unchanged(label, given, args)
    if isinstance(got, (int, float)) and expected.dim() == 0:
        raise mismatch(f"{label} returned a Python number; return the tensor itself (no .item()), so "
                       f"that loss.backward() can compute gradients through it.", expected, got)
    got = tensor_answer(got, label, expected=expected)
    if not same(got, expected, atol=ATOL):
        hint = known_mistake(got, variants(), atol=ATOL) or default_hint
        if not torch.isfinite(got).all() and torch.isfinite(expected).all() and hint == default_hint:
            hint = ("your result is inf or nan. log(sigmoid(x)) overflows for large |x|: use "
                    "F.logsigmoid(x) (and check for divisions by zero).")
        if got.shape != expected.shape and hint == default_hint:
            hint = f"the result should have shape {tuple(expected.shape)}. " + hint
        raise mismatch(f"{label} gave the wrong result.", expected, got, hint)
    return got


# --------------------------------------------------------------------------- reconstruction loss


@register("embeddings.reconstruction_loss", chapter=CHAPTER, title="The reconstruction loss (MSE)")
def check_reconstruction_loss(fn: Any) -> str:
    """Batches of images and reconstructions; the value and its gradient must match."""
    gen = torch.Generator().manual_seed(2)
    for b, n in [(4, 64), (1, 64), (16, 10), (3, 1)]:
        x = torch.rand(b, n, generator=gen)
        x_hat = torch.rand(b, n, generator=gen)
        diff = x_hat - x
        label = f"reconstruction_loss(x {(b, n)}, x_hat {(b, n)})"

        def variants(diff: torch.Tensor = diff, b: int = b) -> list[tuple[torch.Tensor, str]]:
            return [
                ((diff ** 2).sum(), "you summed the squared errors; take their mean (.mean())."),
                ((diff ** 2).mean(1).sum(), ("you averaged within each image, then summed over the "
                                             "batch; take one mean over all numbers.")),
                ((diff ** 2).mean(1), "you returned one loss per image; return one number, the mean."),
                ((diff ** 2).mean().sqrt(), "that is the root of the mean squared error; drop the sqrt."),
                (diff.abs().mean(), "that is the mean absolute error; square the differences instead."),
                (diff.mean(), "square the differences before averaging, or they cancel out."),
                ((diff ** 2).sum() / b, "divide by the number of all values (x.numel()), not only the batch."),
            ]

        with torch.enable_grad():
            x_hat_req = x_hat.clone().requires_grad_(True)
            got = _tensor_answer(fn, (x, x_hat_req), label, (diff ** 2).mean(), variants,
                                 "compute ((x_hat - x) ** 2).mean().")
            if not got.requires_grad:
                raise CheckFailed(f"{label} returned a tensor with no gradient: compute it with "
                                  f"torch operations on x_hat (no .detach(), .numpy() or .item()).")
            (grad,) = torch.autograd.grad(got, x_hat_req)
        if not same(grad, 2 * diff / diff.numel(), atol=ATOL):
            raise CheckFailed(f"the gradient of {label} with respect to x_hat is not 2(x_hat - x)/N; "
                              f"compute the loss with ordinary torch operations.")
    return "Matches the mean squared error, and its gradient, on 4 batches of different sizes."


# --------------------------------------------------------------------------- cosine similarity


def reference_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


@register("embeddings.cosine_similarity", chapter=CHAPTER, title="Cosine similarity of two sets of vectors")
def check_cosine_similarity(fn: Any) -> str:
    """(n, d) and (m, d) rows of different lengths give an (n, m) matrix of cosines."""
    gen = torch.Generator().manual_seed(3)
    cases = [(torch.tensor([[3.0, 4.0]]), torch.tensor([[4.0, 3.0], [-3.0, -4.0], [0.0, 2.0]]))]
    for n, m, d in [(4, 5, 3), (3, 3, 8), (1, 6, 16), (7, 2, 5)]:
        scale = torch.rand(n, 1, generator=gen) * 5 + 0.2
        cases.append((torch.randn(n, d, generator=gen) * scale,
                      torch.randn(m, d, generator=gen) * (torch.rand(m, 1, generator=gen) * 5 + 0.2)))
    for a, b in cases:
        label = f"cosine_similarity(a {tuple(a.shape)}, b {tuple(b.shape)})"

        def variants(a: torch.Tensor = a, b: torch.Tensor = b) -> list[tuple[torch.Tensor, str]]:
            out = [
                (a @ b.T, "that is the plain dot product; divide by both vectors' lengths."),
                (F.normalize(a, dim=-1) @ b.T, "you normalised a's rows but not b's."),
                (a @ F.normalize(b, dim=-1).T, "you normalised b's rows but not a's."),
                (F.normalize(a, dim=0) @ F.normalize(b, dim=0).T,
                 "normalise each row (each vector, dim=-1), not each column."),
                (reference_cosine(b, a), "rows should follow a and columns b: the result is (n, m)."),
            ]
            if a.shape == b.shape:
                out.append((F.cosine_similarity(a, b, dim=-1),
                            ("F.cosine_similarity compares row i of a with row i of b only; "
                             "the task wants every row of a against every row of b.")))
            return out

        _tensor_answer(fn, (a, b), label, reference_cosine(a, b), variants,
                       "divide a @ b.T by the product of the row lengths (a.norm(dim=-1), b.norm(dim=-1)).")
    return "Matches cosine similarity on 5 cases (vectors of different lengths, 1 to 7 rows)."


# --------------------------------------------------------------------------- skip-gram pairs


def reference_pairs(tokens: list[Any], window: int) -> list[tuple[Any, Any]]:
    return [(tokens[i], tokens[j]) for i in range(len(tokens))
            for j in range(max(0, i - window), min(len(tokens), i + window + 1)) if j != i]


def _pair_variants(tokens: list[Any], window: int) -> list[tuple[list[tuple[Any, Any]], str]]:
    n = len(tokens)
    return [
        (reference_pairs(tokens, window) + [(t, t) for t in tokens],
         "a word is not its own context: skip j == i."),
        ([(tokens[i], tokens[j]) for i in range(n)
          for j in range(max(0, i - window), min(n, i + window + 1))],
         "a word is not its own context: skip j == i."),
        (reference_pairs(tokens, window - 1) if window > 1 else [],
         "the window is one too narrow: include the words exactly `window` places away."),
        (reference_pairs(tokens, window + 1), "the window is one too wide: at most `window` places away."),
        ([(tokens[i], tokens[j]) for i in range(n) for j in range(i + 1, min(n, i + window + 1))],
         "you kept only the words to the right; the context is on both sides."),
        ([(tokens[i], tokens[j]) for i in range(n) for j in range(i - window, i + window + 1)
          if j != i and j < n],
         "negative indices wrap around in Python (tokens[-1] is the last word): start at max(0, i - window)."),
    ]


@register("embeddings.skipgram_pairs", chapter=CHAPTER, title="Skip-gram (center, context) pairs")
def check_skipgram_pairs(fn: Any) -> str:
    """Sentences of 1 to 9 words, windows 1 to 4, repeated words; the order is free."""
    cat = ["the", "cat", "sat", "on", "the", "mat"]
    cases: list[tuple[list[Any], int]] = [
        (cat, 1), (cat, 2), (["a", "b", "c", "d", "e", "f", "g", "h", "i"], 3), (["alone"], 2),
        (["to", "be", "or", "not", "to", "be"], 4), ([5, 7, 5, 9], 1)]
    for tokens, window in cases:
        label = f"skipgram_pairs({tokens!r}, window={window})"
        got = call(fn, list(tokens), window, label=label)
        expected = reference_pairs(tokens, window)
        try:
            pairs = [tuple(p) for p in got]
        except TypeError:
            raise mismatch(f"{label} should return a list of (center, context) pairs.", expected[:6], got) from None
        if any(len(p) != 2 for p in pairs):
            raise mismatch(f"{label}: every pair should hold two words, (center, context).", expected[:6], got)
        if Counter(pairs) != Counter(expected):
            hint = known_mistake(Counter(pairs), [(Counter(variant), why) for variant, why
                                                  in _pair_variants(tokens, window)])
            missing = sorted((Counter(expected) - Counter(pairs)).elements(), key=str)[:4]
            extra = sorted((Counter(pairs) - Counter(expected)).elements(), key=str)[:4]
            raise CheckFailed(
                f"{label} returned {len(pairs)} pairs, expected {len(expected)}.\n"
                f"  missing (first few): {missing}\n  not expected (first few): {extra}"
                + (f"\nHint: {hint}" if hint else "")
            )
    return "Right pairs for 6 sentences and windows of 1 to 4, including a one-word sentence."


# --------------------------------------------------------------------------- SGNS loss


def reference_sgns(center: torch.Tensor, context: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    pos = F.logsigmoid((center * context).sum(-1))
    neg = F.logsigmoid(-(negatives * center[:, None]).sum(-1)).sum(-1)
    return -(pos + neg).mean()


def _sgns_variants(v: torch.Tensor, u: torch.Tensor, n: torch.Tensor) -> list[tuple[torch.Tensor, str]]:
    pos_score = (v * u).sum(-1)
    neg_score = (n * v[:, None]).sum(-1)
    pos, neg = F.logsigmoid(pos_score), F.logsigmoid(-neg_score)
    return [
        (-(pos + neg.sum(-1)).sum(), "you summed over the batch; return the mean over the B pairs."),
        ((pos + neg.sum(-1)).mean(), "you forgot the minus sign: the loss is -log σ(...) - Σ log σ(...)."),
        (-(pos + F.logsigmoid(neg_score).sum(-1)).mean(),
         "the noise words need σ of the negative score: log σ(-u_k · v_c)."),
        (-pos.mean(), "you left out the negative samples' term."),
        (-(pos + neg.mean(-1)).mean(), "sum the K negative terms of each pair; do not average them."),
        (-(torch.sigmoid(pos_score) + torch.sigmoid(-neg_score).sum(-1)).mean(),
         "take the log of the sigmoids: F.logsigmoid(x) is log σ(x), computed safely."),
        (-(pos.mean() + neg.mean()), "sum the K negative terms of each pair, then average over the batch."),
        (-(torch.log(torch.sigmoid(pos_score)) + torch.log(torch.sigmoid(-neg_score)).sum(-1)).mean(),
         ("for large scores σ(x) rounds to 0 and log(0) = -inf; use F.logsigmoid(x), which "
          "computes log σ(x) without that overflow.")),
    ]


@register("embeddings.sgns_loss", chapter=CHAPTER, title="The skip-gram negative-sampling loss")
def check_sgns_loss(fn: Any) -> str:
    """Random batches of 1 to 32 pairs with 1 to 10 negatives, including large scores."""
    gen = torch.Generator().manual_seed(4)
    for b, k, d, scale in [(4, 3, 5, 1.0), (1, 1, 2, 1.0), (32, 10, 16, 0.5), (6, 5, 8, 6.0)]:
        v, u = torch.randn(b, d, generator=gen) * scale, torch.randn(b, d, generator=gen) * scale
        n = torch.randn(b, k, d, generator=gen) * scale
        label = f"sgns_loss(center {(b, d)}, context {(b, d)}, negatives {(b, k, d)})"
        got = _tensor_answer(fn, (v, u, n), label, reference_sgns(v, u, n),
                             partial(_sgns_variants, v, u, n),
                             "compute -(log σ(u_o·v_c) + Σ_k log σ(-u_k·v_c)), averaged over the batch.")
        if got.dim() != 0:
            raise CheckFailed(f"{label} should return a single number (a 0-d tensor), got shape {tuple(got.shape)}.")
    return "Matches the SGNS loss on 4 batches (1 to 32 pairs, 1 to 10 negatives, scores up to ±100)."


# --------------------------------------------------------------------------- analogies


def reference_analogy(vectors: torch.Tensor, words: list[str], a: str, b: str, c: str, k: int = 1) -> list[str]:
    unit = F.normalize(vectors, dim=-1)
    ia, ib, ic = (words.index(w) for w in (a, b, c))
    sims = unit @ (unit[ib] - unit[ia] + unit[ic])
    sims[[ia, ib, ic]] = -float("inf")
    return [words[i] for i in sims.topk(k).indices.tolist()]


def _analogy_variants(vectors: torch.Tensor, words: list[str], a: str, b: str, c: str, k: int
                      ) -> list[tuple[list[str], str]]:
    unit = F.normalize(vectors, dim=-1)
    ia, ib, ic = (words.index(w) for w in (a, b, c))

    def top(sims: torch.Tensor, exclude: list[int]) -> list[str]:
        sims = sims.clone()
        sims[exclude] = -float("inf")
        return [words[i] for i in sims.topk(k).indices.tolist()]

    return [
        (top(unit @ (unit[ib] - unit[ia] + unit[ic]), []),
         "leave the three query words out of the answers (set their scores to -inf)."),
        (top(unit @ (unit[ia] - unit[ib] + unit[ic]), [ia, ib, ic]),
         "a is to b as c is to ?: the query is b - a + c, not a - b + c."),
        (top(vectors @ (vectors[ib] - vectors[ia] + vectors[ic]), [ia, ib, ic]),
         "normalise the vectors to length 1 first and rank by cosine similarity, not by raw dot products."),
        (top(unit @ (vectors[ib] - vectors[ia] + vectors[ic]), [ia, ib, ic]),
         "normalise the three query vectors before adding them: unit(b) - unit(a) + unit(c)."),
        (top(vectors @ (unit[ib] - unit[ia] + unit[ic]), [ia, ib, ic]),
         "compare the query with the normalised vectors of the whole vocabulary, not the raw ones."),
    ]


@register("embeddings.analogy", chapter=CHAPTER, title="Solving analogies, query words excluded")
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
            raise mismatch(f"{label} should return a list of k words (strings), best first.", expected, got,
                           "turn row indices into words with words[i].")
        if not isinstance(got, list) or list(got) != expected:
            hint = known_mistake(got, _analogy_variants(vecs, vocab, a, b, c, k)) or (
                "rank every word by cosine similarity with unit(b) - unit(a) + unit(c).")
            if isinstance(got, list) and len(got) != k:
                hint = f"return exactly k = {k} words."
            raise mismatch(f"{label} gave the wrong words.", expected, got, hint)
    return "Right answers on 5 analogies: king - man + woman = queen, and random vectors of many lengths."
