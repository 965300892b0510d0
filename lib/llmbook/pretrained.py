"""The base model that the fine-tuning chapters start from (made in chapter 8, reused in 9-11).

Colab runs one chapter at a time, so chapters 9, 10 and 11 cannot count on chapter 8
having run first. ``base_model()`` gives every chapter the same starting point:

* on the ``gpu`` profile it is OpenAI's GPT-2 124M (Radford et al., 2019) through
  ``llmbook.weights``, with GPT-2's tokenizer;
* on the ``cpu`` profile it is our own small byte-level GPT, pretrained by a fixed
  recipe on the Gutenberg books plus Tiny Shakespeare (one book held out). The first call
  trains it (a few minutes of one CPU core; the book build does it before any chapter) and
  saves it in the user cache; later calls, in any chapter, load that file. The file records
  the recipe, so changing the recipe retrains.

Two chapters starting at once (parallel tests) share one training run: the second waits
on a lock file and then loads what the first one saved.
"""

from __future__ import annotations

import dataclasses
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
    """Everything that decides the pretrained weights: change any field and the cache retrains.

    ``corpus`` names a text (``llmbook.data.load_corpus``); the books in ``held_out`` are
    removed from it, so that a whole book the model never saw measures how well it
    predicts new English prose (``held_out_text``). Training runs in ``phases``, one after
    the other, each a dict of ``context_length`` plus ``TrainConfig`` fields: short
    windows first, which a small model learns from fastest, then full-length windows, so
    every position of the context is trained. ``"tile_positions": True`` in a phase starts
    it with ``tile_position_embeddings`` from the previous phase's context length.
    """

    name: str
    corpus: str
    model: dict[str, Any]
    phases: tuple[dict[str, Any], ...]
    held_out: tuple[str, ...] = ()
    val_fraction: float = 0.02
    cpu_seconds: int = 60  # about how long training takes on one CPU core, said before it starts
    version: int = 2

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError("a recipe needs at least one training phase")
        for phase in self.phases:
            if "context_length" not in phase:
                raise ValueError(f"every phase names its context_length; got {sorted(phase)}")
            if phase["context_length"] > self.model["n_positions"]:
                raise ValueError(f"a phase's context_length {phase['context_length']} exceeds the model's "
                                 f"n_positions {self.model['n_positions']}")
        unknown = set(self.held_out) - set(data.GUTENBERG_BOOKS)
        if unknown:
            raise ValueError(f"held_out names {sorted(unknown)}; choose from {sorted(data.GUTENBERG_BOOKS)}")

    def key(self) -> str:
        """A hash of every field that changes the weights (not the time estimate ``cpu_seconds``)."""
        fields = {k: v for k, v in asdict(self).items() if k != "cpu_seconds"}
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def gpt_config(self) -> GPTConfig:
        return GPTConfig(**self.model)

    @property
    def context_length(self) -> int:
        """The window length of the last phase: the context the finished model was trained on."""
        return int(self.phases[-1]["context_length"])

    @property
    def train_bytes(self) -> int:
        """How many bytes of text the phases show the model (steps x batch x window)."""
        return sum(p["max_steps"] * p["batch_size"] * p["context_length"] for p in self.phases)


# Chosen by measurement on one CPU thread (benchmarks/base_model.py has the table). A model
# of this size learns fastest from short windows: 64-byte windows for most of the budget,
# then 256-byte windows so that positions 64-255, which the fine-tuning chapters' prompts
# use, are trained too. Training on 256-byte windows from the start left the model near
# the bigram level (2.44 nats per byte after three CPU-minutes): every learned position
# embedding has to be learned on its own, and 256 of them take four times the examples of
# 64. So the second phase starts by tiling the 64 learned embeddings over positions
# 64-255 ("tile_positions"): what the model learned about nearby positions carries over,
# and a short phase tunes the rest.
BYTES_RECIPE = Recipe(
    name="books-bytes",
    corpus="books+shakespeare",
    held_out=("35-0.txt",),  # The Time Machine (H. G. Wells): no other Wells book is in the corpus
    model={"vocab_size": ByteTokenizer.n_vocab, "n_positions": 256, "n_embd": 96, "n_layer": 3,
           "n_head": 4, "dropout": 0.0, "name": "books-bytes"},
    phases=(
        {"context_length": 64, "max_steps": 2800, "batch_size": 16, "lr": 4e-3, "min_lr": 4e-4,
         "warmup_steps": 50, "betas": (0.9, 0.99), "weight_decay": 0.1, "eval_interval": 400,
         "eval_batches": 8, "seed": 0},
        {"context_length": 256, "tile_positions": True, "max_steps": 250, "batch_size": 8, "lr": 2e-3,
         "min_lr": 2e-4, "warmup_steps": 20, "betas": (0.9, 0.99), "weight_decay": 0.1,
         "eval_interval": 50, "eval_batches": 8, "seed": 1},
    ),
    cpu_seconds=240,
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


def _bytes(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()


def corpus_text(recipe: Recipe | None = None) -> str:
    """The recipe's training corpus: ``recipe.corpus`` without the held-out books."""
    recipe = recipe or BYTES_RECIPE
    if not recipe.held_out:
        return data.load_corpus(recipe.corpus)
    if recipe.corpus not in ("gutenberg", "books+shakespeare"):
        raise ValueError(f"held_out books can only be removed from a corpus of books, not {recipe.corpus!r}")
    books = [data.strip_gutenberg(data.read_text(f"text/gutenberg/{name}"))
             for name in data.GUTENBERG_BOOKS if name not in recipe.held_out]
    text = "\n\n".join(books)
    return text + "\n\n" + data.load_corpus("shakespeare") if recipe.corpus == "books+shakespeare" else text


def held_out_text(recipe: Recipe | None = None) -> str:
    """The recipe's held-out books, which the model never trains on (empty if there are none)."""
    recipe = recipe or BYTES_RECIPE
    return "\n\n".join(data.strip_gutenberg(data.read_text(f"text/gutenberg/{name}")) for name in recipe.held_out)


def corpus_splits(recipe: Recipe | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The training corpus as byte ids, split into train and validation (the last ``val_fraction``)."""
    recipe = recipe or BYTES_RECIPE
    return datasets.split_tokens(_bytes(corpus_text(recipe)), recipe.val_fraction)


def pretrain(recipe: Recipe | None = None, *, progress: bool = True,
             save_to: str | os.PathLike | None = None) -> Pretrained:
    """Train the recipe's model (default ``BYTES_RECIPE``) from scratch; save it to ``save_to`` if given.

    The phases run one after another on the same model; the returned history joins them,
    with the steps of a later phase counted on from where the earlier one ended.
    """
    recipe = recipe or BYTES_RECIPE
    seed_everything(recipe.phases[0].get("seed", 0))
    model = GPT(recipe.gpt_config())
    train_ids, val_ids = corpus_splits(recipe)
    history = History()
    trained = 0  # the context length trained so far
    for number, phase in enumerate(recipe.phases, start=1):
        settings = {k: v for k, v in phase.items() if k not in ("context_length", "tile_positions")}
        T = phase["context_length"]
        if phase.get("tile_positions") and trained:
            tile_position_embeddings(model, trained)
        trained = max(trained, T)
        done = history.steps[-1] if history.steps else 0
        part = train(model, datasets.TokenWindows(train_ids, T), datasets.TokenWindows(val_ids, T),
                     TrainConfig(**settings, progress=progress), desc=f"pretraining {number}/{len(recipe.phases)}")
        history.extend(part, offset=done)
    model.eval()
    tokenizer = ByteTokenizer()
    if save_to is not None:
        save_model(model, save_to, recipe=asdict(recipe), recipe_key=recipe.key(),
                   tokenizer=tokenizer.to_dict(), history=history.to_dict())
    return Pretrained(model, tokenizer, source=f"trained now by recipe {recipe.name}",
                      history=history, recipe=recipe)


@torch.no_grad()
def tile_position_embeddings(model: GPT, trained: int) -> None:
    """Copy the first ``trained`` learned position embeddings over all later positions, in turn.

    Position ``trained + i`` gets the embedding of position ``i % trained``. A model trained
    on short windows has learned how nearby positions relate (which one is the previous
    token); the copies repeat that pattern, so on longer windows it works locally from the
    start instead of from random embeddings, and needs only a short phase to learn the rest
    (``benchmarks/base_model.py`` measures both).
    """
    if model.wpe is None:
        raise ValueError("tile_position_embeddings needs learned positions (wpe); this model uses rotary positions")
    n = model.wpe.weight.shape[0]
    if not 0 < trained < n:
        raise ValueError(f"trained must be between 1 and {n - 1} (the model's positions), got {trained}")
    rows = torch.arange(trained, n) % trained
    model.wpe.weight[trained:] = model.wpe.weight[rows]


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
    recipe = _recipe_from_dict(extra["recipe"]) if "recipe" in extra else None
    name = recipe.name if recipe else Path(path).name
    return Pretrained(model, tokenizer_from_dict(extra["tokenizer"]), source=f"recipe {name}, loaded from a file",
                      history=history, recipe=recipe)


def _recipe_from_dict(d: dict[str, Any]) -> Recipe:
    """A recipe read back from a file's JSON header (tuples came back as lists)."""
    phases = tuple({k: tuple(v) if isinstance(v, list) else v for k, v in p.items()} for p in d["phases"])
    return Recipe(**{**d, "phases": phases, "held_out": tuple(d.get("held_out", ()))})


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
    return cached(BYTES_RECIPE, device=device, retrain=retrain, progress=progress)


def cached(recipe: Recipe, *, device: str | torch.device | None = None, retrain: bool = False,
           progress: bool = True) -> Pretrained:
    """The model ``recipe`` makes: loaded from the cache, or trained now (saying how long first) and cached.

    A damaged cache file is trained again, never trusted; two callers at once share one
    training run (the second waits on a lock file, then loads what the first saved).
    """
    path = cache_path(recipe)
    with file_lock(path):
        if path.exists() and not retrain:
            try:
                found = load_pretrained(path, device or "cpu")
            except Exception:  # a damaged cache file is retrained, never trusted
                path.unlink(missing_ok=True)
            else:
                found.notes["cached"] = True
                return found
        if progress:
            print(f"No cached model for recipe {recipe.name!r} ({path.name}): training it now, "
                  f"about {max(1, round(recipe.cpu_seconds / 60))} CPU-minute(s) on one core. Later calls load it.")
        made = pretrain(recipe, progress=progress, save_to=path)
    made.model.to(device or "cpu").eval()
    made.source = f"{made.source}, now cached"
    made.notes["cached"] = False
    return made


def quick_recipe(corpus: str) -> Recipe:
    """A short recipe for comparing corpora at one small, equal budget (chapter 8's overfitting
    experiment): ``BYTES_RECIPE``'s model and first phase, cut to 600 steps, on ``corpus``."""
    name = f"quick-{corpus.replace('+', '-')}"
    phase = {**BYTES_RECIPE.phases[0], "max_steps": 600, "eval_interval": 50, "warmup_steps": 30}
    return dataclasses.replace(BYTES_RECIPE, name=name, corpus=corpus, model={**BYTES_RECIPE.model, "name": name},
                               phases=(phase,), held_out=BYTES_RECIPE.held_out if "books" in corpus else (),
                               cpu_seconds=40)


def validation_loss(pre: Pretrained, text: str, context_length: int | None = None,
                    max_batches: int | None = 20, batch_size: int = 8) -> float:
    """Mean next-token loss of ``pre.model`` on ``text`` (nats per token of its own tokenizer)."""
    ids = pre.tokenizer.encode(text, allowed_special="all")
    T = context_length or min(pre.model.config.n_positions, 256)
    return evaluate(pre.model, datasets.TokenWindows(ids, T), batch_size=batch_size, max_batches=max_batches)


def ngram_cross_entropy(train_ids: torch.Tensor, test_ids: torch.Tensor, order: int, vocab_size: int = 257,
                        alpha: float = 0.1) -> float:
    """Cross-entropy (nats per token) on ``test_ids`` of a unigram (``order=1``) or bigram (2) model
    counted on ``train_ids``, with add-``alpha`` smoothing so that no unseen pair costs infinity.

    The baselines a language model must beat: a unigram model knows which bytes are common,
    a bigram model also which byte tends to follow which.
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 (unigram) or 2 (bigram), got {order}")
    train_ids, test_ids = train_ids.long(), test_ids.long()
    if order == 1:
        counts = torch.bincount(train_ids, minlength=vocab_size).double() + alpha
        return -(counts / counts.sum()).log()[test_ids].mean().item()
    pairs = torch.zeros(vocab_size, vocab_size, dtype=torch.float64)
    pairs.index_put_((train_ids[:-1], train_ids[1:]), torch.ones(len(train_ids) - 1, dtype=torch.float64),
                     accumulate=True)
    pairs += alpha
    logp = (pairs / pairs.sum(dim=1, keepdim=True)).log()
    return -logp[test_ids[:-1], test_ids[1:]].mean().item()


def main() -> None:
    """``python -m llmbook.pretrained``: make sure the cpu base model is trained and cached,
    and chapter 8's two quick comparison models too.

    The book build runs this before executing the chapters, so that no chapter's time
    budget pays for training them.
    """
    import time

    for recipe in (BYTES_RECIPE, quick_recipe("books+shakespeare"), quick_recipe("verdict")):
        began = time.process_time()
        made = cached(recipe)
        state = "in the cache" if made.notes["cached"] else f"trained in {time.process_time() - began:.0f} CPU s"
        print(f"{recipe.name}: {state} ({cache_path(recipe).name})")


if __name__ == "__main__":
    main()
