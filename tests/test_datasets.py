"""llmbook.datasets: splits, sliding windows and loaders over a token stream."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from llmbook.datasets import TokenWindows, make_loader, split_tokens

ROOT = Path(__file__).resolve().parents[1]


def test_sliding_windows_shift_by_one():
    tokens = torch.arange(20)
    ds = TokenWindows(tokens, context_length=4, stride=3)
    x, y = ds[0]
    assert x.tolist() == [0, 1, 2, 3] and y.tolist() == [1, 2, 3, 4]
    assert ds[1][0].tolist() == [3, 4, 5, 6]
    assert len(ds) == 6  # starts 0,3,...,15; the last target is token 19
    assert ds[len(ds) - 1][1].tolist()[-1] == 19
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(ValueError, match="too short"):
        TokenWindows(torch.arange(4), 4)


def test_stride_zero_or_negative_is_an_error_not_the_default():
    # stride=0 used to mean "no overlap" silently (0 is falsy); None is the way to ask for that.
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="stride is how many tokens") as err:
            TokenWindows(torch.arange(20), 4, stride=bad)
        assert "None" in str(err.value) and "context_length (4)" in str(err.value)
    with pytest.raises(ValueError, match="stride"):
        make_loader(torch.arange(20), 4, 2, stride=0)
    assert TokenWindows(torch.arange(20), 4).stride == TokenWindows(torch.arange(20), 4, None).stride == 4
    assert TokenWindows(torch.arange(20), np.int64(4), stride=np.int64(2)).stride == 2  # NumPy ints are ints
    with pytest.raises(ValueError, match="context_length must be a positive integer"):
        TokenWindows(torch.arange(20), 0)


def test_loader_is_reproducible():
    batches = [[x.tolist() for x, _ in make_loader(torch.arange(200), 8, 4, seed=s)] for s in (1, 1, 2)]
    assert batches[0] == batches[1] != batches[2]
    assert len(batches[0][0]) == 4 and len(batches[0][0][0]) == 8  # 4 windows of 8 tokens


def test_split_keeps_the_order_and_holds_out_the_tail():
    train, val = split_tokens(torch.arange(100), val_fraction=0.1)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_tokens(torch.arange(10), 1.0)


def test_the_datasets_are_imported_from_llmbook_datasets_only():
    moved = r"(TokenWindows|split_tokens|make_loader)"
    # an import, or attribute access on the module (prose such as "llmbook.data.X" is not code)
    pattern = re.compile(rf"from llmbook\.data import [^\n]*\b{moved}\b|(?<![\w.])data\.{moved}\b")
    callers = set()
    for folder in ("lib", "tests", "benchmarks", "tools", "chapters", "solutions"):
        for path in (ROOT / folder).rglob("*"):
            code = path.suffix in (".py", ".ipynb") and path.name != "test_datasets.py"
            if code and pattern.search(path.read_text(encoding="utf-8")):
                callers.add(str(path.relative_to(ROOT)))
    assert not callers, f"import these from llmbook.datasets: {sorted(callers)}"
    from llmbook import data

    assert not hasattr(data, "TokenWindows")  # one place for each thing

