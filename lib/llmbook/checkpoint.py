"""Saving and loading models and training state without pickle (chapter 8).

A checkpoint is one safetensors file: the tensors (model weights, optimizer moments,
random-number-generator state) plus a JSON header (model config, step, loss history,
optimizer settings) in the file's metadata. safetensors holds only raw tensors, so
loading a checkpoint cannot run code, unlike ``torch.load`` on a pickle. Files are
written to a temporary name and renamed into place, so a crash mid-save never leaves
a broken checkpoint where a good one was.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from llmbook.atomic import atomic_write_bytes
from llmbook.config import GPTConfig
from llmbook.model import GPT

FORMAT = "llmbook-checkpoint-v1"


def model_tensors(model: GPT) -> dict[str, torch.Tensor]:
    """The model's state as plain tensors, with a tied output head stored once."""
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def load_model_tensors(model: GPT, tensors: dict[str, torch.Tensor]) -> None:
    """Copy tensors into ``model``, naming any missing or unexpected keys in the error."""
    expected = set(model_tensors(model))
    missing, unexpected = expected - set(tensors), set(tensors) - expected
    if missing or unexpected:
        raise ValueError(
            f"weights do not fit this model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}; "
            f"was the checkpoint saved from a model with the same GPTConfig?"
        )
    model.load_state_dict(tensors, strict=False)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = optimizer.state_dict()
    tensors = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"optim.{pid}.{key}"] = t.detach().contiguous().cpu()
    return tensors, sd["param_groups"]


def _rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def save_checkpoint(
    path: str | os.PathLike,
    model: GPT,
    optimizer: torch.optim.Optimizer | None = None,
    step: int = 0,
    history: Any = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save model (and optionally optimizer, step, history, RNG) to one safetensors file."""
    tensors = {f"model.{k}": v for k, v in model_tensors(model).items()}
    header: dict[str, Any] = {
        "format": FORMAT,
        "config": model.config.to_dict(),
        "step": step,
        "history": history.to_dict() if hasattr(history, "to_dict") else history,
        "extra": extra or {},
    }
    if optimizer is not None:
        opt_tensors, groups = _optimizer_tensors(optimizer)
        tensors.update(opt_tensors)
        header["optimizer"] = {"class": type(optimizer).__name__, "param_groups": groups}
        tensors.update(_rng_tensors())
    payload = st_save(tensors, metadata={"llmbook": json.dumps(header)})
    return atomic_write_bytes(path, payload)


@dataclass
class Checkpoint:
    config: GPTConfig
    step: int
    history: dict | None
    extra: dict
    model_state: dict[str, torch.Tensor]
    optimizer: dict | None = None
    optimizer_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    rng: dict[str, torch.Tensor] = field(default_factory=dict)

    def build_model(self) -> GPT:
        model = GPT(self.config)
        load_model_tensors(model, self.model_state)
        return model

    def restore_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        if self.optimizer is None:
            raise ValueError("this checkpoint holds no optimizer state (it was saved with optimizer=None)")
        state: dict[int, dict[str, torch.Tensor]] = {}
        for name, t in self.optimizer_tensors.items():
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = t
        # JSON turned tuples (AdamW's betas) into lists; give them back their type.
        groups = [{k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
                  for g in self.optimizer["param_groups"]]
        optimizer.load_state_dict({"state": state, "param_groups": groups})

    def restore_rng(self) -> None:
        if "rng.cpu" in self.rng:
            torch.set_rng_state(self.rng["rng.cpu"])
        cuda = [self.rng[k] for k in sorted(self.rng) if k.startswith("rng.cuda.")]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint`` (no pickle involved)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "optim": {}, "rng": {}}
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if "llmbook" not in meta:
            raise ValueError(
                f"{path} is a safetensors file but not an llmbook checkpoint (no 'llmbook' header); "
                f"for Hugging Face GPT-2 weights use llmbook.weights.load_hf_gpt2"
            )
        for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
            kind, _, rest = key.partition(".")
            if kind == "model":
                groups["model"][rest] = f.get_tensor(key)
            elif kind in ("optim", "rng"):
                groups[kind][key] = f.get_tensor(key)
    header = json.loads(meta["llmbook"])
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} has format {header.get('format')!r}; this llmbook reads {FORMAT}")
    return Checkpoint(
        config=GPTConfig.from_dict(header["config"]),
        step=int(header["step"]),
        history=header.get("history"),
        extra=header.get("extra", {}),
        model_state=groups["model"],
        optimizer=header.get("optimizer"),
        optimizer_tensors=groups["optim"],
        rng=groups["rng"],
    )


def save_model(model: GPT, path: str | os.PathLike, **extra: Any) -> Path:
    """Weights and config only: the file to share or to start fine-tuning from."""
    return save_checkpoint(path, model, extra=extra)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> GPT:
    """A ``GPT`` rebuilt from a file written by ``save_model`` or ``save_checkpoint``."""
    return load_checkpoint(path).build_model().to(device)
