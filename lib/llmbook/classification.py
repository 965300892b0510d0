"""Fine-tuning a GPT to classify text: last-token pooling, a linear head, freezing (chapter 9).

A GPT reads left to right, so its hidden state at the *last* token of a message is the
only one that has seen the whole message. ``GPTClassifier`` puts a small linear layer (the
head) on that state and trains it to give one score per class instead of one score per
vocabulary token. In a batch, messages of different lengths are padded on the right; the
causal mask already stops real tokens from looking at the padding after them, so all
that padding changes is *where* the last real token is, and the pooling reads it from the
padding mask.

The module also holds what chapter 9 needs around the model: the SMS Spam Collection
(Almeida, Gómez Hidalgo and Yamakami, 2011) with a balanced, deterministic split, a padded
dataset, ``freeze`` (which parts of the network may learn), a short training loop with
accuracy curves, and accuracy / confusion-matrix helpers.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from llmbook import data
from llmbook.history import History
from llmbook.model import GPT, ParamCounts, count_trainable
from llmbook.step import Loss
from llmbook.train import TrainConfig, batch_indices, fingerprint, fit

SMS_SPAM_PATH = "classification/sms_spam_collection/SMSSpamCollection"
LABELS: tuple[str, ...] = ("ham", "spam")
"""Class names by index: 0 is ham (an ordinary message), 1 is spam."""

TRAINABLE_CHOICES = ("head", "last_block", "all")


# --------------------------------------------------------------------------- data


class Example(NamedTuple):
    text: str
    label: int


class ExampleSplit(NamedTuple):
    """Labelled messages for training, validation and the final test."""

    train: list[Example]
    val: list[Example]
    test: list[Example]


def parse_sms_spam(text: str, labels: Sequence[str] = LABELS) -> list[Example]:
    """Parse the collection's format: one message per line, ``label<TAB>text``."""
    examples = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        label, tab, message = line.partition("\t")
        if not tab or label not in labels:
            raise ValueError(
                f"line {number} is not 'label<TAB>text' with a label in {tuple(labels)}: {line[:60]!r}"
            )
        examples.append(Example(message, labels.index(label)))
    return examples


def load_sms_spam(deduplicate: bool = True) -> list[Example]:
    """The SMS Spam Collection as ``Example(text, label)`` with label 1 for spam.

    The collection holds 5,574 messages, 747 of them spam, but many are repeated word for
    word (the same advert sent to many people). ``deduplicate`` keeps the first copy of
    each text, so that a test message can never also be a training message.
    """
    examples = parse_sms_spam(data.read_text(SMS_SPAM_PATH))
    if not deduplicate:
        return examples
    seen: set[str] = set()
    unique = []
    for ex in examples:
        if ex.text not in seen:
            seen.add(ex.text)
            unique.append(ex)
    return unique


def balanced_split(
    examples: Sequence[Example],
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    seed: int = 0,
) -> ExampleSplit:
    """Undersample every class to the size of the smallest, then split each class by ``fractions``.

    Each of train, validation and test then holds the classes in equal numbers, so the
    majority-class baseline scores exactly 50% on two classes and accuracy is easy to read.
    The same ``seed`` always gives the same split; the three parts never share an example.
    """
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be three positive numbers that sum to 1, got {fractions}")
    by_class: dict[int, list[Example]] = {}
    for ex in examples:
        by_class.setdefault(int(ex.label), []).append(ex)
    if len(by_class) < 2:
        raise ValueError(f"a balanced split needs at least two classes, got labels {sorted(by_class)}")
    n = min(len(v) for v in by_class.values())
    n_train, n_val = round(n * fractions[0]), round(n * fractions[1])
    if min(n_train, n_val, n - n_train - n_val) < 1:
        raise ValueError(f"the smallest class has only {n} examples: too few to split by {fractions}")
    rng = random.Random(seed)
    parts: tuple[list[Example], list[Example], list[Example]] = ([], [], [])
    for label in sorted(by_class):
        chosen = rng.sample(by_class[label], n)
        parts[0].extend(chosen[:n_train])
        parts[1].extend(chosen[n_train : n_train + n_val])
        parts[2].extend(chosen[n_train + n_val :])
    for part in parts:
        rng.shuffle(part)
    return ExampleSplit(*parts)


class Batch(NamedTuple):
    """Right-padded token ids (B, T), the padding mask (B, T; True for real tokens), labels (B,)."""

    ids: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor


def pad_messages(sequences: Sequence[Sequence[int]], labels: Sequence[int], pad_id: int) -> Batch:
    """Pad messages' token-id lists on the right to the longest one, and say which positions are real.

    (For next-token (input, target) pairs, whose targets pad with ``IGNORE_INDEX``, see
    ``llmbook.finetune.pad_batch``.)
    """
    if len(sequences) == 0:
        raise ValueError("cannot pad an empty batch")
    if any(len(s) == 0 for s in sequences):
        raise ValueError("a sequence in the batch is empty: every example needs at least one token")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.bool)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = True
    return Batch(ids, mask, torch.as_tensor(list(labels), dtype=torch.long))


def encode_for_classification(tokenizer: Any, text: str, max_length: int, append_eot: bool = True) -> list[int]:
    """Token ids of ``text``, cut to fit ``max_length``, optionally ending with ``<|endoftext|>``.

    The end-of-text token gives every message the same final token, whose hidden state is
    the one the classifier reads: a fixed place to collect evidence from the whole text.
    """
    if max_length < 1 + append_eot:
        raise ValueError(f"max_length must be at least {1 + append_eot}, got {max_length}")
    if not text:
        raise ValueError("the text is empty: there is nothing to classify")
    ids = tokenizer.encode(text)
    if append_eot:
        return ids[: max_length - 1] + [tokenizer.eot_token]
    return ids[:max_length]


class ClassificationDataset(Dataset):
    """Texts encoded once by ``tokenizer``: the first tokens of each, then ``<|endoftext|>``.

    Each example is at most ``max_length`` tokens (see ``encode_for_classification``).
    ``collate(indices)`` makes a right-padded ``Batch``; padding uses ``pad_id`` (default:
    the tokenizer's end-of-text token), which the model never looks at.
    """

    def __init__(self, examples: Sequence[Example], tokenizer: Any, max_length: int,
                 append_eot: bool = True, pad_id: int | None = None) -> None:
        self.tokenizer, self.max_length, self.append_eot = tokenizer, max_length, append_eot
        self.pad_id = tokenizer.eot_token if pad_id is None else pad_id
        self.ids: list[list[int]] = []
        self.labels: list[int] = []
        for i, (text, label) in enumerate(examples):
            try:
                self.ids.append(encode_for_classification(tokenizer, text, max_length, append_eot))
            except ValueError as err:
                raise ValueError(f"example {i} ({text[:40]!r}): {err}") from None
            self.labels.append(int(label))

    def encode(self, text: str) -> list[int]:
        """A new text, encoded exactly as this dataset's examples were."""
        return encode_for_classification(self.tokenizer, text, self.max_length, self.append_eot)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[list[int], int]:
        return self.ids[i], self.labels[i]

    def collate(self, indices: Sequence[int] | torch.Tensor) -> Batch:
        idx = [int(i) for i in indices]
        return pad_messages([self.ids[i] for i in idx], [self.labels[i] for i in idx], self.pad_id)


# --------------------------------------------------------------------------- the model


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Position of each row's last real token in a right-padded (B, T) boolean mask."""
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a (batch, time) bool tensor, got {tuple(mask.shape)} {mask.dtype}")
    lengths = mask.sum(dim=1)
    if (lengths == 0).any():
        raise ValueError("a row of the mask has no real token: every example needs at least one")
    positions = torch.arange(mask.shape[1], device=mask.device)
    if not torch.equal(mask, positions[None, :] < lengths[:, None]):
        raise ValueError(
            "the mask is not right-padded (a padding position comes before a real token); "
            "pad on the right so that every real token sits before the padding"
        )
    return lengths - 1


def pool_last(hidden: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Each sequence's hidden state at its last real token: (B, T, C) -> (B, C)."""
    if mask is None:
        return hidden[:, -1, :]
    if mask.shape != hidden.shape[:2]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match the hidden states' {tuple(hidden.shape[:2])}")
    index = last_token_index(mask)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


class GPTClassifier(nn.Module):
    """A GPT with a ``n_classes``-way linear head on the hidden state of the last real token.

    The GPT is used as it is, not altered: the classifier asks it for its final hidden
    states (``GPT.hidden_states``, the forward pass without ``lm_head``), so the same model
    object still works as a language model. Fine-tuning changes its weights, so pass a copy
    (``copy.deepcopy``) to keep the original.
    """

    def __init__(self, gpt: GPT, n_classes: int = 2) -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
        self.gpt = gpt
        self.head = nn.Linear(gpt.config.n_embd, n_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Class scores (B, n_classes) for right-padded ``ids`` (B, T); ``mask`` marks real tokens."""
        hidden = self.gpt.hidden_states(ids)  # (B, T, n_embd), after the final layer norm
        return self.head(pool_last(hidden, mask))


def freeze(model: GPTClassifier, trainable: str = "last_block") -> ParamCounts:
    """Choose which parameters may learn, and count them.

    ``"head"``: only the new linear head (the GPT is a fixed feature extractor);
    ``"last_block"``: the head, the final layer norm and the last transformer block;
    ``"all"``: every parameter. Everything else gets ``requires_grad = False``, so the
    optimizer leaves it alone and backpropagation stops early, which saves time.
    """
    if trainable not in TRAINABLE_CHOICES:
        raise ValueError(f"trainable must be one of {TRAINABLE_CHOICES}, got {trainable!r}")
    if not isinstance(model, GPTClassifier):
        raise TypeError(f"freeze expects a GPTClassifier, got {type(model).__name__}")
    for p in model.parameters():
        p.requires_grad_(trainable == "all")
    if trainable != "all":
        learn: list[nn.Module] = [model.head]
        if trainable == "last_block":
            learn += [model.gpt.h[-1], model.gpt.ln_f]
        for module in learn:
            for p in module.parameters():
                p.requires_grad_(True)
    return count_trainable(model)


# --------------------------------------------------------------------------- evaluation


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def predict(model: GPTClassifier, dataset: ClassificationDataset, batch_size: int = 64,
            indices: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Predicted class and the class probabilities, (N,) and (N, n_classes), in dataset order."""
    order = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    was_training, device = model.training, _device(model)
    model.eval()
    probs = []
    try:
        for start in range(0, len(order), batch_size):
            batch = dataset.collate(order[start : start + batch_size])
            logits = model(batch.ids.to(device), batch.mask.to(device))
            probs.append(torch.softmax(logits.float(), dim=-1).cpu())
    finally:
        model.train(was_training)
    p = torch.cat(probs) if probs else torch.zeros(0, 2)
    return p.argmax(dim=-1), p


def accuracy(model: GPTClassifier, dataset: ClassificationDataset, batch_size: int = 64,
             max_examples: int | None = None) -> float:
    """Fraction of ``dataset`` classified correctly (evenly spaced examples if ``max_examples``)."""
    n = len(dataset)
    if n == 0:
        raise ValueError("cannot measure accuracy on an empty dataset")
    count = n if max_examples is None else min(n, max_examples)
    indices = torch.linspace(0, n - 1, count).round().long().tolist()
    preds, _ = predict(model, dataset, batch_size, indices)
    labels = torch.tensor([dataset.labels[i] for i in indices])
    return (preds == labels).float().mean().item()


def confusion_matrix(labels: Sequence[int] | torch.Tensor, preds: Sequence[int] | torch.Tensor,
                     n_classes: int = 2) -> torch.Tensor:
    """Counts (n_classes, n_classes): row = true class, column = predicted class."""
    labels, preds = torch.as_tensor(labels).long(), torch.as_tensor(preds).long()
    if labels.shape != preds.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and preds {tuple(preds.shape)} must have the same shape")
    out = torch.zeros(n_classes, n_classes, dtype=torch.long)
    out.index_put_((labels, preds), torch.ones_like(labels), accumulate=True)
    return out


def classify_text(model: GPTClassifier, dataset: ClassificationDataset, text: str,
                  labels: Sequence[str] = LABELS) -> tuple[str, float]:
    """The predicted label of one new text and the model's probability for it.

    ``dataset`` is any dataset the model was trained or evaluated on: the text is encoded
    the same way (tokenizer, truncation, end-of-text token).
    """
    ids = dataset.encode(text)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=_device(model)))
    model.train(was_training)
    p = torch.softmax(logits[0].float(), dim=-1)
    k = int(p.argmax())
    return labels[k], float(p[k])


# --------------------------------------------------------------------------- training


class ClassificationLoss:
    """Cross-entropy of the class scores, summed over the batch's examples (each counts once)."""

    def count(self, batch: Batch) -> int:
        return len(batch.labels)

    def loss(self, model: nn.Module, batch: Batch) -> Loss:
        logits = model(batch.ids, batch.mask)  # (B, n_classes)
        total = F.cross_entropy(logits.float(), batch.labels, reduction="sum")
        return Loss(total, {}, int(batch.mask.sum()))


def train_classifier(
    model: GPTClassifier,
    train_data: ClassificationDataset,
    val_data: ClassificationDataset | None = None,
    *,
    max_steps: int = 200,
    batch_size: int = 16,
    lr: float = 1e-3,
    warmup_steps: int = 10,
    weight_decay: float = 0.0,
    grad_clip: float | None = 1.0,
    eval_interval: int = 25,
    eval_examples: int | None = 256,
    seed: int = 0,
    precision: str = "auto",
    progress: bool = True,
) -> History:
    """Fine-tune ``model`` in place with cross-entropy on the class labels; return its history.

    The shared training step of ``llmbook.train.fit``: only parameters with
    ``requires_grad`` learn (see ``freeze``); batches come from a seeded shuffle of
    ``train_data`` (one pass per epoch); the learning rate warms up, then follows a cosine
    down to a tenth. Before training and every ``eval_interval`` steps the history
    records ``val_acc`` on the validation set and ``train_acc`` on a fixed sample of
    ``eval_examples`` training examples.
    """
    if len(train_data) == 0:
        raise ValueError("train_data is empty")
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("no parameter is trainable: call freeze(model, ...) with 'head', 'last_block' or 'all'")
    cfg = TrainConfig(max_steps=max_steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
                      weight_decay=weight_decay, grad_clip=grad_clip, eval_interval=eval_interval,
                      seed=seed, precision=precision, progress=progress)

    def accuracies() -> dict[str, float]:
        return {"train_acc": accuracy(model, train_data, max_examples=eval_examples),
                "val_acc": accuracy(model, val_data)}  # type: ignore[arg-type]

    return fit(model, ClassificationLoss(), cfg,
               sample=lambda k: batch_indices(len(train_data), batch_size, seed, k * batch_size),
               collate_batch=train_data.collate,
               measure=accuracies if val_data is not None else None, eval_at_start=True,
               data_key=fingerprint(train_data), desc="fine-tuning")


__all__ = [
    "LABELS",
    "SMS_SPAM_PATH",
    "TRAINABLE_CHOICES",
    "Batch",
    "ClassificationDataset",
    "ClassificationLoss",
    "Example",
    "ExampleSplit",
    "GPTClassifier",
    "accuracy",
    "balanced_split",
    "classify_text",
    "confusion_matrix",
    "encode_for_classification",
    "freeze",
    "last_token_index",
    "load_sms_spam",
    "pad_messages",
    "parse_sms_spam",
    "pool_last",
    "predict",
    "train_classifier",
]
