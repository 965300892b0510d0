"""LoRA, low-rank adaptation (Hu et al., 2021): fine-tune a few parameters, merge them back (chapter 10).

Full fine-tuning changes every weight matrix W. LoRA freezes W and learns the change as
a product of two thin matrices, ``delta W = (alpha / r) * B @ A`` with A of shape
(r, in) and B of shape (out, r), r much smaller than in and out. A starts small and
random and B at zero, so at step 0 the wrapped model computes exactly what the base
model computes, and training moves away from it gradually.

Because ``B @ A`` has the same shape as W, the learned change can be added into W once
training is over (``merge_lora``): the merged model is an ordinary GPT, with no extra
cost at inference and nothing LoRA-specific left to save or load.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

DEFAULT_TARGETS: tuple[str, ...] = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
"""The four projections of every GPT block: attention in and out, feed-forward in and out."""


class LoRALinear(nn.Module):
    """An ``nn.Linear`` with a frozen weight plus a trainable low-rank update.

    ``y = base(x) + (alpha / r) * (dropout(x) @ A.T) @ B.T``. The base layer is kept as
    ``self.base`` (frozen); ``lora_A`` is (r, in_features), ``lora_B`` is (out_features, r).
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float = 1.0, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if r < 1:
            raise ValueError(f"the rank r must be a positive integer, got {r}")
        if r > min(base.in_features, base.out_features):
            raise ValueError(f"rank r={r} is larger than the layer itself "
                             f"({base.out_features}x{base.in_features}); use r <= "
                             f"{min(base.in_features, base.out_features)}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha = r, alpha
        self.scale = alpha / r
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=w.device, dtype=w.dtype))
        # As in Hu et al.'s reference code: A like an nn.Linear's default init, B zero.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> torch.Tensor:
        """The learned change to the weight, ``scale * B @ A``, shaped like ``base.weight``."""
        return self.scale * (self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * ((self.dropout(x) @ self.lora_A.T) @ self.lora_B.T)

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` whose weight is ``W + scale * B @ A`` (same bias)."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.base.bias is not None,
                        device=self.base.weight.device, dtype=self.base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.delta_weight())
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}"


def _matches(name: str, targets: Sequence[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def apply_lora(model: nn.Module, r: int, alpha: float = 1.0, targets: Sequence[str] = DEFAULT_TARGETS,
               dropout: float = 0.0) -> list[str]:
    """Freeze ``model`` and wrap each ``nn.Linear`` whose name ends in a target with ``LoRALinear``.

    Names match at a dot boundary: ``"attn.c_proj"`` matches ``h.0.attn.c_proj`` but not
    ``h.0.mlp.c_proj``. Changes the model in place and returns the wrapped layers' names.
    Afterwards only the LoRA matrices have ``requires_grad``.
    """
    if isinstance(targets, str):
        targets = (targets,)
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("this model already has LoRA layers; merge_lora(model) first, or start from a fresh copy")
    found = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and _matches(name, targets)]
    unmatched = [t for t in targets if not any(_matches(name, (t,)) for name in found)]
    if unmatched:
        linear = sorted({name.split(".", 2)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"no nn.Linear layer matches the targets {unmatched}; the model's linear "
                         f"layers are named like {linear}")
    for p in model.parameters():
        p.requires_grad_(False)
    for name in found:
        layer = model.get_submodule(name)
        assert isinstance(layer, nn.Linear)  # found lists nn.Linear layers only
        _set_module(model, name, LoRALinear(layer, r, alpha, dropout))
    return found


def lora_layers(model: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    """(name, layer) for every LoRA layer in ``model``."""
    return ((n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear))


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The LoRA matrices A and B of every LoRA layer (what an optimizer should train)."""
    return [p for _, m in lora_layers(model) for p in (m.lora_A, m.lora_B)]


def lora_parameter_count(model: nn.Module, r: int, targets: Sequence[str] = DEFAULT_TARGETS) -> int:
    """How many parameters ``apply_lora(model, r, targets=targets)`` would add: r * (in + out) per layer."""
    return sum(r * (m.in_features + m.out_features) for name, m in model.named_modules()
               if isinstance(m, nn.Linear) and _matches(name, targets))


def train_token_rows(embedding: nn.Embedding, token_ids: Sequence[int]) -> torch.utils.hooks.RemovableHandle:
    """Let only the rows ``token_ids`` of a frozen embedding learn; returns the gradient hook's handle.

    LoRA adapts the linear layers, but a token the base model never saw (our CPU model
    never met ``<|endoftext|>`` in pretraining) keeps the embedding it got from training
    to be *never* predicted, and with tied weights that row is also the token's output
    vector. Training just those rows (``n_embd`` numbers each) lets the model learn to
    use the token. The hook zeroes every other row's gradient, so with AdamW and no
    weight decay on the matrix (``finetune``'s default) the other rows stay exactly as
    they were; ``handle.remove()`` undoes it.
    """
    weight = embedding.weight
    ids = sorted({int(i) for i in token_ids})
    if not ids or ids[0] < 0 or ids[-1] >= weight.shape[0]:
        raise ValueError(f"token_ids must be ids of this embedding (0 to {weight.shape[0] - 1}), got {list(token_ids)}")
    mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
    mask[ids] = 1
    weight.requires_grad_(True)
    return weight.register_hook(lambda grad: grad * mask)


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA layer into a plain ``nn.Linear`` (W + scale * B @ A), in place.

    The merged model computes the same function (up to float rounding) at the base
    model's cost. Its parameters are all trainable again, like a freshly built model's.
    """
    layers = list(lora_layers(model))
    if not layers:
        raise ValueError("the model has no LoRA layers to merge (apply_lora adds them)")
    for name, layer in layers:
        _set_module(model, name, layer.merged())
    for p in model.parameters():
        p.requires_grad_(True)
    return model


__all__ = ["DEFAULT_TARGETS", "LoRALinear", "apply_lora", "lora_layers",
           "lora_parameter_count", "lora_parameters", "merge_lora", "train_token_rows"]
