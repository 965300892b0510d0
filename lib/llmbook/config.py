"""Model configuration and named presets (introduced in chapter 1, used by every chapter).

Field names follow GPT-2's own (``n_embd``, ``n_layer``, ``n_head``, ``n_positions``,
``vocab_size``) so that reading a Hugging Face ``config.json`` is a one-to-one mapping.
Parameter counts are computed from the shapes alone, so a reader can count GPT-3's
175 billion parameters on a laptop without allocating a single one.

The architecture choices later models made differently (chapter 13: RMSNorm, rotary
positions, SwiGLU, grouped-query attention, no biases, untied embeddings) are fields too,
each defaulting to GPT-2's choice, so a config that does not name them is GPT-2 exactly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

ATTN_IMPLS = ("sdpa", "explicit")
NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "rope")
MLPS = ("gelu", "swiglu")
# The post-GPT-2 options and their GPT-2 values. ``to_dict`` leaves out those still at these
# values, so a GPT-2 config (and the checkpoint header that stores it) reads as it always did.
ARCHITECTURE_DEFAULTS: dict[str, Any] = {
    "norm": "layernorm", "positions": "learned", "rope_theta": 10000.0, "mlp": "gelu",
    "intermediate_size": None, "n_kv_head": None,
}


@dataclass
class GPTConfig:
    """The shape of a GPT. Defaults are GPT-2 small (124M).

    Architecture options, each GPT-2's choice by default (Llama's in brackets):

    - ``norm``: ``"layernorm"`` or ``"rmsnorm"`` [rmsnorm]; ``layer_norm_epsilon`` is either's eps.
    - ``positions``: ``"learned"`` (a ``wpe`` vector added per position) or ``"rope"`` (queries
      and keys rotated by position, no ``wpe``) [rope]; ``rope_theta`` sets the slowest rotation.
    - ``mlp``: ``"gelu"`` or ``"swiglu"`` [swiglu]; ``intermediate_size`` is its hidden width
      (None: 4 * n_embd for GELU, about 8/3 * n_embd for SwiGLU, see ``hidden_size``).
    - ``n_kv_head``: heads of keys and values (None: ``n_head``). Fewer than ``n_head`` is
      grouped-query attention, 1 is multi-query attention: groups of query heads share one
      key/value head, and the KV cache shrinks by ``n_head / n_kv_head``.
    - ``bias``: biases in every linear layer [False]. Norm layers follow ``norm``: GPT-2's
      LayerNorm always keeps its bias, RMSNorm has none.
    - ``tie_word_embeddings``: the output head reuses the token embedding matrix [per model].
    """

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
    norm: str = "layernorm"
    positions: str = "learned"
    rope_theta: float = 10000.0
    mlp: str = "gelu"
    intermediate_size: int | None = None
    n_kv_head: int | None = None
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
        self._check_architecture()

    def _check_architecture(self) -> None:
        """Reject post-GPT-2 options that do not fit, saying what would."""
        for key, choices in (("norm", NORMS), ("positions", POSITIONS), ("mlp", MLPS)):
            if getattr(self, key) not in choices:
                raise ValueError(f"GPTConfig.{key} must be one of {choices}, got {getattr(self, key)!r}")
        for key in ("bias", "tie_word_embeddings"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"GPTConfig.{key} must be True or False, got {getattr(self, key)!r}")
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(
                f"rotary positions turn pairs of dimensions, so head_dim (n_embd // n_head = {self.head_dim}) "
                f"must be even; change n_embd or n_head, or use positions='learned'"
            )
        if isinstance(self.rope_theta, bool) or not isinstance(self.rope_theta, int | float) or self.rope_theta <= 1:
            raise ValueError(f"rope_theta must be a number above 1 (Llama: 10000 or 500000), got {self.rope_theta!r}")
        for key in ("intermediate_size", "n_kv_head"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"GPTConfig.{key} must be a positive integer or None (the default), got {value!r}")
        if self.n_head % self.kv_heads:
            raise ValueError(
                f"n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head}) so that every key/value head "
                f"serves the same number of query heads; choose a divisor of {self.n_head}, or None for n_head"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        """Heads of keys and values: ``n_kv_head``, or ``n_head`` when it is None (GPT-2)."""
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def hidden_size(self) -> int:
        """The feed-forward block's hidden width.

        ``intermediate_size`` when set; otherwise GPT-2's 4 * n_embd for GELU, and for SwiGLU,
        whose three matrices would otherwise hold 1.5x the parameters, 8/3 * n_embd rounded
        up to a multiple of 8 (as Llama does, to a coarser multiple), so both hold ~8 n_embd^2.
        """
        if self.intermediate_size is not None:
            return self.intermediate_size
        if self.mlp == "swiglu":
            return 8 * math.ceil(self.n_embd / 3)
        return 4 * self.n_embd

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GPTConfig:
        """A preset by name (see ``PRESETS``), with any field overridden."""
        if name not in PRESETS:
            known = ", ".join(sorted(PRESETS))
            raise KeyError(f"unknown preset {name!r}; known presets: {known}")
        return dataclasses.replace(PRESETS[name], **overrides)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dictionary, without the post-GPT-2 options left at their GPT-2 values.

        Leaving those out keeps a GPT-2 config's dictionary, and so every checkpoint saved
        from one, exactly what it was before the options existed; ``from_dict`` fills them in.
        """
        return {k: v for k, v in dataclasses.asdict(self).items()
                if k not in ARCHITECTURE_DEFAULTS or v != ARCHITECTURE_DEFAULTS[k]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown GPTConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)


def _llama(vocab: int, context: int, d: int, layers: int, heads: int, kv_heads: int, hidden: int,
           theta: float, *, tied: bool, name: str) -> GPTConfig:
    """A Llama-style shape: RMSNorm, rotary positions, SwiGLU, grouped queries, no biases."""
    return GPTConfig(vocab_size=vocab, n_positions=context, n_embd=d, n_layer=layers, n_head=heads,
                     n_kv_head=None if kv_heads == heads else kv_heads, intermediate_size=hidden, bias=False,
                     norm="rmsnorm", positions="rope", rope_theta=theta, mlp="swiglu", tie_word_embeddings=tied,
                     name=name)


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
    # Later families at their released shapes (each model's Hugging Face config.json), for
    # counting and comparing (chapter 13). Llama 3.2's scaled rotary positions, Mistral's
    # sliding window and the families llmbook cannot yet express (Qwen3's and Gemma 3's
    # QK-norm and wider heads) are left out; none of them changes a parameter count here.
    "llama-2-7b": _llama(32000, 4096, 4096, 32, 32, 32, 11008, 10000.0, tied=False, name="llama-2-7b"),
    "llama-3-8b": _llama(128256, 8192, 4096, 32, 32, 8, 14336, 500000.0, tied=False, name="llama-3-8b"),
    "llama-3.2-1b": _llama(128256, 131072, 2048, 16, 32, 8, 8192, 500000.0, tied=True, name="llama-3.2-1b"),
    "mistral-7b": _llama(32000, 32768, 4096, 32, 32, 8, 14336, 10000.0, tied=False, name="mistral-7b"),
    "smollm2-135m": _llama(49152, 8192, 576, 30, 9, 3, 1536, 100000.0, tied=True, name="smollm2-135m"),
}

# Published sizes, for setting our counts beside them. GPT-2's model card rounds to
# 124M/355M/774M/1.5B; GPT-3's paper reports 175.0B.
PUBLISHED_PARAMETERS: dict[str, float] = {
    "gpt2": 124e6,
    "gpt2-medium": 355e6,
    "gpt2-large": 774e6,
    "gpt2-xl": 1.5e9,
    "gpt3-175b": 175.0e9,
    # LLaMA 7B as Touvron et al. (2023a, Table 2) report it; Llama 2 7B has the same shape.
    "llama-2-7b": 6.7e9,
    # The model cards: Llama 3 "8B", Llama 3.2 "1.23B", SmolLM2 "135M"; Mistral 7B "7.3B"
    # (Mistral AI's announcement).
    "llama-3-8b": 8e9,
    "llama-3.2-1b": 1.23e9,
    "mistral-7b": 7.3e9,
    "smollm2-135m": 135e6,
}


def parameter_breakdown(config: GPTConfig) -> dict[str, int]:
    """Parameters per part of the model, from the shapes alone (nothing is allocated)."""
    d, v, t, n = config.n_embd, config.vocab_size, config.n_positions, config.n_layer
    b = 1 if config.bias else 0
    kv = config.kv_heads * config.head_dim  # width of the keys, and of the values
    hidden, n_in = config.hidden_size, (2 if config.mlp == "swiglu" else 1)  # SwiGLU: gate and value
    # GPT-2's layer norms always have a weight and a bias; RMSNorm has a weight only.
    norm = 2 * d if config.norm == "layernorm" else d
    attention = d * (d + 2 * kv) + b * (d + 2 * kv) + d * d + b * d
    mlp = d * n_in * hidden + b * n_in * hidden + hidden * d + b * d
    return {
        "token embeddings (wte)": v * d,
        "position embeddings (wpe)": t * d if config.positions == "learned" else 0,
        "attention (all layers)": n * attention,
        "feed-forward (all layers)": n * mlp,
        "layer norms": n * 2 * norm + norm,
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
