"""Instruction fine-tuning: the prompt format, loss masking, padding, answers (chapter 10).

A base model continues text; an instruction-tuned model answers. The difference is
made by training on examples written in one fixed layout, here the one of Stanford's
Alpaca (Taori et al., 2023)::

    ### Instruction:
    Rewrite the sentence in the passive voice.

    ### Input:
    The cat chased the mouse.

    ### Response:
    The mouse was chased by the cat.<|endoftext|>

Everything up to and including ``### Response:\\n`` is the *prompt*; the output and the
end-of-text token are the *response*. Training only asks the model to predict the
response: the targets under the prompt, and under the padding that fills out a batch,
are ``IGNORE_INDEX`` (-100), which ``GPT.forward``'s cross-entropy skips. The
end-of-text token is a target like any other, which is how the model learns to stop.

The pieces are kept general so that later chapters (preference tuning in chapter 11)
reuse them: ``format_prompt`` / ``encode_example`` for any prompt and response,
``pad_batch`` for any list of (input, target) pairs, ``generate_answers`` for any model.
LoRA lives in ``llmbook.lora`` and the answer metrics (ROUGE-L, token F1, exact match) in
``llmbook.metrics``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset

from llmbook import data
from llmbook.generate import generate
from llmbook.history import History
from llmbook.model import GPT, IGNORE_INDEX
from llmbook.step import NextTokenLoss, summed_loss
from llmbook.train import TrainConfig, eval_indices, fingerprint, fit

INSTRUCTION_DATA = "instruction/instruction-data.json"
"""Relative path (for ``llmbook.data.data_path``) of the 1,100 instruction/input/output records."""

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request."
)
"""Alpaca's opening sentence. Optional: on a 256-byte context it costs a third of the room."""

RESPONSE_HEADER = "### Response:\n"


class RecordSplit(NamedTuple):
    """Instruction records for training, validation and the final test."""

    train: list[dict[str, str]]
    val: list[dict[str, str]]
    test: list[dict[str, str]]


class Encoded(NamedTuple):
    """One tokenized example: ``ids`` = prompt + response (+ end-of-text), and the prompt's length."""

    ids: list[int]
    prompt_length: int


# --------------------------------------------------------------------------- data and format


def load_instruction_data(relpath: str = INSTRUCTION_DATA) -> list[dict[str, str]]:
    """The instruction records as dicts with the keys ``instruction``, ``input``, ``output``."""
    with open(data.data_path(relpath), encoding="utf-8") as handle:
        records = json.load(handle)
    for i, record in enumerate(records):
        missing = {"instruction", "input", "output"} - set(record)
        if missing:
            raise ValueError(f"record {i} of {relpath} lacks the keys {sorted(missing)}")
    return records


def split_data(entries: Sequence[Any], fractions: tuple[float, float, float] = (0.85, 0.05, 0.10),
               seed: int = 0) -> RecordSplit:
    """Shuffle with a fixed seed and cut into train / validation / test by ``fractions``.

    The shuffle uses its own ``random.Random(seed)``, so the split does not depend on
    anything else the notebook has drawn from the global generators.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers that sum to 1, got {fractions}")
    order = list(range(len(entries)))
    random.Random(seed).shuffle(order)
    n_train = round(fractions[0] * len(entries))
    n_val = round(fractions[1] * len(entries))
    pick = [entries[i] for i in order]
    return RecordSplit(pick[:n_train], pick[n_train:n_train + n_val], pick[n_train + n_val:])


def format_prompt(entry: Mapping[str, str], preamble: str | None = None) -> str:
    """The Alpaca-style prompt for one record, ending with ``### Response:\\n``.

    The ``### Input:`` section is left out when the record's input is empty, as in
    Alpaca. ``preamble`` (e.g. ``ALPACA_PREAMBLE``) goes first, followed by a blank line.
    """
    if "instruction" not in entry:
        raise KeyError("an instruction record needs an 'instruction' key (and optionally 'input')")
    parts = [preamble] if preamble else []
    parts.append(f"### Instruction:\n{entry['instruction']}")
    if entry.get("input"):
        parts.append(f"### Input:\n{entry['input']}")
    parts.append(RESPONSE_HEADER)
    return "\n\n".join(parts)


def format_example(entry: Mapping[str, str], preamble: str | None = None) -> str:
    """Prompt and reference response as one text (without the end-of-text token)."""
    return format_prompt(entry, preamble) + entry["output"]


def encode_example(prompt: str, response: str, tokenizer: Any, max_length: int | None = None,
                   add_eot: bool = True, truncate: bool = False) -> Encoded:
    """Token ids of ``prompt + response`` (+ end-of-text) and where the response starts.

    ``max_length`` is the model's context (``n_positions``): training feeds the sequence
    shifted by one, so up to ``max_length + 1`` ids fit. A longer example raises, or with
    ``truncate=True`` loses the end of its response (and its end-of-text token). A prompt
    that leaves no room for even one response token always raises.
    """
    prompt_ids = tokenizer.encode(prompt)
    response_ids = tokenizer.encode(response) + ([tokenizer.eot_token] if add_eot else [])
    ids = prompt_ids + response_ids
    if max_length is not None:
        if len(prompt_ids) >= max_length:
            raise ValueError(
                f"the prompt is {len(prompt_ids)} tokens but the context holds {max_length}: no room "
                f"is left for a response. Shorten the instruction/input or drop this example."
            )
        if len(ids) > max_length + 1:
            if not truncate:
                raise ValueError(
                    f"prompt + response is {len(ids)} tokens, more than the context ({max_length}) "
                    f"plus one; pass truncate=True to cut the response, or drop this example"
                )
            ids = ids[: max_length + 1]
    return Encoded(ids, len(prompt_ids))


def masked_targets(ids: Sequence[int], prompt_length: int,
                   mask_prompt: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets for one sequence, the prompt's targets set to -100.

    ``x = ids[:-1]`` and ``y = ids[1:]``: position t reads ``ids[t]`` and must predict
    ``ids[t+1]``. The targets that are prompt tokens (the first ``prompt_length - 1``)
    become ``IGNORE_INDEX``, so the first counted target is the response's first token,
    predicted from the end of the prompt.
    """
    if len(ids) < 2:
        raise ValueError("a training sequence needs at least two tokens (one input, one target)")
    if not 0 <= prompt_length <= len(ids):
        raise ValueError(f"prompt_length {prompt_length} is outside the sequence of {len(ids)} tokens")
    seq = torch.as_tensor(list(ids), dtype=torch.long)
    x, y = seq[:-1].clone(), seq[1:].clone()
    if mask_prompt:
        y[: max(prompt_length - 1, 0)] = IGNORE_INDEX
    return x, y


def pad_batch(pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], pad_id: int, length: int | None = None,
              mask_padding: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (x, y) pairs of different lengths, padding on the right to ``length``.

    Inputs are padded with ``pad_id`` (the end-of-text token: any id works, because the
    causal mask keeps real tokens from seeing the padding after them); targets with
    ``IGNORE_INDEX`` so padding adds nothing to the loss. ``mask_padding=False`` pads the
    targets with ``pad_id`` instead, to show what goes wrong without the mask.
    """
    if not pairs:
        raise ValueError("pad_batch needs at least one (x, y) pair")
    width = max(len(x) for x, _ in pairs) if length is None else length
    X = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    Y = torch.full((len(pairs), width), IGNORE_INDEX if mask_padding else pad_id, dtype=torch.long)
    for row, (x, y) in enumerate(pairs):
        if len(x) != len(y):
            raise ValueError(f"pair {row}: x has {len(x)} tokens but y has {len(y)}")
        if len(x) > width:
            raise ValueError(f"pair {row} has {len(x)} tokens, longer than the padded length {width}")
        X[row, : len(x)] = x
        Y[row, : len(y)] = y
    return X, Y


class InstructionDataset(Dataset):
    """Instruction records as fixed-length, padded, loss-masked (x, y) pairs.

    Every item has the same length (``pad_to``, by default the longest example), so
    ``llmbook.train.train`` can stack items directly. ``batch(indices)`` pads only to the
    longest example of that batch instead, which is cheaper for a hand-written loop.
    Examples longer than ``max_length`` (the context) are dropped, or truncated with
    ``too_long="truncate"``; ``dropped`` counts them.
    """

    def __init__(self, entries: Sequence[Mapping[str, str]], tokenizer: Any, max_length: int,
                 preamble: str | None = None, mask_prompt: bool = True, mask_padding: bool = True,
                 too_long: str = "drop", pad_to: int | None = None) -> None:
        if too_long not in ("drop", "truncate", "error"):
            raise ValueError(f"too_long must be 'drop', 'truncate' or 'error', got {too_long!r}")
        self.tokenizer, self.pad_id = tokenizer, tokenizer.eot_token
        self.mask_prompt, self.mask_padding = mask_prompt, mask_padding
        self.entries: list[Mapping[str, str]] = []
        self.encoded: list[Encoded] = []
        self.dropped = 0
        for entry in entries:
            prompt = format_prompt(entry, preamble)
            try:
                enc = encode_example(prompt, entry["output"], tokenizer, max_length,
                                     truncate=too_long == "truncate")
            except ValueError:
                if too_long == "error":
                    raise
                self.dropped += 1
                continue
            self.entries.append(entry)
            self.encoded.append(enc)
        if not self.encoded:
            raise ValueError(f"no example fits a context of {max_length} tokens")
        longest = max(len(e.ids) for e in self.encoded) - 1
        if pad_to is not None and pad_to < longest:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest example ({longest} tokens)")
        self.pad_to = pad_to or longest

    def __len__(self) -> int:
        return len(self.encoded)

    def pair(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Example ``i`` unpadded: its (x, y) with the prompt masked (if asked)."""
        ids, prompt_length = self.encoded[i]
        return masked_targets(ids, prompt_length, self.mask_prompt)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        X, Y = pad_batch([self.pair(i)], self.pad_id, self.pad_to, self.mask_padding)
        return X[0], Y[0]

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Examples padded to the longest among them (dynamic padding)."""
        return pad_batch([self.pair(int(i)) for i in indices], self.pad_id, None, self.mask_padding)

    def response_tokens(self) -> int:
        """How many targets count towards the loss over the whole dataset."""
        return sum(int((self.pair(i)[1] != IGNORE_INDEX).sum()) for i in range(len(self)))


# --------------------------------------------------------------------------- training


class LengthGroupedBatches:
    """Batches of indices in which examples have similar lengths: ``batches(k)`` is batch k.

    Each epoch is a seeded random order, cut into pools of ``pool * batch_size``
    examples; a pool is sorted by length and cut into batches, and the epoch's batches
    are shuffled. A batch then pads to little more than its own examples' length,
    which on a byte-level model roughly halves the work, while which examples meet
    in a batch stays random from epoch to epoch. Batch k depends only on k and the seed,
    so a resumed run sees the same batches as an uninterrupted one.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, pool: int = 16) -> None:
        if batch_size < 1 or pool < 1:
            raise ValueError(f"batch_size and pool must be positive, got {batch_size} and {pool}")
        if not lengths:
            raise ValueError("there are no examples to batch")
        self.lengths, self.batch_size, self.seed, self.pool = list(lengths), batch_size, seed, pool
        self._epoch: tuple[int, list[list[int]]] = (-1, [])

    def epoch(self, e: int) -> list[list[int]]:
        """All batches of epoch ``e``, in the order they are drawn."""
        if self._epoch[0] != e:
            rng = random.Random(self.seed * 1_000_003 + e)
            order = list(range(len(self.lengths)))
            rng.shuffle(order)
            size, batches = self.pool * self.batch_size, []
            for start in range(0, len(order), size):
                chunk = sorted(order[start:start + size], key=lambda i: self.lengths[i])
                batches += [chunk[b:b + self.batch_size] for b in range(0, len(chunk), self.batch_size)]
            rng.shuffle(batches)
            self._epoch = (e, batches)
        return self._epoch[1]

    def __call__(self, k: int) -> list[int]:
        per_epoch = len(self.epoch(0))
        return self.epoch(k // per_epoch)[k % per_epoch]


@torch.no_grad()
def masked_loss(model: GPT, dataset: InstructionDataset, batch_size: int = 16,
                limit: int | None = None) -> float:
    """Mean loss per counted target (response tokens only, unless the dataset counts more).

    Every counted token weighs the same, whatever batch it falls in; ``limit`` uses only
    that many evenly spaced examples.
    """
    indices = eval_indices(len(dataset), 1, limit)
    batches = [dataset.batch(chunk.tolist()) for chunk in indices.split(batch_size)]
    total, count = summed_loss(model, NextTokenLoss(), batches)
    return total / max(count, 1)


def finetune(model: GPT, train_data: InstructionDataset, val_data: InstructionDataset | None = None, *,
             steps: int, batch_size: int = 8, lr: float = 3e-3, min_lr: float | None = None,
             warmup_steps: int = 20, weight_decay: float = 0.0, grad_clip: float | None = 1.0,
             grad_accum_steps: int = 1, eval_interval: int | None = None, eval_examples: int = 64,
             seed: int = 0, precision: str = "auto", progress: bool = True, pool: int = 16) -> History:
    """Train ``model`` in place on loss-masked instruction data and return its ``History``.

    The shared training step of ``llmbook.train.fit`` (AdamW, warmup + cosine, clipping,
    precision, the loss averaged over every response token of the step), with batches
    drawn by ``LengthGroupedBatches`` (``pool`` batches' worth of examples sorted by length
    at a time; ``pool=1`` draws plain random batches) and padded only to their longest
    example. Only
    parameters with ``requires_grad`` train, so after ``apply_lora`` this trains the LoRA
    matrices alone. ``eval_interval`` (default: once, at the end) records the masked loss
    on up to ``eval_examples`` training and validation examples.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    cfg = TrainConfig(max_steps=steps, batch_size=batch_size, lr=lr, min_lr=min_lr,
                      warmup_steps=warmup_steps, weight_decay=weight_decay, grad_clip=grad_clip,
                      grad_accum_steps=grad_accum_steps, eval_interval=eval_interval or steps,
                      seed=seed, precision=precision, progress=progress)

    def losses() -> dict[str, float]:
        out = {"eval_train_loss": masked_loss(model, train_data, limit=eval_examples)}
        if val_data is not None:
            out["val_loss"] = masked_loss(model, val_data, limit=eval_examples)
        return out

    batches = LengthGroupedBatches([len(e.ids) for e in train_data.encoded], batch_size, seed, pool)
    return fit(model, NextTokenLoss(), cfg, sample=lambda k: torch.tensor(batches(k)),
               collate_batch=lambda idx: train_data.batch(idx.tolist()), measure=losses,
               data_key=fingerprint(train_data.encoded), desc="fine-tuning")


# --------------------------------------------------------------------------- answers


def generate_answers(model: GPT, tokenizer: Any, prompts: Sequence[str | Mapping[str, str]],
                     max_new_tokens: int = 64, batch_size: int = 16, preamble: str | None = None,
                     return_stopped: bool = False,
                     **generate_kwargs: Any) -> list[str] | tuple[list[str], list[bool]]:
    """Generate a response to each prompt, stopping at end-of-text; returns the texts.

    ``prompts`` are formatted prompt strings or instruction records (formatted with
    ``format_prompt``). Prompts are sorted by length and generated in batches (with the
    KV cache, greedy unless ``generate_kwargs`` say otherwise, e.g. ``temperature=0.8``);
    the answers come back in the original order, end-of-text and surrounding spaces removed.
    A batch whose longest prompt leaves less than ``max_new_tokens`` of context gets
    only the room that is left. ``return_stopped=True`` also returns, for each answer,
    whether the model ended it itself (with end-of-text) rather than running out of room.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    texts = [p if isinstance(p, str) else format_prompt(p, preamble) for p in prompts]
    encoded = [tokenizer.encode(t) for t in texts]
    limit = model.config.n_positions
    for i, ids in enumerate(encoded):
        if len(ids) >= limit:
            raise ValueError(f"prompt {i} is {len(ids)} tokens; the context holds {limit}, "
                             f"leaving no room for an answer. Shorten or skip it.")
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    generate_kwargs.setdefault("stop_token", tokenizer.eot_token)
    generate_kwargs.setdefault("use_cache", True)
    answers: list[str] = [""] * len(encoded)
    stopped: list[bool] = [False] * len(encoded)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = [encoded[i] for i in chunk]
        room = min(max_new_tokens, limit - max(len(ids) for ids in batch))
        outputs = generate(model, batch, room, **generate_kwargs)
        for i, ids, out in zip(chunk, batch, outputs, strict=True):
            new = out[len(ids):]
            if tokenizer.eot_token in new:
                new, stopped[i] = new[: new.index(tokenizer.eot_token)], True
            answers[i] = tokenizer.decode(new).strip()
    return (answers, stopped) if return_stopped else answers


__all__ = [
    "ALPACA_PREAMBLE",
    "INSTRUCTION_DATA",
    "RESPONSE_HEADER",
    "Encoded",
    "InstructionDataset",
    "LengthGroupedBatches",
    "RecordSplit",
    "encode_example",
    "finetune",
    "format_example",
    "format_prompt",
    "generate_answers",
    "load_instruction_data",
    "masked_loss",
    "masked_targets",
    "pad_batch",
    "split_data",
]
