"""The GPT model: embeddings, transformer blocks, final norm, tied output head (chapter 7).

Module names follow OpenAI's GPT-2 checkpoint (``wte``, ``wpe``, ``h``, ``ln_f``,
``attn``, ``mlp``, ``lm_head``) so that loading their weights is a short, explicit
mapping: ``llmbook.weights.load_hf_gpt2`` loads them (the model never imports its
loaders; they import it). Initialisation follows GPT-2: normal(0, 0.02)
everywhere, with the projections that write into the residual stream scaled down by
1/sqrt(2 * n_layer) so the stream's variance does not grow with depth.

The post-GPT-2 options of ``GPTConfig`` (chapter 13) swap parts in place: RMSNorm for
LayerNorm, rotary positions for ``wpe``, SwiGLU for the GELU block (``llmbook.layers``),
grouped-query attention (``llmbook.attention``). The default config builds the same modules
in the same order as before the options existed, so its initialisation draws the same
random numbers and its checkpoints are unchanged (tests/test_architecture.py pins this).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from llmbook.attention import CausalSelfAttention, KVCache
from llmbook.config import GPTConfig, count_parameters
from llmbook.layers import SwiGLU, make_norm, rotary_cos_sin

IGNORE_INDEX = -100  # targets with this value add nothing to the loss (padding, prompts)


class MLP(nn.Module):
    """The feed-forward block: widen 4x (``config.hidden_size``), GELU (GPT-2's tanh approximation), narrow back."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.hidden_size, bias=config.bias)
        self.c_proj = nn.Linear(config.hidden_size, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp: nn.Module = SwiGLU(config) if config.mlp == "swiglu" else MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        key_mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache=cache, layer=layer, key_mask=key_mask, rope=rope)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """A decoder-only transformer language model in GPT-2's layout."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        # Rotary positions act inside attention, so a rope model has no position table.
        self.wpe = nn.Embedding(config.n_positions, config.n_embd) if config.positions == "learned" else None
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = make_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        residual_std = 0.02 / math.sqrt(2 * config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Unique parameters (a tied matrix counts once); optionally without wte/wpe."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel() + (self.wpe.weight.numel() if self.wpe is not None else 0)
        return n

    def hidden_states(
        self,
        idx: torch.Tensor,
        cache: KVCache | None = None,
        key_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final hidden states (B, T, n_embd): the forward pass up to, not including, ``lm_head``.

        idx: (B, T) token ids. With a ``cache`` the tokens continue the cached ones.
        ``positions`` (B, T) overrides the position ids (generation uses it to skip left
        padding); they pick rows of ``wpe``, or, with rotary positions, the rotation angles.
        A classifier (chapter 9) puts its own head on these states.
        """
        if idx.dim() != 2:
            raise ValueError(f"idx must be a (batch, time) tensor of token ids, got shape {tuple(idx.shape)}")
        _, T = idx.shape
        past = cache.length if cache is not None else 0
        if cache is not None and cache.max_length is None:
            cache.max_length = self.config.n_positions  # room for the whole window, allocated once
        if past + T > self.config.n_positions:
            raise ValueError(
                f"sequence of {past + T} tokens is longer than the context window "
                f"(n_positions={self.config.n_positions}); crop the input to the last "
                f"{self.config.n_positions} tokens or use a model with a longer context"
            )
        if positions is None:
            positions = torch.arange(past, past + T, device=idx.device).unsqueeze(0)
        rope = None
        if self.wpe is not None:
            x = self.drop(self.wte(idx) + self.wpe(positions))  # (B, T, n_embd)
        else:
            x = self.drop(self.wte(idx))
            rope = rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta)  # 2 x (B, T, head_dim)
        for i, block in enumerate(self.h):
            x = block(x, cache=cache, layer=i, key_mask=key_mask, rope=rope)
        return self.ln_f(x)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        key_mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for every position, and the mean cross-entropy when targets are given.

        idx: (B, T) token ids. targets: (B, T) next-token ids, ``-100`` to ignore.
        ``cache``, ``key_mask`` and ``positions`` as in ``hidden_states``. ``last_only``
        computes logits for the last position only: generation needs nothing else, and the
        output head is the most expensive layer when the vocabulary is large.
        """
        if last_only and targets is not None:
            raise ValueError("last_only=True returns one position's logits; it cannot compute a loss")
        x = self.hidden_states(idx, cache=cache, key_mask=key_mask, positions=positions)
        if last_only:
            x = x[:, -1:, :]
        logits = self.lm_head(x)  # (B, T, vocab_size)
        loss = None
        if targets is not None:
            if targets.shape != idx.shape:
                raise ValueError(f"targets shape {tuple(targets.shape)} must match idx shape {tuple(idx.shape)}")
            loss = F.cross_entropy(
                logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX
            )
        return logits, loss

    @classmethod
    def from_preset(cls, name: str, **overrides: object) -> GPT:
        """A randomly initialised model of a named shape, e.g. ``GPT.from_preset("char-small")``."""
        return cls(GPTConfig.from_preset(name, **overrides))


class ParamCounts(NamedTuple):
    """Trainable and total parameters of a module (see ``count_trainable``)."""

    trainable: int
    total: int

    @property
    def fraction(self) -> float:
        return self.trainable / self.total


def count_trainable(model: nn.Module) -> ParamCounts:
    """How many parameters of ``model`` will learn (``requires_grad``), and how many it has.

    A tied weight (GPT-2's embedding and output head) counts once: ``parameters()`` yields
    a shared tensor once. Freezing (chapter 9) and LoRA (chapter 10) read their savings here.
    """
    params = list(model.parameters())
    return ParamCounts(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))


__all__ = ["GPT", "IGNORE_INDEX", "MLP", "Block", "ParamCounts", "count_parameters", "count_trainable"]
