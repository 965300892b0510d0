"""Word embeddings: word2vec's skip-gram with negative sampling, and analogies (chapter 2).

Skip-gram (Mikolov et al., 2013, "Distributed representations of words and phrases and
their compositionality") learns a vector for every word by asking it to tell the words
that really occur near it apart from random words. This module holds the pieces the
chapter builds: splitting text into words, a frequency-capped ``Vocabulary``, the
subsampling of frequent words, (center, context) pairs from a sliding window, the
negative-sampling loss and a fast batched trainer, and the analogy test ("man is to king
as woman is to ?") with which Mikolov et al. measured what the vectors learned.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

_WORD = re.compile(r"[a-z]+")


def words_of(text: str) -> list[str]:
    """Lower-cased runs of letters: "Don't stop!" gives ["don", "t", "stop"].

    Deliberately simple: word2vec needs whole words, and punctuation, digits and case carry
    little that a word vector should learn on a small corpus.
    """
    return _WORD.findall(text.lower())


class Vocabulary:
    """Words by falling frequency, with their counts: ``vocab["king"]`` is king's row id."""

    def __init__(self, words: Sequence[str], counts: Sequence[int]) -> None:
        if len(words) != len(counts) or not words:
            raise ValueError("give one count per word, and at least one word")
        self.words = list(words)
        self.counts = torch.as_tensor(list(counts), dtype=torch.long)
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, tokens: Iterable[str], max_size: int | None = None, min_count: int = 1) -> Vocabulary:
        """The ``max_size`` most frequent tokens that occur at least ``min_count`` times."""
        common = [(w, c) for w, c in Counter(tokens).most_common(max_size) if c >= min_count]
        if not common:
            raise ValueError("no token occurs often enough: lower min_count or give more text")
        return cls([w for w, _ in common], [c for _, c in common])

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return word in self.index

    def __getitem__(self, word: str) -> int:
        if word not in self.index:
            raise KeyError(f"{word!r} is not in the vocabulary of {len(self)} words (check `word in vocab` first)")
        return self.index[word]

    def encode(self, tokens: Iterable[str]) -> torch.Tensor:
        """Row ids of the tokens, leaving out the ones not in the vocabulary."""
        return torch.tensor([self.index[t] for t in tokens if t in self.index], dtype=torch.long)


def keep_probability(counts: torch.Tensor, threshold: float = 1e-3) -> torch.Tensor:
    """Mikolov et al.'s subsampling: a word of frequency f is kept with probability √(t/f).

    "the" carries little about its neighbours and is very frequent; dropping most of its
    occurrences makes training faster and lets rarer words' contexts count for more.
    """
    freq = counts.double() / counts.sum()
    return torch.sqrt(threshold / freq).clamp(max=1.0).float()


def subsample(ids: torch.Tensor, counts: torch.Tensor, threshold: float = 1e-3,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """A random subsequence of ``ids``, each kept with ``keep_probability`` of its word."""
    keep = keep_probability(counts, threshold)[ids]
    return ids[torch.rand(len(ids), generator=generator) < keep]


def skipgram_pairs(ids: torch.Tensor, window: int, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(centers, contexts): every pair of positions at most ``window`` apart, both ways.

    With a ``generator``, each center draws its own window size from 1..window as in
    word2vec, which weights near neighbours more than far ones. The pairs are grouped by
    distance, not by position; shuffle them before training.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    ids = torch.as_tensor(ids, dtype=torch.long)
    n = len(ids)
    reach = (torch.randint(1, window + 1, (n,), generator=generator) if generator is not None
             else torch.full((n,), window))
    centers, contexts = [], []
    for d in range(1, min(window, n - 1) + 1):
        right = reach[:-d] >= d   # center i, context i + d
        left = reach[d:] >= d     # center i + d, context i
        centers += [ids[:-d][right], ids[d:][left]]
        contexts += [ids[d:][right], ids[:-d][left]]
    if not centers:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return torch.cat(centers), torch.cat(contexts)


class NegativeSampler:
    """Draws "noise" words with probability ∝ count^0.75, as word2vec does.

    The power 0.75 flattens the unigram distribution, so rare words are drawn as negatives
    more often than their frequency alone would give. Sampling indexes a precomputed table,
    which is much faster than ``torch.multinomial`` for millions of draws.
    """

    def __init__(self, counts: torch.Tensor, power: float = 0.75, table_size: int = 1_000_000) -> None:
        weights = counts.double() ** power
        repeats = torch.round(weights / weights.sum() * table_size).long().clamp(min=1)
        self.table = torch.repeat_interleave(torch.arange(len(counts)), repeats)

    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
        return self.table[torch.randint(len(self.table), shape, generator=generator)]


def sgns_loss(center: torch.Tensor, context: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -log σ(u_o·v_c) - Σ_k log σ(-u_k·v_c).

    ``center`` (B, d) holds the center words' input vectors v_c, ``context`` (B, d) the
    true context words' output vectors u_o, and ``negatives`` (B, K, d) the output vectors
    of K noise words per pair. Small when true pairs score high and noise pairs low.
    """
    if center.shape != context.shape or negatives.dim() != 3 or negatives.shape[::2] != center.shape:
        raise ValueError(f"expected center and context (B, d) and negatives (B, K, d), got "
                         f"{tuple(center.shape)}, {tuple(context.shape)}, {tuple(negatives.shape)}")
    positive = F.logsigmoid((center * context).sum(-1))
    negative = F.logsigmoid(-(negatives * center.unsqueeze(1)).sum(-1)).sum(-1)
    return -(positive + negative).mean()


class SkipGram(nn.Module):
    """Two lookup tables: ``center`` (the word vectors we keep) and ``context``."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.center = nn.Embedding(vocab_size, dim)
        self.context = nn.Embedding(vocab_size, dim)
        nn.init.uniform_(self.center.weight, -0.5 / dim, 0.5 / dim)  # word2vec's initialisation
        nn.init.zeros_(self.context.weight)

    def forward(self, centers: torch.Tensor, contexts: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """The SGNS loss of a batch of (center, context) ids and (B, K) noise ids."""
        return sgns_loss(self.center(centers), self.context(contexts), self.context(negatives))

    def vectors(self) -> torch.Tensor:
        """The learned word vectors (one row per word), detached, on the CPU."""
        return self.center.weight.detach().cpu().clone()


def train_skipgram(
    model: SkipGram, ids: torch.Tensor, counts: torch.Tensor, *, epochs: int = 3, window: int = 3,
    negatives: int = 5, batch_size: int = 4096, lr: float = 0.05, threshold: float = 1e-3,
    seed: int = 0, progress: bool = True,
) -> list[float]:
    """Train with plain SGD, the learning rate falling linearly to zero; returns the losses.

    Each epoch draws a fresh subsample and fresh window sizes, so the model sees slightly
    different pairs every time. ``lr`` is per pair, as in word2vec: the batch's mean loss
    is stepped with ``lr * batch_size``.
    """
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    sampler = NegativeSampler(counts)
    device = model.center.weight.device
    optimizer = torch.optim.SGD(model.parameters(), lr=lr * batch_size)
    expected = keep_probability(counts, threshold)[ids].sum().item() * (window + 1)
    total = epochs * math.ceil(expected / batch_size)
    losses: list[float] = []
    bar = tqdm(total=total, desc="skip-gram", disable=not progress, unit="batch")
    for _ in range(epochs):
        centers, contexts = skipgram_pairs(subsample(ids, counts, threshold, gen), window, gen)
        order = torch.randperm(len(centers), generator=gen)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            noise = sampler.sample((len(batch), negatives), gen)
            for group in optimizer.param_groups:
                group["lr"] = lr * batch_size * max(1e-4, 1 - len(losses) / total)
            loss = model(centers[batch].to(device), contexts[batch].to(device), noise.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                bar.close()
                raise RuntimeError(f"the loss became {losses[-1]} after {len(losses)} batches: the "
                                   f"learning rate is too high for this batch size; lower lr")
            bar.update()
            if len(losses) % 50 == 0:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.3f}")
    bar.close()
    return losses


# --------------------------------------------------------------------------- analogies


def load_analogies(path: str | Path | None = None) -> dict[str, list[tuple[str, str, str, str]]]:
    """Mikolov et al.'s analogy questions by section, lower-cased: a b c d means b - a + c ≈ d."""
    if path is None:
        from llmbook.data import data_path
        path = data_path("eval/word_analogy/questions-words.txt")
    sections: dict[str, list[tuple[str, str, str, str]]] = {}
    current = None
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith(":"):
            current = sections.setdefault(line[1:].strip(), [])
        elif line.strip():
            words = line.lower().split()
            if current is None or len(words) != 4:
                raise ValueError(f"{path}: expected ': section' headers and lines of four words, got {line!r}")
            current.append(tuple(words))  # type: ignore[arg-type]
    return sections


def unit_rows(vectors: torch.Tensor) -> torch.Tensor:
    """Every row scaled to length 1, so that dot products are cosine similarities."""
    return F.normalize(vectors.float(), dim=-1)


def _ids(vocab: Vocabulary, words: Iterable[str]) -> list[int]:
    return [vocab[w] for w in words]


def nearest(vectors: torch.Tensor, vocab: Vocabulary, query: str | torch.Tensor, k: int = 10,
            exclude: Iterable[str] = ()) -> list[tuple[str, float]]:
    """The k words most cosine-similar to a word (itself excluded) or to a vector."""
    unit = unit_rows(vectors)
    exclude = list(exclude) + ([query] if isinstance(query, str) else [])
    q = unit[vocab[query]] if isinstance(query, str) else F.normalize(query.float(), dim=-1)
    sims = unit @ q
    sims[_ids(vocab, exclude)] = -math.inf
    top = sims.topk(min(k, len(vocab) - len(set(exclude))))
    return [(vocab.words[i], round(s, 4)) for i, s in zip(top.indices.tolist(), top.values.tolist(), strict=True)]


def analogy(vectors: torch.Tensor, vocab: Vocabulary, a: str, b: str, c: str, k: int = 10
            ) -> list[tuple[str, float]]:
    """"a is to b as c is to ?": the words nearest b - a + c (unit vectors), a, b, c excluded."""
    unit = unit_rows(vectors)
    return nearest(unit, vocab, unit[vocab[b]] - unit[vocab[a]] + unit[vocab[c]], k, exclude=(a, b, c))


def analogy_rank(vectors: torch.Tensor, vocab: Vocabulary, a: str, b: str, c: str, target: str) -> int:
    """Where ``target`` lands (1 = first) among the answers to a : b :: c : ?."""
    return [w for w, _ in analogy(vectors, vocab, a, b, c, k=len(vocab))].index(target) + 1


@dataclass
class AnalogyScore:
    """One section's results: how many questions, how many answerable, how many right."""

    questions: int
    covered: int
    top1: int
    topk: int

    @property
    def coverage(self) -> float:
        return self.covered / self.questions if self.questions else 0.0

    def accuracy(self, top: int = 1) -> float:
        """Share of the covered questions answered in the first 1 (or k) words."""
        return (self.top1 if top == 1 else self.topk) / self.covered if self.covered else 0.0

    def __add__(self, other: AnalogyScore) -> AnalogyScore:
        return AnalogyScore(*(x + y for x, y in zip(vars(self).values(), vars(other).values(), strict=True)))


def evaluate_analogies(vectors: torch.Tensor, vocab: Vocabulary,
                       sections: dict[str, list[tuple[str, str, str, str]]], k: int = 5,
                       method: str = "add", chunk: int = 2048) -> dict[str, AnalogyScore]:
    """Score every section on the questions whose four words are all in the vocabulary.

    ``method="add"`` answers with the nearest words to b - a + c (3CosAdd); ``"nearest_c"``
    is a baseline that ignores a and b and answers with c's nearest neighbours. The three
    query words are never allowed as answers.
    """
    if method not in ("add", "nearest_c"):
        raise ValueError(f"method must be 'add' or 'nearest_c', got {method!r}")
    unit = unit_rows(vectors)
    scores = {}
    for name, questions in sections.items():
        ids = torch.tensor([_ids(vocab, q) for q in questions if all(w in vocab for w in q)],
                           dtype=torch.long).reshape(-1, 4)
        top1 = topk = 0
        for part in ids.split(chunk):
            a, b, c, d = part.unbind(1)
            query = unit[b] - unit[a] + unit[c] if method == "add" else unit[c]
            sims = query @ unit.T
            rows = torch.arange(len(part))
            for col in (a, b, c):
                sims[rows, col] = -math.inf
            best = sims.topk(k, dim=1).indices
            top1 += int((best[:, 0] == d).sum())
            topk += int((best == d[:, None]).any(1).sum())
        scores[name] = AnalogyScore(len(questions), len(ids), top1, topk)
    return scores
