"""Plots that several chapters share: attention maps first (introduced in chapter 5).

An attention map is a square of numbers, one row per query token (the token that is
looking) and one column per key token (the token looked at); each row sums to 1.
``plot_attention`` draws one such map with the tokens written on both axes,
``plot_attention_grid`` draws every head of every layer at once, and
``collect_attention`` runs an ``llmbook.GPT`` and hands back the maps of all its heads.

Nothing here draws on import; matplotlib is imported inside the functions so that
``import llmbook.viz`` stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover - for type hints only
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from llmbook.model import GPT

# Characters that are invisible on an axis label, shown as visible stand-ins.
_VISIBLE = {" ": "␣", "\n": "↵", "\t": "⇥", "": "∅"}


def readable_token(token: str) -> str:
    """A token as it should appear on an axis: spaces and line breaks made visible.

    A character model's tokens are often a lone space, which would be a blank tick
    label; GPT-2's tokens carry a leading space (``' teacher'``), shown as ``␣teacher``.
    """
    if token in _VISIBLE:
        return _VISIBLE[token]
    return token.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")


def _as_matrix(weights: Any) -> Any:
    """A 2-D float array from a tensor or array-like of attention weights."""
    import numpy as np

    if isinstance(weights, torch.Tensor):
        weights = weights.detach().float().cpu().numpy()
    array = np.asarray(weights, dtype=float)
    if array.ndim != 2:
        raise ValueError(
            f"an attention map is 2-D (queries x keys), got shape {array.shape}; "
            f"pick one head first, e.g. weights[layer, head]"
        )
    return array


def plot_attention(
    weights: Any,
    tokens: Sequence[str],
    ax: Axes | None = None,
    title: str | None = None,
    query_tokens: Sequence[str] | None = None,
    annotate: bool | None = None,
    colorbar: bool = True,
    cmap: str = "Blues",
    vmax: float | None = 1.0,
    fontsize: float | None = None,
) -> Axes:
    """Draw one attention map as a heatmap with the tokens on both axes; return the axes.

    ``weights`` is (T_query, T_key): row i holds how much query token i looks at each
    key token. ``tokens`` labels the keys (x axis) and, unless ``query_tokens`` is
    given, the queries too (y axis). Short maps get their numbers written in the cells
    (``annotate=None`` decides by size). ``vmax=1.0`` keeps colours comparable across
    maps; pass ``None`` to stretch the colours to this map's largest weight.
    """
    import matplotlib.pyplot as plt

    matrix = _as_matrix(weights)
    n_query, n_key = matrix.shape
    query_tokens = tokens if query_tokens is None else query_tokens
    if len(tokens) != n_key or len(query_tokens) != n_query:
        raise ValueError(
            f"weights are {n_query} x {n_key} but there are {len(query_tokens)} query and "
            f"{len(tokens)} key tokens; give one token per row and per column"
        )
    if ax is None:
        side = min(0.45 * max(n_query, n_key) + 1.5, 12)
        _, ax = plt.subplots(figsize=(side + (1.2 if colorbar else 0), side))
    image = ax.imshow(matrix, cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto", interpolation="nearest")
    if fontsize is None:
        fontsize = 9 if max(n_query, n_key) <= 20 else 7 if max(n_query, n_key) <= 50 else 5
    ax.set_xticks(range(n_key), [readable_token(t) for t in tokens], rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n_query), [readable_token(t) for t in query_tokens], fontsize=fontsize)
    ax.set_xlabel("key: the token looked at")
    ax.set_ylabel("query: the token looking")
    if title is not None:
        ax.set_title(title)
    if annotate is None:
        annotate = max(n_query, n_key) <= 12
    if annotate:
        top = vmax if vmax is not None else max(float(matrix.max()), 1e-12)
        for i in range(n_query):
            for j in range(n_key):
                value = matrix[i, j]
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=fontsize - 1,
                        color="white" if value > 0.6 * top else "black")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="attention weight")
    return ax


def plot_attention_grid(
    weights: Any,
    tokens: Sequence[str],
    title: str | None = None,
    panel_size: float = 2.6,
    vmax: float | None = 1.0,
    max_labels: int = 24,
) -> Figure:
    """Every head of every layer: a grid of attention maps, one row per layer.

    ``weights`` is (n_layer, n_head, T, T), e.g. ``collect_attention(model, ids)[0]``.
    Token labels are written on the outer panels only, and only for sequences of at
    most ``max_labels`` tokens; longer ones would be unreadable at this size, so their
    axes just run from the first token to the last (use ``plot_attention`` to read one
    head closely).
    """
    import matplotlib.pyplot as plt

    if isinstance(weights, torch.Tensor):
        weights = weights.detach().float().cpu()
    n_layer, n_head = len(weights), len(weights[0])
    fig, axes = plt.subplots(
        n_layer, n_head, figsize=(panel_size * n_head + 1.0, panel_size * n_layer + 0.8),
        squeeze=False, sharex=True, sharey=True,
    )
    labelled = len(tokens) <= max_labels
    for layer in range(n_layer):
        for head in range(n_head):
            ax = axes[layer][head]
            plot_attention(weights[layer][head], tokens, ax=ax, colorbar=False, annotate=False,
                           vmax=vmax, fontsize=6, title=f"layer {layer}, head {head}")
            ax.title.set_fontsize(9)
            if not labelled:
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_xlabel("key: first token → last")
                ax.set_ylabel("query: first token → last")
            if layer != n_layer - 1:
                ax.set_xlabel("")
                ax.tick_params(axis="x", labelbottom=False)
            if head != 0:
                ax.set_ylabel("")
                ax.tick_params(axis="y", labelleft=False)
    if title is not None:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


@torch.no_grad()
def collect_attention(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The attention weights of every head of every layer for the token ids ``idx``.

    ``idx`` is (B, T); the result is (B, n_layer, n_head, T, T). The fused kernel never
    forms the weights, so each block's attention is asked to keep them
    (``keep_weights``, which switches it to the explicit masked softmax) for this one
    forward pass; the model's flags and train/eval mode are restored afterwards.
    """
    if idx.dim() == 1:
        raise ValueError("idx must be (batch, time); for one sentence pass ids[None]")
    was_training = model.training
    from llmbook.attention import CausalSelfAttention  # import late: viz stays light

    attentions = [m for m in model.modules() if isinstance(m, CausalSelfAttention)]  # layer by layer
    kept = [a.keep_weights for a in attentions]
    try:
        model.eval()
        for a in attentions:
            a.keep_weights = True
            a.last_weights = None
        model(idx)
        maps = [a.last_weights for a in attentions if a.last_weights is not None]
    finally:
        for a, flag in zip(attentions, kept, strict=True):
            a.keep_weights = flag
            if not flag:
                a.last_weights = None
        model.train(was_training)
    return torch.stack(maps, dim=1)


__all__ = ["collect_attention", "plot_attention", "plot_attention_grid", "readable_token"]
