"""OpenAI's GPT-2 weights, in the Hugging Face layout, into and out of ``GPT`` (chapters 8-10).

Because ``GPT`` keeps GPT-2's module names, the mapping is short: drop Hugging Face's
``transformer.`` prefix, transpose the four projection matrices per block (GPT-2 was
written with ``Conv1D`` layers that store weights as (in, out), where ``nn.Linear``
stores (out, in)), and skip the causal-mask buffers that older checkpoints carry.
Files are safetensors only: no pickle is ever loaded.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as st_save

from llmbook.atomic import atomic_write_bytes
from llmbook.checkpoint import load_model_tensors, model_tensors
from llmbook.config import GPTConfig
from llmbook.model import GPT

HUB_REPOS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}
# The causal-mask buffers older Hugging Face checkpoints saved beside the weights:
# h.<i>.attn.bias (a lower-triangular matrix) and h.<i>.attn.masked_bias (a constant).
# Exact names, so that the real parameter h.<i>.attn.c_attn.bias is never mistaken for one.
_MASK_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")
# Weights GPT-2 wrote as Conv1D (in, out); nn.Linear wants (out, in).
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be found locally or downloaded."""


def config_from_hf(hf: dict) -> GPTConfig:
    """A ``GPTConfig`` from a Hugging Face GPT-2 ``config.json`` dictionary."""
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"activation_function {act!r} is not GPT-2's tanh GELU; llmbook's GPT cannot match it")
    return GPTConfig(
        vocab_size=hf["vocab_size"],
        n_positions=hf.get("n_positions", hf.get("n_ctx", 1024)),
        n_embd=hf["n_embd"],
        n_layer=hf["n_layer"],
        n_head=hf["n_head"],
        layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-5),
        tie_word_embeddings=hf.get("tie_word_embeddings", True),
        name=hf.get("_name_or_path") or "gpt2-hf",
    )


def config_to_hf(config: GPTConfig) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "vocab_size": config.vocab_size,
        "n_positions": config.n_positions,
        "n_ctx": config.n_positions,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "tie_word_embeddings": config.tie_word_embeddings,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        # GPT-2's end-of-text token is the last id (50256); so is our byte tokenizer's (256).
        "bos_token_id": config.vocab_size - 1,
        "eos_token_id": config.vocab_size - 1,
    }


def from_hf_state_dict(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face GPT-2 tensors renamed and transposed into ``GPT``'s state-dict names."""
    ours = {}
    for key, value in hf_state.items():
        name = key.removeprefix("transformer.")
        if _MASK_BUFFER.fullmatch(name):
            continue  # causal-mask buffers in older checkpoints, not parameters
        if name.endswith(_TRANSPOSED):
            value = value.t()
        ours[name] = value.contiguous()
    return ours


def to_hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """``GPT``'s tensors in the layout ``GPT2LMHeadModel.from_pretrained`` reads."""
    hf = {}
    for name, value in model_tensors(model).items():
        if name.endswith(_TRANSPOSED):
            value = value.t()
        hf[name if name.startswith("lm_head") else f"transformer.{name}"] = value.contiguous()
    return hf


def load_hf_gpt2(source: str | os.PathLike, device: str | torch.device = "cpu") -> GPT:
    """A ``GPT`` with GPT-2 weights from a folder (``config.json`` + ``model.safetensors``)
    or, by name (``gpt2``, ``gpt2-medium``, ``gpt2-large``, ``gpt2-xl``), from the Hugging Face Hub.
    """
    folder = Path(source)
    if not folder.is_dir():
        if str(source) not in HUB_REPOS:
            raise ValueError(
                f"{source!r} is neither a folder with config.json and model.safetensors nor one of "
                f"{sorted(HUB_REPOS)}"
            )
        folder = _download_from_hub(str(source))
    config_file, weights_file = folder / "config.json", folder / "model.safetensors"
    for f in (config_file, weights_file):
        if not f.is_file():
            raise FileNotFoundError(f"{folder} has no {f.name}; a GPT-2 folder needs config.json and model.safetensors")
    config = config_from_hf(json.loads(config_file.read_text()))
    model = GPT(config)
    state = from_hf_state_dict(load_file(str(weights_file)))
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    load_model_tensors(model, state)
    return model.to(device)


def save_hf_gpt2(model: GPT, folder: str | os.PathLike) -> Path:
    """Write ``config.json`` and ``model.safetensors`` in the Hugging Face GPT-2 layout."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / "model.safetensors", st_save(to_hf_state_dict(model), metadata={"format": "pt"}))
    atomic_write_bytes(folder / "config.json", json.dumps(config_to_hf(model.config), indent=2).encode())
    return folder


def _download_from_hub(name: str) -> Path:
    repo = HUB_REPOS[name]
    try:  # a dependency of llmbook, imported here because only this path needs it
        from huggingface_hub import hf_hub_download
    except ImportError as err:
        raise WeightsUnavailableError(
            f"loading {name!r} by name needs huggingface-hub, which llmbook depends on but this "
            f"environment lacks: reinstall llmbook, or pip install 'huggingface-hub>=0.23'"
        ) from err
    try:
        paths = [hf_hub_download(repo_id=repo, filename=f) for f in ("config.json", "model.safetensors")]
    except Exception as err:  # offline, blocked, or the Hub is down: all mean "not available"
        raise WeightsUnavailableError(
            f"could not get {name!r} from the Hugging Face Hub ({type(err).__name__}: {err}). "
            f"Are you offline? Download config.json and model.safetensors from "
            f"https://huggingface.co/{repo} into a folder and pass that folder's path instead."
        ) from err
    return Path(paths[1]).parent
