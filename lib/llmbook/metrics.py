"""Scoring generated answers against references, offline: ROUGE-L, token F1, exact match (chapter 10).

A free-form answer is rarely word-for-word the reference, so we count overlap instead:

* **ROUGE-L** (Lin, 2004) takes the longest common subsequence (LCS) of the two word
  sequences: words that appear in both *in the same order*, not necessarily adjacent.
  Precision is LCS / length of the answer, recall LCS / length of the reference, and
  the score is their harmonic mean (F1; Lin's F-measure with beta = 1).
* **Token F1** (as in SQuAD, Rajpurkar et al., 2016) ignores order: the overlap of the
  two bags of words.
* **Exact match** is 1 when the normalised texts are equal; useful for short answers.

All three compare *normalised* words: lower case, punctuation removed, whitespace
collapsed, so that "Paris." and "paris" agree. None needs a model or a download, so
they run anywhere; they measure overlap with one reference, not correctness, and a
right answer phrased differently scores low.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

_SPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower case, punctuation (any Unicode punctuation) removed, runs of whitespace made one space."""
    if not isinstance(text, str):
        raise TypeError(f"expected a str, got {type(text).__name__}")
    text = "".join(ch for ch in text.lower() if not unicodedata.category(ch).startswith("P"))
    return _SPACE.sub(" ", text).strip()


def words(text: str) -> list[str]:
    """The normalised words of ``text``."""
    return normalize(text).split()


def lcs_length(a: Sequence[object], b: Sequence[object]) -> int:
    """Length of the longest common subsequence of two sequences (dynamic programming, O(len a * len b))."""
    if len(b) > len(a):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def _f1(overlap: int, n_pred: int, n_ref: int) -> float:
    if n_pred == 0 and n_ref == 0:
        return 1.0  # two empty answers agree
    if overlap == 0:
        return 0.0
    precision, recall = overlap / n_pred, overlap / n_ref
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 between two texts, on normalised words; 0 (nothing shared) to 1 (same words, same order)."""
    p, r = words(prediction), words(reference)
    return _f1(lcs_length(p, r), len(p), len(r))


def token_f1(prediction: str, reference: str) -> float:
    """F1 of the bag-of-words overlap (each word counts as often as it occurs in both)."""
    p, r = words(prediction), words(reference)
    overlap = sum((Counter(p) & Counter(r)).values())
    return _f1(overlap, len(p), len(r))


def exact_match(prediction: str, reference: str) -> float:
    """1.0 if the normalised texts are equal, else 0.0."""
    return float(normalize(prediction) == normalize(reference))


def score_answers(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-L, token F1 and exact match over paired answers, as a dict."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references; they must pair up")
    if not predictions:
        raise ValueError("nothing to score: no predictions were given")
    n = len(predictions)
    pairs = list(zip(predictions, references, strict=True))
    return {
        "rouge_l": sum(rouge_l(p, r) for p, r in pairs) / n,
        "token_f1": sum(token_f1(p, r) for p, r in pairs) / n,
        "exact_match": sum(exact_match(p, r) for p, r in pairs) / n,
    }


__all__ = ["exact_match", "lcs_length", "normalize", "rouge_l", "score_answers", "token_f1", "words"]
