"""Token streams as training examples: splits, sliding windows, loaders (chapter 1; built in chapter 3).

A language model learns from (input, target) pairs cut from one long stream of token
ids: the target is the input shifted by one token. ``split_tokens`` keeps a held-out
tail of the stream for validation, ``TokenWindows`` cuts the pairs, and ``make_loader``
batches them reproducibly. Where the text comes from is ``llmbook.data``'s job.
"""

from __future__ import annotations

import operator
from typing import SupportsIndex

import torch
from torch.utils.data import DataLoader, Dataset


def split_tokens(tokens: torch.Tensor, val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a 1-D token tensor into a leading train part and a trailing validation part."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    cut = int(len(tokens) * (1 - val_fraction))
    return tokens[:cut], tokens[cut:]


def _is_positive_int(value: object) -> bool:
    """An integer (Python, NumPy or a 0-d tensor, but not a bool) of at least 1."""
    if isinstance(value, bool) or not isinstance(value, SupportsIndex):
        return False
    try:
        return operator.index(value) >= 1
    except TypeError:  # a 0-d float tensor has __index__ but refuses it
        return False


class TokenWindows(Dataset):
    """Sliding windows over a token stream: input ``x = t[i:i+T]``, target ``y = t[i+1:i+T+1]``.

    ``stride`` is how far each window moves: ``stride == context_length`` (the default,
    ``None``) tiles the text with no overlap, a smaller stride gives overlapping windows
    (more, but correlated, examples), a larger one skips tokens between windows.
    """

    def __init__(self, tokens: torch.Tensor | list[int], context_length: int, stride: int | None = None) -> None:
        if not _is_positive_int(context_length):
            raise ValueError(f"context_length must be a positive integer (tokens per window), got {context_length!r}")
        if stride is not None and not _is_positive_int(stride):
            raise ValueError(
                f"stride is how many tokens each window starts after the previous one, so it must be a "
                f"positive integer: 1 for maximal overlap, context_length ({context_length}) for none, or "
                f"None for that default; got {stride!r}"
            )
        self.tokens = torch.as_tensor(tokens, dtype=torch.long)
        self.context_length = operator.index(context_length)
        self.stride = self.context_length if stride is None else operator.index(stride)
        if len(self.tokens) < context_length + 1:
            raise ValueError(
                f"{len(self.tokens)} tokens is too short for a window of {context_length} plus one target; "
                f"use more text or a shorter context_length"
            )
        self.n = (len(self.tokens) - context_length - 1) // self.stride + 1

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self.n <= i < self.n:
            raise IndexError(i)
        start = (i % self.n) * self.stride
        chunk = self.tokens[start : start + self.context_length + 1]
        return chunk[:-1], chunk[1:]


def make_loader(
    tokens: torch.Tensor | list[int],
    context_length: int,
    batch_size: int,
    stride: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = True,
) -> DataLoader:
    """A DataLoader of (x, y) batches over sliding windows, reproducible through ``seed``."""
    ds = TokenWindows(tokens, context_length, stride)
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, generator=g)
