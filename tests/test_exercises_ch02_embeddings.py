"""Chapter 2's checks (``llmbook.exercises.checks.ch02_embeddings``): the table that
test_exercises_checks.py runs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHAPTER = "02"


def reconstruction_loss(x, x_hat):
    return ((x_hat - x) ** 2).mean()


def cosine_similarity(a, b):
    return (a @ b.T) / (a.norm(dim=-1)[:, None] * b.norm(dim=-1)[None, :])


def skipgram_pairs(tokens, window):
    return [(center, tokens[j]) for i, center in enumerate(tokens)
            for j in range(max(0, i - window), min(len(tokens), i + window + 1)) if j != i]


def sgns_loss(center, context, negatives):
    positive = F.logsigmoid((center * context).sum(-1))
    negative = F.logsigmoid(-(negatives @ center.unsqueeze(-1)).squeeze(-1)).sum(-1)
    return -(positive + negative).mean()


def analogy(vectors, words, a, b, c, k=1):
    unit = vectors / vectors.norm(dim=-1, keepdim=True)
    ia, ib, ic = words.index(a), words.index(b), words.index(c)
    scores = unit @ (unit[ib] - unit[ia] + unit[ic])
    scores[[ia, ib, ic]] = float("-inf")
    return [words[i] for i in scores.argsort(descending=True)[:k].tolist()]


CORRECT = {
    "embeddings.reconstruction_loss": [reconstruction_loss, lambda x, x_hat: F.mse_loss(x_hat, x)],
    "embeddings.cosine_similarity": [cosine_similarity,
                                     lambda a, b: F.cosine_similarity(a[:, None], b[None], dim=-1)],
    "embeddings.skipgram_pairs": [skipgram_pairs,
                                  lambda t, w: list(reversed(skipgram_pairs(t, w)))],  # any order
    "embeddings.sgns_loss": [sgns_loss],
    "embeddings.analogy": [analogy],
}


def _with_self(tokens, window):
    return [(c, tokens[j]) for i, c in enumerate(tokens)
            for j in range(max(0, i - window), min(len(tokens), i + window + 1))]


def _wraps(tokens, window):
    return [(c, tokens[j]) for i, c in enumerate(tokens)
            for j in range(i - window, i + window + 1) if j != i and j < len(tokens)]


def _sgns(pos_sign=1.0, neg_sign=-1.0, reduce="mean", negatives_term=True, log=True):
    def loss(v, u, n):
        act = F.logsigmoid if log else torch.sigmoid
        pos = act(pos_sign * (v * u).sum(-1))
        neg = act(neg_sign * (n * v[:, None]).sum(-1)).sum(-1) if negatives_term else 0
        total = pos + neg
        return -(total.mean() if reduce == "mean" else total.sum())
    return loss


def _log_of_sigmoid(v, u, n):
    return -(torch.log(torch.sigmoid((v * u).sum(-1)))
             + torch.log(torch.sigmoid(-(n * v[:, None]).sum(-1))).sum(-1)).mean()


def _analogy_no_exclude(vectors, words, a, b, c, k=1):
    unit = F.normalize(vectors, dim=-1)
    scores = unit @ (unit[words.index(b)] - unit[words.index(a)] + unit[words.index(c)])
    return [words[i] for i in scores.topk(k).indices.tolist()]


def _analogy_raw(vectors, words, a, b, c, k=1):
    ia, ib, ic = words.index(a), words.index(b), words.index(c)
    scores = vectors @ (vectors[ib] - vectors[ia] + vectors[ic])
    scores[[ia, ib, ic]] = float("-inf")
    return [words[i] for i in scores.topk(k).indices.tolist()]


MISTAKES = {
    "embeddings.reconstruction_loss": [
        (lambda x, y: ((y - x) ** 2).sum(), "summed the squared errors"),
        (lambda x, y: ((y - x) ** 2).mean(1), "one loss per image"),
        (lambda x, y: ((y - x) ** 2).mean().sqrt(), "drop the sqrt"),
        (lambda x, y: (y - x).abs().mean(), "mean absolute error"),
        (lambda x, y: ((y - x) ** 2).mean().item(), "Python number"),
        (lambda x, y: ((y - x) ** 2).mean().detach(), "no gradient"),
        (lambda x, y: ((y - x) ** 2).mean(1).sum(), "averaged within each image"),
    ],
    "embeddings.cosine_similarity": [
        (lambda a, b: a @ b.T, "plain dot product"),
        (lambda a, b: F.normalize(a, dim=-1) @ b.T, "normalised a's rows but not b's"),
        (lambda a, b: F.normalize(a, dim=0) @ F.normalize(b, dim=0).T, "normalise each row"),
        (lambda a, b: cosine_similarity(b, a), "rows should follow a"),
    ],
    "embeddings.skipgram_pairs": [
        (_with_self, "not its own context"),
        (lambda t, w: skipgram_pairs(t, w - 1), "one too narrow"),
        (lambda t, w: skipgram_pairs(t, w + 1), "one too wide"),
        (lambda t, w: [(t[i], t[j]) for i in range(len(t)) for j in range(i + 1, min(len(t), i + w + 1))],
         "only the words to the right"),
        (_wraps, "wrap around"),
        (lambda t, w: 42, "list of (center, context) pairs"),
    ],
    "embeddings.sgns_loss": [
        (_sgns(reduce="sum"), "summed over the batch"),
        (_sgns(neg_sign=1.0), "negative score"),
        (_sgns(negatives_term=False), "left out the negative samples"),
        (_sgns(log=False), "take the log"),
        (lambda v, u, n: -_sgns()(v, u, n), "minus sign"),
        (_log_of_sigmoid, "logsigmoid"),
    ],
    "embeddings.analogy": [
        (_analogy_no_exclude, "leave the three query words out"),
        (lambda v, w, a, b, c, k=1: analogy(v, w, b, a, c, k), "b - a + c"),
        (_analogy_raw, "normalise the vectors to length 1"),
        (lambda v, w, a, b, c, k=1: torch.tensor([w.index(x) for x in analogy(v, w, a, b, c, k)]),
         "list of k words"),
        (lambda v, w, a, b, c, k=1: analogy(v, w, a, b, c, k + 1), "exactly k"),
    ],
}
