"""The base model that the fine-tuning chapters start from (made in chapter 8, reused in 9-11).

Colab runs one chapter at a time, so chapters 9, 10 and 11 cannot count on chapter 8
having run first. ``base_model()`` gives every chapter the same starting point:

* on the ``gpu`` profile it is OpenAI's GPT-2 124M (Radford et al., 2019) through
  ``llmbook.weights``, with GPT-2's tokenizer;
* on the ``cpu`` profile it is our own small byte-level GPT, pretrained by a fixed
  recipe on the Gutenberg books plus Tiny Shakespeare. The first call trains it (under a
  minute on one core) and saves it in the user cache; later calls, in any chapter, load
  that file. The file records the recipe, so changing the recipe retrains.

Two chapters starting at once (parallel tests) share one training run: the second waits
on a lock file and then loads what the first one saved.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from llmbook import data, datasets
from llmbook.atomic import file_lock
from llmbook.checkpoint import load_checkpoint, save_model
from llmbook.config import GPTConfig
from llmbook.device import seed_everything
from llmbook.history import History
from llmbook.model import GPT
from llmbook.profile import current_profile
from llmbook.tokenizers import ByteTokenizer, gpt2_tokenizer, tokenizer_from_dict
from llmbook.train import TrainConfig, evaluate, train


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the pretrained weights: change any field and the cache retrains."""

    name: str
    corpus: str
    model: dict[str, Any]
    context_length: int
    train: dict[str, Any]
    val_fraction: float = 0.1
    version: int = 1

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def gpt_config(self) -> GPTConfig:
        return GPTConfig(**self.model)


# Chosen by measurement on one CPU thread (about 40 s): at this budget a 3-layer, 96-wide model
# with a high learning rate beat 4x128 and 2x128 models, and 128-byte windows with batch 8 beat
# 256-byte windows with batch 4 (validation 2.45 against 2.67 nats per byte). Positions 128-255
# exist for the fine-tuning chapters, whose prompts are longer; they learn them there.
BYTES_RECIPE = Recipe(
    name="books-bytes",
    corpus="books+shakespeare",
    model=dict(vocab_size=ByteTokenizer.n_vocab, n_positions=256, n_embd=96, n_layer=3, n_head=4,
               dropout=0.0, name="books-bytes"),
    context_length=128,
    train=dict(max_steps=700, batch_size=8, lr=8e-3, min_lr=8e-4, warmup_steps=30,
               weight_decay=0.1, eval_interval=100, eval_batches=8, seed=0),
)


@dataclass
class Pretrained:
    """A base model with its tokenizer and where it came from."""

    model: GPT
    tokenizer: Any
    source: str
    history: History | None = None
    recipe: Recipe | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def corpus_splits(recipe: Recipe | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The recipe's corpus as byte ids, split into train and validation (last 10%) streams."""
    recipe = recipe or BYTES_RECIPE
    raw = data.load_corpus(recipe.corpus).encode("utf-8")
    ids = torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()
    return datasets.split_tokens(ids, recipe.val_fraction)


def pretrain(recipe: Recipe | None = None, *, progress: bool = True,
             save_to: str | os.PathLike | None = None) -> Pretrained:
    """Train the recipe's model (default ``BYTES_RECIPE``) from scratch; save it to ``save_to`` if given."""
    recipe = recipe or BYTES_RECIPE
    seed_everything(recipe.train.get("seed", 0))
    model = GPT(recipe.gpt_config())
    train_ids, val_ids = corpus_splits(recipe)
    train_ds = datasets.TokenWindows(train_ids, recipe.context_length)
    val_ds = datasets.TokenWindows(val_ids, recipe.context_length)
    history = train(model, train_ds, val_ds, TrainConfig(**recipe.train, progress=progress))
    tokenizer = ByteTokenizer()
    if save_to is not None:
        save_model(model, save_to, recipe=asdict(recipe), recipe_key=recipe.key(),
                   tokenizer=tokenizer.to_dict(), history=history.to_dict())
    return Pretrained(model, tokenizer, source=f"trained now by recipe {recipe.name}",
                      history=history, recipe=recipe)


def cache_path(recipe: Recipe | None = None) -> Path:
    """Where the cached base model lives: ``<llmbook cache>/models/<name>-<recipe key>.safetensors``."""
    recipe = recipe or BYTES_RECIPE
    return data.cache_dir() / "models" / f"{recipe.name}-{recipe.key()}.safetensors"


def load_pretrained(path: str | os.PathLike, device: str | torch.device = "cpu") -> Pretrained:
    """A base model saved by ``pretrain(save_to=...)``, with its tokenizer and history."""
    ckpt = load_checkpoint(path)
    extra = ckpt.extra
    if "tokenizer" not in extra:
        raise ValueError(f"{path} holds a model but no tokenizer; it was not written by llmbook.pretrained")
    model = ckpt.build_model().to(device).eval()
    history = History.from_dict(extra.get("history"))
    recipe = Recipe(**extra["recipe"]) if "recipe" in extra else None
    return Pretrained(model, tokenizer_from_dict(extra["tokenizer"]), source=str(path),
                      history=history, recipe=recipe)


def base_model(profile: str | None = None, *, device: str | torch.device | None = None,
               retrain: bool = False, progress: bool = True) -> Pretrained:
    """The starting point for fine-tuning on this profile (see the module docstring).

    ``retrain=True`` ignores a cached CPU model and trains (and caches) it again.
    """
    profile = profile or current_profile()
    if profile == "gpu":
        from llmbook.weights import load_hf_gpt2

        model = load_hf_gpt2("gpt2", device=device or "cpu").eval()
        return Pretrained(model, gpt2_tokenizer(), source="OpenAI GPT-2 124M (Hugging Face 'gpt2')")
    if profile != "cpu":
        raise ValueError(f"profile must be 'cpu' or 'gpu', got {profile!r}")
    path = cache_path()
    with file_lock(path):
        if path.exists() and not retrain:
            try:
                found = load_pretrained(path, device or "cpu")
            except Exception:  # a damaged cache file is retrained, never trusted
                path.unlink(missing_ok=True)
            else:
                found.notes["cached"] = True
                return found
        made = pretrain(None, progress=progress, save_to=path)
    made.model.to(device or "cpu").eval()
    made.source = f"{made.source}, cached at {path}"
    made.notes["cached"] = False
    return made


def validation_loss(pre: Pretrained, text: str, context_length: int | None = None,
                    max_batches: int | None = 20, batch_size: int = 8) -> float:
    """Mean next-token loss of ``pre.model`` on ``text`` (nats per token of its own tokenizer)."""
    ids = pre.tokenizer.encode(text, allowed_special="all")
    T = context_length or min(pre.model.config.n_positions, 256)
    return evaluate(pre.model, datasets.TokenWindows(ids, T), batch_size=batch_size, max_batches=max_batches)
