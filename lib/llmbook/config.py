"""Model configuration and named presets (introduced in chapter 1, used by every chapter).

Field names follow GPT-2's own (``n_embd``, ``n_layer``, ``n_head``, ``n_positions``,
``vocab_size``) so that reading a Hugging Face ``config.json`` is a one-to-one mapping.
Parameter counts are computed from the shapes alone, so a reader can count GPT-3's
175 billion parameters on a laptop without allocating a single one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

ATTN_IMPLS = ("sdpa", "explicit")


@dataclass
class GPTConfig:
    """The shape of a GPT. Defaults are GPT-2 small (124M)."""

    vocab_size: int = 50257
    n_positions: int = 1024  # the context window, in tokens
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    dropout: float = 0.0
    bias: bool = True
    layer_norm_epsilon: float = 1e-5
    tie_word_embeddings: bool = True
    # "sdpa": PyTorch's fused scaled_dot_product_attention; "explicit": the textbook
    # masked softmax, slower but able to hand back the attention weights for plots.
    attn_impl: str = "sdpa"
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        for key in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{key} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}) so that "
                f"every head gets n_embd // n_head dimensions; change one of them."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.attn_impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {self.attn_impl!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GPTConfig:
        """A preset by name (see ``PRESETS``), with any field overridden."""
        if name not in PRESETS:
            known = ", ".join(sorted(PRESETS))
            raise KeyError(f"unknown preset {name!r}; known presets: {known}")
        return dataclasses.replace(PRESETS[name], **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown GPTConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


PRESETS: dict[str, GPTConfig] = {
    # OpenAI's GPT-2 family (Radford et al., 2019), shapes as in their released checkpoints.
    "gpt2": GPTConfig(n_embd=768, n_layer=12, n_head=12, name="gpt2"),
    "gpt2-medium": GPTConfig(n_embd=1024, n_layer=24, n_head=16, name="gpt2-medium"),
    "gpt2-large": GPTConfig(n_embd=1280, n_layer=36, n_head=20, name="gpt2-large"),
    "gpt2-xl": GPTConfig(n_embd=1600, n_layer=48, n_head=25, name="gpt2-xl"),
    # GPT-3 175B (Brown et al., 2020, Table 2.1): for counting, never for allocating.
    "gpt3-175b": GPTConfig(n_positions=2048, n_embd=12288, n_layer=96, n_head=96, name="gpt3-175b"),
    # Small models that train in minutes on a laptop CPU.
    "char-tiny": GPTConfig(
        vocab_size=65, n_positions=64, n_embd=64, n_layer=2, n_head=4, name="char-tiny"
    ),
    "char-small": GPTConfig(
        vocab_size=65, n_positions=128, n_embd=128, n_layer=4, n_head=4, name="char-small"
    ),
    "gpt2-mini": GPTConfig(n_positions=256, n_embd=256, n_layer=4, n_head=4, name="gpt2-mini"),
}

# Published sizes, for setting our counts beside them. GPT-2's model card rounds to
# 124M/355M/774M/1.5B; GPT-3's paper reports 175.0B.
PUBLISHED_PARAMETERS: dict[str, float] = {
    "gpt2": 124e6,
    "gpt2-medium": 355e6,
    "gpt2-large": 774e6,
    "gpt2-xl": 1.5e9,
    "gpt3-175b": 175.0e9,
}


def parameter_breakdown(config: GPTConfig) -> dict[str, int]:
    """Parameters per part of the model, from the shapes alone (nothing is allocated)."""
    d, v, t, n = config.n_embd, config.vocab_size, config.n_positions, config.n_layer
    b = 1 if config.bias else 0
    layer_norm = 2 * d  # weight and bias (GPT-2's layer norms always have a bias)
    attention = d * 3 * d + b * 3 * d + d * d + b * d
    mlp = d * 4 * d + b * 4 * d + 4 * d * d + b * d
    return {
        "token embeddings (wte)": v * d,
        "position embeddings (wpe)": t * d,
        "attention (all layers)": n * attention,
        "feed-forward (all layers)": n * mlp,
        "layer norms": n * 2 * layer_norm + layer_norm,
        "output head (lm_head)": 0 if config.tie_word_embeddings else v * d,
    }


def count_parameters(config: GPTConfig | str) -> int:
    """Total parameter count of a GPT with this shape, without building it.

    With tied embeddings (GPT-2's choice) the output head reuses the token embedding
    matrix, so it adds nothing; this is why GPT-2 small is 124,439,808 and not 163M.
    """
    if isinstance(config, str):
        config = GPTConfig.from_preset(config)
    return sum(parameter_breakdown(config).values())
