"""The layers later models swapped in for GPT-2's: RMSNorm, rotary positions, SwiGLU (chapter 13).

GPT-2 (2019) normalises with LayerNorm, adds a learned vector per position, and widens its
feed-forward block with GELU. Llama and most models since keep the same decoder but change
these three parts. Each is one ``GPTConfig`` field (``norm``, ``positions``, ``mlp``) whose
default is GPT-2's choice, so a default model never touches this module.

The rotary convention is Hugging Face's Llama one ("rotate half"): dimension ``i`` of a head
is rotated together with dimension ``i + head_dim / 2``, not with its neighbour ``i + 1`` as
in the RoPE paper (Su et al., 2021). The two differ only by a fixed reordering of each head's
dimensions, applied alike to queries and keys, which leaves every query-key dot product
unchanged; matching Hugging Face's order means Llama weights load without permuting them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmbook.config import GPTConfig


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich, 2019): scale each vector to unit RMS, then by a learned gain.

    LayerNorm subtracts the mean, divides by the standard deviation and adds a learned bias;
    RMSNorm skips the mean and the bias. One reduction instead of two, no bias, and in
    practice no loss of quality. Computed in float32 whatever the input's dtype, as
    Hugging Face's Llama does, because a mean of squares overflows half precision easily.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def make_norm(config: GPTConfig) -> nn.Module:
    """The norm layer ``config.norm`` names: GPT-2's LayerNorm (with a bias, always) or RMSNorm."""
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, eps=config.layer_norm_epsilon)
    return nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The cosines and sines that rotate a head's dimensions at these positions.

    positions: (B, T) or (1, T) integer positions. Returns (cos, sin), each (B, T, head_dim)
    in float32. Pair ``i`` (dimensions ``i`` and ``i + head_dim / 2``) turns by the angle
    ``position * theta ** (-2i / head_dim)``: the first pairs turn fast and tell nearby
    positions apart, the last turn slowly and still differ thousands of tokens apart.
    Computed from the positions at every call (cheap next to attention), so nothing is
    stored in the model and the angles stay float32 under any ``model.to(dtype)``.
    """
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    angles = positions[..., None].float() * inv_freq  # (B, T, head_dim / 2)
    angles = torch.cat((angles, angles), dim=-1)  # (B, T, head_dim): both halves of a pair share an angle
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension: a quarter turn of every pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys x (B, heads, T, head_dim) by their positions' angles.

    cos and sin are (B, T, head_dim) from ``rotary_cos_sin``. Each pair (a, b) becomes
    (a cos - b sin, b cos + a sin): a 2-D rotation. Rotating a query at position m and a
    key at position n makes their dot product depend on m - n only, so attention sees
    relative positions, and no position vector is added to the residual stream.
    """
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # broadcast over heads
    return (x.float() * cos + rotate_half(x.float()) * sin).to(x.dtype)


class SwiGLU(nn.Module):
    """The gated feed-forward block (Shazeer, 2020) of Llama and most later models.

    Two projections of the input, a gate and a value; the gate goes through SiLU
    (x * sigmoid(x)) and multiplies the value element by element; a third projection
    narrows back. Three matrices instead of GELU's two, so the hidden width is ~8d/3
    instead of 4d to keep the parameter count (``GPTConfig.hidden_size``).

    ``c_fc`` holds the gate and the value projections stacked, (2 * hidden, n_embd), gate
    first: one matrix multiply instead of two, and GPT-2's module names (``c_fc``,
    ``c_proj``) keep working for LoRA and for the residual-scaled initialisation.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        hidden = config.hidden_size
        self.c_fc = nn.Linear(config.n_embd, 2 * hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.c_fc(x).chunk(2, dim=-1)  # each (B, T, hidden)
        return self.dropout(self.c_proj(F.silu(gate) * value))


__all__ = ["RMSNorm", "SwiGLU", "apply_rotary", "make_norm", "rotary_cos_sin", "rotate_half"]
