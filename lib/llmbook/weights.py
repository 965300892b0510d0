"""Hugging Face GPT-2 and Llama weights into and out of ``GPT`` (GPT-2: chapters 8-10; Llama: chapter 13).

Because ``GPT`` keeps GPT-2's module names, the GPT-2 mapping is short: drop Hugging Face's
``transformer.`` prefix, transpose the four projection matrices per block (GPT-2 was
written with ``Conv1D`` layers that store weights as (in, out), where ``nn.Linear``
stores (out, in)), and skip the causal-mask buffers that older checkpoints carry.

The Llama layout (``LlamaForCausalLM``) is the same decoder with RMSNorm, rotary positions,
SwiGLU and grouped-query attention, and separate q/k/v and gate/up projections where ``GPT``
stacks them into one matrix (``c_attn``, ``c_fc``): loading concatenates, saving splits.
Llama's ``nn.Linear`` weights are already (out, in) and its rotary convention is the one
``llmbook.layers`` uses, so nothing is transposed or permuted.
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
    hf_config, weights_file = _weights_folder(folder, "GPT-2")
    config = config_from_hf(hf_config)
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


def _weights_folder(folder: Path, family: str) -> tuple[dict, Path]:
    """The parsed ``config.json`` and the ``model.safetensors`` path of a Hugging Face folder."""
    config_file, weights_file = folder / "config.json", folder / "model.safetensors"
    for f in (config_file, weights_file):
        if not f.is_file():
            raise FileNotFoundError(
                f"{folder} has no {f.name}; a {family} folder needs config.json and model.safetensors"
            )
    return json.loads(config_file.read_text()), weights_file


# Llama's linear layers that GPT stacks into one: ours -> theirs, in the order stacked
# (queries, keys, values; gate, then value), inside model.layers.<i>.
_LLAMA_LINEAR = {
    "attn.c_attn": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "attn.c_proj": ("self_attn.o_proj",),
    "mlp.c_fc": ("mlp.gate_proj", "mlp.up_proj"),
    "mlp.c_proj": ("mlp.down_proj",),
}
_LLAMA_NORMS = {"ln_1": "input_layernorm", "ln_2": "post_attention_layernorm"}
# Rotary-frequency buffers some older Llama checkpoints saved: recomputed here, never loaded.
_LLAMA_BUFFER = re.compile(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq")


def config_from_llama(hf: dict) -> GPTConfig:
    """A ``GPTConfig`` from a Hugging Face Llama ``config.json`` dictionary.

    Reads both the current ``rope_parameters`` and the older top-level ``rope_theta`` /
    ``rope_scaling``. ``n_kv_head`` is None when it equals the number of query heads.
    Refuses what ``GPT`` cannot compute: another activation, scaled rotary positions
    (Llama 3.1+'s "llama3" kind), a head size other than ``hidden_size / heads``, or
    biases in the attention but not the feed-forward layers (or the reverse).
    """
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"hidden_act {act!r} is not Llama's SiLU; llmbook's SwiGLU cannot match it")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"rotary scaling {rope_type!r} is not implemented; llmbook's RoPE is the plain 'default' kind")
    n_embd, n_head = hf["hidden_size"], hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or n_embd // n_head
    if head_dim * n_head != n_embd:
        raise ValueError(f"head_dim {head_dim} x {n_head} heads != hidden_size {n_embd}; GPT needs them equal")
    bias = hf.get("attention_bias", False)
    if bias != hf.get("mlp_bias", False):
        raise ValueError("attention_bias and mlp_bias differ; GPTConfig.bias sets both, so they must agree")
    n_kv_head = hf.get("num_key_value_heads") or n_head
    return GPTConfig(
        vocab_size=hf["vocab_size"],
        n_positions=hf.get("max_position_embeddings", 2048),
        n_embd=n_embd,
        n_layer=hf["num_hidden_layers"],
        n_head=n_head,
        n_kv_head=None if n_kv_head == n_head else n_kv_head,
        bias=bias,
        layer_norm_epsilon=hf.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=hf.get("tie_word_embeddings", False),
        norm="rmsnorm",
        positions="rope",
        rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        mlp="swiglu",
        intermediate_size=hf["intermediate_size"],
        name=hf.get("_name_or_path") or "llama-hf",
    )


def config_to_llama(config: GPTConfig) -> dict:
    """A Hugging Face Llama ``config.json`` dictionary for a Llama-shaped ``GPTConfig``."""
    llama_shape = {"norm": "rmsnorm", "positions": "rope", "mlp": "swiglu"}
    wrong = {k: getattr(config, k) for k, v in llama_shape.items() if getattr(config, k) != v}
    if wrong or config.dropout:
        raise ValueError(
            f"the Llama layout needs norm='rmsnorm', positions='rope', mlp='swiglu' and dropout=0; this config has "
            f"{wrong or {'dropout': config.dropout}}: use save_hf_gpt2 for a GPT-2-shaped model"
        )
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.n_positions,
        "hidden_size": config.n_embd,
        "intermediate_size": config.hidden_size,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_dim,
        "rms_norm_eps": config.layer_norm_epsilon,
        "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "attention_bias": config.bias,
        "mlp_bias": config.bias,
        "tie_word_embeddings": config.tie_word_embeddings,
        "bos_token_id": config.vocab_size - 1,
        "eos_token_id": config.vocab_size - 1,
    }


def llama_names(config: GPTConfig) -> dict[str, tuple[str, ...]]:
    """Each of ``GPT``'s tensors -> the Hugging Face Llama tensors it holds, stacked in this order."""
    names: dict[str, tuple[str, ...]] = {
        "wte.weight": ("model.embed_tokens.weight",),
        "ln_f.weight": ("model.norm.weight",),
    }
    if not config.tie_word_embeddings:
        names["lm_head.weight"] = ("lm_head.weight",)
    kinds = ("weight", "bias") if config.bias else ("weight",)
    for i in range(config.n_layer):
        theirs = f"model.layers.{i}."
        for ours, norm in _LLAMA_NORMS.items():
            names[f"h.{i}.{ours}.weight"] = (f"{theirs}{norm}.weight",)
        for ours, parts in _LLAMA_LINEAR.items():
            for kind in kinds:
                names[f"h.{i}.{ours}.{kind}"] = tuple(f"{theirs}{part}.{kind}" for part in parts)
    return names


def from_llama_state_dict(hf_state: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """Hugging Face Llama tensors in ``GPT``'s names, q/k/v and gate/up stacked along the output dimension."""
    names = llama_names(config)
    expected = {n for parts in names.values() for n in parts}
    given = {k for k in hf_state if not _LLAMA_BUFFER.fullmatch(k)}
    if config.tie_word_embeddings:
        given.discard("lm_head.weight")  # a tied head is the embedding matrix; some files store it anyway
    missing, unexpected = expected - given, given - expected
    if missing or unexpected:
        raise ValueError(
            f"these Llama weights do not fit the config: missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(unexpected)[:5]}; is config.json from the same model as model.safetensors?"
        )
    return {ours: torch.cat([hf_state[n] for n in parts]).contiguous() for ours, parts in names.items()}


def to_llama_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """``GPT``'s tensors in the layout ``LlamaForCausalLM.from_pretrained`` reads (stacks split apart)."""
    config = model.config
    kv = config.kv_heads * config.head_dim
    tensors, hf = model_tensors(model), {}
    for ours, parts in llama_names(config).items():
        if len(parts) == 1:
            hf[parts[0]] = tensors[ours]
        else:  # a stack: queries, keys, values (n_embd, kv, kv rows) or gate and value (hidden rows each)
            sizes = [config.n_embd, kv, kv] if ".attn." in ours else [config.hidden_size] * 2
            hf.update(zip(parts, (p.contiguous() for p in tensors[ours].split(sizes)), strict=True))
    return hf


def load_hf_llama(folder: str | os.PathLike, device: str | torch.device = "cpu") -> GPT:
    """A ``GPT`` with the weights of a Hugging Face Llama-layout folder (``config.json`` + ``model.safetensors``).

    Any ``LlamaForCausalLM`` checkpoint whose options ``config_from_llama`` accepts; download
    the two files first (e.g. with ``huggingface_hub.snapshot_download``).
    """
    hf_config, weights_file = _weights_folder(Path(folder), "Llama")
    config = config_from_llama(hf_config)
    model = GPT(config)
    load_model_tensors(model, from_llama_state_dict(load_file(str(weights_file)), config))
    return model.to(device)


def save_hf_llama(model: GPT, folder: str | os.PathLike) -> Path:
    """Write ``config.json`` and ``model.safetensors`` in the Hugging Face Llama layout."""
    hf_config = config_to_llama(model.config)  # first: refuses a model that is not Llama-shaped
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / "model.safetensors", st_save(to_llama_state_dict(model), metadata={"format": "pt"}))
    atomic_write_bytes(folder / "config.json", json.dumps(hf_config, indent=2).encode())
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
