"""llmbook.viz: attention maps with the right labels and values, and weights from a GPT."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

import llmbook
from llmbook.config import GPTConfig
from llmbook.viz import (
    collect_attention,
    plot_attention,
    plot_attention_grid,
    readable_token,
)


def test_readable_token_makes_whitespace_visible() -> None:
    assert readable_token(" ") == "␣"
    assert readable_token("\n") == "↵"
    assert readable_token(" teacher") == "␣teacher"
    assert readable_token("book") == "book"


def test_plot_attention_labels_axes_and_shows_the_weights() -> None:
    weights = torch.tensor([[1.0, 0.0, 0.0], [0.25, 0.75, 0.0], [0.2, 0.3, 0.5]])
    tokens = ["The", " cat", " sat"]
    ax = plot_attention(weights, tokens, title="one head")
    try:
        assert ax.get_title() == "one head"
        assert "key" in ax.get_xlabel() and "query" in ax.get_ylabel()
        assert [t.get_text() for t in ax.get_xticklabels()] == ["The", "␣cat", "␣sat"]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["The", "␣cat", "␣sat"]
        np.testing.assert_allclose(ax.images[0].get_array(), weights.numpy())
        # Small maps carry their numbers in the cells, row by row.
        cell_texts = [t.get_text() for t in ax.texts]
        assert cell_texts[:4] == ["1.00", "0.00", "0.00", "0.25"]
        assert len(ax.figure.axes) == 2  # the map and its colour bar
    finally:
        plt.close(ax.figure)


def test_plot_attention_draws_into_given_axes_and_checks_sizes() -> None:
    fig, ax = plt.subplots()
    try:
        out = plot_attention(np.eye(2), ["a", "b"], ax=ax, colorbar=False, annotate=False)
        assert out is ax and not ax.texts and len(fig.axes) == 1
        with pytest.raises(ValueError, match="one token per row"):
            plot_attention(np.eye(2), ["a", "b", "c"], ax=ax)
        with pytest.raises(ValueError, match="2-D"):
            plot_attention(np.ones((2, 2, 2)), ["a", "b"], ax=ax)
    finally:
        plt.close(fig)


def test_grid_has_one_panel_per_layer_and_head() -> None:
    weights = torch.softmax(torch.randn(2, 3, 4, 4), dim=-1)
    fig = plot_attention_grid(weights, list("abcd"), title="all heads")
    try:
        assert len(fig.axes) == 6
        titles = [ax.get_title() for ax in fig.axes]
        assert titles[0] == "layer 0, head 0" and titles[-1] == "layer 1, head 2"
        np.testing.assert_allclose(fig.axes[4].images[0].get_array(), weights[1, 1].numpy(), rtol=1e-6)
        assert "all heads" in [t.get_text() for t in fig.texts]  # the figure's title
    finally:
        plt.close(fig)


def test_collect_attention_returns_causal_rows_and_restores_the_model() -> None:
    torch.manual_seed(0)
    model = llmbook.GPT(GPTConfig(vocab_size=11, n_positions=8, n_embd=16, n_layer=2, n_head=4))
    model.train()
    idx = torch.randint(0, 11, (3, 6))
    maps = collect_attention(model, idx)
    assert maps.shape == (3, 2, 4, 6, 6)
    torch.testing.assert_close(maps.sum(-1), torch.ones(3, 2, 4, 6))
    assert torch.all(maps.triu(diagonal=1) == 0), "a token must not attend to the future"
    assert model.training and all(not b.attn.keep_weights for b in model.h)
    assert all(b.attn.last_weights is None for b in model.h)
    # The maps are the ones the model really uses: recompute block 0's by hand.
    block = model.h[0]
    with torch.no_grad():
        x = model.wte(idx) + model.wpe(torch.arange(6))
        q, k, _ = block.attn.c_attn(block.ln_1(x)).split(16, dim=2)
        q, k = (t.view(3, 6, 4, 4).transpose(1, 2) for t in (q, k))
        scores = (q @ k.transpose(-2, -1) / 2.0).masked_fill(~torch.ones(6, 6).tril().bool(), float("-inf"))
    torch.testing.assert_close(maps[:, 0], torch.softmax(scores, dim=-1))
    with pytest.raises(ValueError, match=r"ids\[None\]"):
        collect_attention(model, idx[0])


def test_grid_drops_unreadable_token_labels_for_long_sequences() -> None:
    tokens = list("The teacher taught the students.")
    weights = torch.softmax(torch.randn(1, 2, len(tokens), len(tokens)), dim=-1)
    fig = plot_attention_grid(weights, tokens)
    try:
        assert all(not ax.get_xticks().size for ax in fig.axes)
        assert "first token" in fig.axes[0].get_xlabel() and fig.axes[1].get_ylabel() == ""
    finally:
        plt.close(fig)
    short = plot_attention_grid(weights[..., :5, :5], tokens[:5])
    try:
        assert [t.get_text() for t in short.axes[0].get_xticklabels()] == ["T", "h", "e", "␣", "t"]
    finally:
        plt.close(short)
