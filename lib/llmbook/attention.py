"""Causal multi-head self-attention with a key/value cache (introduced in chapter 5).

One projection makes queries, keys and values for every head at once (GPT-2's
``c_attn``), the heads attend in parallel, and ``c_proj`` mixes them back together.
The fused kernel ``torch.nn.functional.scaled_dot_product_attention`` does the work by
default; ``attn_impl="explicit"`` spells out the masked softmax so chapters can look
at the attention weights and benchmarks can measure what fusion buys.

Two later-model options live here too (chapter 13). Rotary positions (``positions="rope"``)
rotate queries and keys by position before they meet. Grouped-query attention
(``n_kv_head < n_head``) makes fewer key/value heads than query heads: each key/value head
serves a group of ``n_head // n_kv_head`` query heads, and the KV cache stores only the
key/value heads, which is what the option is for.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmbook.config import GPTConfig
from llmbook.layers import apply_rotary

# PyTorch 2.5 taught the fused kernel grouped-query attention (enable_gqa); before it, the
# key/value heads are copied out to one per query head.
_SDPA_GQA = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 5)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grouped: bool, **kwargs: Any) -> torch.Tensor:
    """The fused kernel; ``grouped``: k and v have fewer heads than q, each serving a group."""
    if grouped:
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kwargs)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


class KVCache:
    """Keys and values of the tokens seen so far, one slot per layer.

    Generation appends one token at a time; without a cache every step recomputes the
    keys and values of the whole prefix, which is quadratic work for a linear output.

    Each layer's buffer is allocated once, at the first ``append``, with room for
    ``max_length`` positions (``GPT.forward`` sets it to the context window when it is
    None), and every later step writes into it in place, as litgpt and nanochat do:
    growing by concatenation would copy the whole cache at every step. ``keys`` and
    ``values`` are views of the filled part, (B, n_kv_head, length, head_dim) per layer
    (``n_kv_head`` is ``n_head`` unless the model uses grouped-query attention). Keys are
    stored after their rotation when the model uses rotary positions: a key's rotation
    depends on its own position only, so it never needs recomputing.
    """

    def __init__(self, n_layer: int, max_length: int | None = None) -> None:
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be a positive number of positions or None, got {max_length}")
        self.max_length = max_length
        self._k: list[torch.Tensor | None] = [None] * n_layer
        self._v: list[torch.Tensor | None] = [None] * n_layer
        self._filled = [0] * n_layer

    @property
    def length(self) -> int:
        """How many positions are cached (in layer 0, which a forward pass fills first)."""
        return self._filled[0]

    @property
    def keys(self) -> list[torch.Tensor | None]:
        return [None if k is None else k[:, :, :n] for k, n in zip(self._k, self._filled, strict=True)]

    @property
    def values(self) -> list[torch.Tensor | None]:
        return [None if v is None else v[:, :, :n] for v, n in zip(self._v, self._filled, strict=True)]

    def _reserve(self, layer: int, k: torch.Tensor, needed: int) -> None:
        buf = self._k[layer]
        if buf is not None and buf.shape[-2] >= needed:
            return
        if self.max_length is not None:
            if needed > self.max_length:
                raise ValueError(
                    f"the KV cache holds at most {self.max_length} positions; {needed} do not fit"
                )
            capacity = self.max_length
        else:  # no known limit: grow geometrically, so copies stay rare
            capacity = max(needed, 2 * buf.shape[-2] if buf is not None else needed)
        B, H, _, D = k.shape
        new_k = k.new_empty(B, H, capacity, D)
        new_v = k.new_empty(B, H, capacity, D)
        old_v = self._v[layer]
        if buf is not None and old_v is not None:
            n = self._filled[layer]
            new_k[:, :, :n] = buf[:, :, :n]
            new_v[:, :, :n] = old_v[:, :, :n]
        self._k[layer], self._v[layer] = new_k, new_v

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k`` and ``v`` (B, n_kv_head, T, head_dim) after the cached positions of ``layer``;
        return the keys and values of every position so far (views, no copy)."""
        start, T = self._filled[layer], k.shape[-2]
        buf = self._k[layer]
        if buf is not None and (buf.shape[:2] != k.shape[:2] or buf.dtype != k.dtype or buf.device != k.device):
            raise ValueError(
                f"this cache holds (batch, heads) {tuple(buf.shape[:2])} in {buf.dtype} on {buf.device}; "
                f"got {tuple(k.shape[:2])} in {k.dtype} on {k.device}: use a new KVCache per batch"
            )
        self._reserve(layer, k, start + T)
        self._k[layer][:, :, start : start + T] = k  # type: ignore[index]
        self._v[layer][:, :, start : start + T] = v  # type: ignore[index]
        self._filled[layer] = start + T
        return self._k[layer][:, :, : start + T], self._v[layer][:, :, : start + T]  # type: ignore[index]


def causal_mask(t_query: int, t_key: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (t_query, t_key) mask, True where a query may look.

    The queries are the last ``t_query`` positions of ``t_key``, so with a cache the new
    tokens may see every cached token and the new ones up to themselves.
    """
    offset = t_key - t_query
    q = torch.arange(t_query, device=device).unsqueeze(1) + offset
    k = torch.arange(t_key, device=device).unsqueeze(0)
    return k <= q


def explicit_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor,
    dropout_p: float = 0.0,
    training: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention written out: scores, mask, softmax, weighted sum. Returns (out, weights)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    dropped = F.dropout(weights, p=dropout_p, training=training)
    return dropped @ v, weights


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_kv_head = config.kv_heads
        self.head_dim = config.head_dim
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.attn_impl = config.attn_impl
        kv_dim = self.n_kv_head * self.head_dim  # n_embd unless grouped-query attention
        # One projection for queries, keys and values, stacked in that order.
        self.c_attn = nn.Linear(config.n_embd, config.n_embd + 2 * kv_dim, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        # The weights of the last forward pass, kept only when asked (for plots).
        self.keep_weights = False
        self.last_weights: torch.Tensor | None = None

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        key_mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``key_mask`` (B, T_key), True for real tokens, hides left padding in a batch.
        ``rope`` is the (cos, sin) pair of ``llmbook.layers.rotary_cos_sin`` for these tokens'
        positions, when the model uses rotary positions."""
        B, T, C = x.shape
        kv_dim = self.n_kv_head * self.head_dim
        q, k, v = self.c_attn(x).split([C, kv_dim, kv_dim], dim=2)
        # (B, T, heads * head_dim) -> (B, heads, T, head_dim)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k, v = (t.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2) for t in (k, v))
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if cache is not None:
            k, v = cache.append(layer, k, v)
        fused = self.attn_impl == "sdpa" and not self.keep_weights
        # Each key/value head serves a group of query heads. The fused kernel reads the shared
        # heads in place (enable_gqa); copying them out to n_head heads would read and write the
        # whole cache at every generated token, which is what grouped queries are meant to save.
        gqa = self.n_kv_head != self.n_head and fused and _SDPA_GQA
        if self.n_kv_head != self.n_head and not gqa:
            group = self.n_head // self.n_kv_head
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        t_key = k.shape[-2]
        dropout_p = self.dropout if self.training else 0.0

        if fused and key_mask is None:
            if T == t_key:
                y = _sdpa(q, k, v, gqa, dropout_p=dropout_p, is_causal=True)
            elif T == 1:  # one new token may see everything before it
                y = _sdpa(q, k, v, gqa, dropout_p=dropout_p)
            else:
                mask = causal_mask(T, t_key, x.device)
                y = _sdpa(q, k, v, gqa, attn_mask=mask, dropout_p=dropout_p)
        else:
            mask = causal_mask(T, t_key, x.device)
            if key_mask is not None:
                # Padding positions may not be looked at, but every query keeps itself
                # so that a row of pure padding never softmaxes over nothing.
                self_pos = torch.arange(t_key - T, t_key, device=x.device).unsqueeze(1)
                diagonal = torch.arange(t_key, device=x.device).unsqueeze(0) == self_pos
                mask = (mask & key_mask[:, None, None, :]) | diagonal
            if fused:
                y = _sdpa(q, k, v, gqa, attn_mask=mask, dropout_p=dropout_p)
            else:
                y, weights = explicit_attention(q, k, v, mask, dropout_p, self.training)
                if self.keep_weights:
                    self.last_weights = weights.detach()
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))
