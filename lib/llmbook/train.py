"""The training loop: batches, evaluation, checkpoints and resuming (chapter 8).

``fit`` is the one loop of the course. It draws each step's batch, hands it to the
shared step (``llmbook.step.TrainStep``: precision, token-weighted loss, clipping,
schedule), records a ``History``, evaluates, shows progress and writes checkpoints.
``train`` is ``fit`` for language modelling on a dataset of (input, target) pairs; the
classification, instruction and preference loops of chapters 9–11 are ``fit`` with
their own objective and batches.

Batches are a function of the seed and the step alone (``batch_indices``), so a run
resumed from a checkpoint sees exactly the batches the uninterrupted run would have
seen and ends with the same weights; ``fit`` refuses to resume when the settings that
decide those batches or the schedule (or the data) have changed.

The same call trains data-parallel across processes (chapter 12): started by
``torchrun`` with a process group initialised (``llmbook.distributed.setup``), the step
wraps the model in ``DistributedDataParallel`` and each rank takes an equal, disjoint
slice of every batch, so N processes with ``batch_size=B`` compute what one process
computes with ``batch_size=B``, and end with the same weights.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from llmbook import distributed
from llmbook.checkpoint import load_checkpoint, load_model_tensors, save_checkpoint
from llmbook.history import History
from llmbook.model import GPT
from llmbook.precision import check_precision
from llmbook.step import NextTokenLoss, Objective, TrainStep, summed_loss


class PairDataset(Protocol):
    """What ``train`` and ``evaluate`` read: a sized dataset of (input, target) pairs."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 16  # sequences per micro-batch, summed over all processes when data-parallel
    lr: float = 1e-3
    min_lr: float | None = None  # end of the cosine; default lr / 10
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float | None = 1.0
    grad_accum_steps: int = 1
    eval_interval: int = 100
    eval_batches: int = 20
    seed: int = 0
    precision: str = "auto"  # "auto", "fp32", "bf16" or "fp16" (see llmbook.precision)
    progress: bool = True
    checkpoint_path: str | None = None  # where to save; "{step}" in it keeps one file per save
    checkpoint_interval: int | None = None  # default: at the end only

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.batch_size < 1 or self.grad_accum_steps < 1:
            raise ValueError("max_steps, batch_size and grad_accum_steps must be positive")
        check_precision(self.precision)
        self.betas = (float(self.betas[0]), float(self.betas[1]))

    @property
    def end_lr(self) -> float:
        return self.min_lr if self.min_lr is not None else self.lr / 10


RESUME_FIELDS = ("max_steps", "batch_size", "grad_accum_steps", "seed", "lr", "min_lr",
                 "warmup_steps", "weight_decay", "betas", "grad_clip")
"""The settings a resumed run must share with the checkpoint: they decide which batches
each step sees and the learning-rate schedule, so changing one silently breaks "resume
equals the uninterrupted run"."""


@functools.lru_cache(maxsize=2)
def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))


def batch_indices(n: int, batch_size: int, seed: int, first_sample: int) -> torch.Tensor:
    """Dataset indices for the batch starting at sample number ``first_sample``.

    Samples are numbered across epochs; epoch e is ``randperm(n)`` seeded with seed + e.
    The batch depends only on its arguments, which is what makes resuming exact.
    """
    out, have, pos = [], 0, first_sample
    while have < batch_size:
        epoch, offset = divmod(pos, n)
        take = min(batch_size - have, n - offset)
        out.append(_epoch_order(n, seed, epoch)[offset : offset + take])
        have, pos = have + take, pos + take
    return torch.cat(out)


def collate(dataset: PairDataset, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the (input, target) pairs ``dataset[i]`` for ``i`` in ``indices`` into a batch."""
    pairs = [dataset[int(i)] for i in indices]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def fingerprint(items: Any, samples: int = 16) -> str:
    """A short hash of a dataset (its length and evenly spaced items) to recognise it again.

    Enough to notice a resumed run pointed at other data; cheap even for big datasets.
    """
    n = len(items)
    h = hashlib.sha256(str(n).encode())
    for i in sorted({round(k * (n - 1) / max(samples - 1, 1)) for k in range(samples)} if n else ()):
        _feed(h, items[i])
    return h.hexdigest()[:16]


def _feed(h: Any, item: Any) -> None:
    if isinstance(item, torch.Tensor):
        h.update(item.detach().cpu().contiguous().numpy().tobytes())
    elif isinstance(item, (tuple, list)):
        for part in item:
            _feed(h, part)
    else:
        h.update(repr(item).encode())


def eval_indices(n: int, batch_size: int, max_batches: int | None) -> torch.Tensor:
    """The evenly spaced examples an evaluation uses: the same ones every call."""
    count = n if max_batches is None else min(n, max_batches * batch_size)
    return torch.linspace(0, n - 1, count).round().long()


@torch.no_grad()
def evaluate(model: nn.Module, dataset: PairDataset, batch_size: int = 16, max_batches: int | None = 20,
             precision: str = "auto") -> float:
    """Mean next-token loss per counted target over evenly spaced examples of ``dataset``.

    Every counted target (not ``IGNORE_INDEX``) weighs the same, whichever batch it is in.
    In a data-parallel run every rank must call it: the examples are dealt out across the
    ranks and the sums added up, so every rank gets the loss over all of them.
    """
    indices = eval_indices(len(dataset), batch_size, max_batches)
    indices = indices[distributed.rank()::distributed.world_size()]
    batches = [collate(dataset, chunk) for chunk in indices.split(batch_size)]
    total, count = distributed.sum_across_ranks(*summed_loss(model, NextTokenLoss(), batches, precision))
    if count == 0:
        raise ValueError("the evaluated examples have no counted target (all IGNORE_INDEX)")
    return total / count


def fit(model: nn.Module, objective: Objective, cfg: TrainConfig, *,
        sample: Callable[[int], torch.Tensor], collate_batch: Callable[[torch.Tensor], Any],
        measure: Callable[[], dict[str, float]] | None = None, eval_at_start: bool = False,
        data_key: str = "", resume_from: str | Path | None = None,
        allow_changes: Collection[str] = (), desc: str = "training") -> History:
    """Train ``model`` in place towards ``objective`` and return its ``History``.

    ``sample(k)`` gives the dataset indices of micro-batch number k (k = step ×
    ``grad_accum_steps`` + micro-step; the global batch when data-parallel, of which each
    rank takes its slice) and ``collate_batch(indices)`` turns them into what the objective
    reads. ``measure()`` returns named measurements (e.g. ``{"val_loss": 1.9}``), recorded
    every ``cfg.eval_interval`` steps, at the end, and first at step 0 if ``eval_at_start``.
    ``resume_from`` continues from a checkpoint of an earlier call and refuses a changed
    ``RESUME_FIELDS`` setting or other data (``data_key``), unless named in ``allow_changes``.
    The model ends in the training mode it started in.
    """
    if isinstance(model, DistributedDataParallel):
        raise TypeError("pass the bare model; the training step wraps it in DistributedDataParallel itself")
    world, rank = distributed.world_size(), distributed.rank()
    if cfg.batch_size % world:
        raise ValueError(
            f"batch_size={cfg.batch_size} is the batch summed over all {world} processes and must be "
            f"a multiple of {world}, so that each process gets an equal share")
    if cfg.checkpoint_path and not isinstance(model, GPT):
        raise TypeError(f"checkpoints hold a GPT; this loop trains a {type(model).__name__}")
    was_training = model.training
    stepper = TrainStep(model, objective, lr=cfg.lr, min_lr=cfg.end_lr, max_steps=cfg.max_steps,
                        warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, betas=cfg.betas,
                        grad_clip=cfg.grad_clip, precision=cfg.precision)
    history, start = History(), 0
    if resume_from is not None:
        history, start = _resume(resume_from, model, stepper, cfg, data_key, allow_changes)
    if measure is not None and eval_at_start and start == 0:
        history.record_eval(0, measure())
    began = time.perf_counter() - history.seconds
    bar = tqdm(range(start, cfg.max_steps), initial=start, total=cfg.max_steps,
               disable=not cfg.progress or rank != 0, desc=desc, unit="step")
    for step in bar:
        micro = [collate_batch(distributed.shard(sample(step * cfg.grad_accum_steps + m), rank, world))
                 for m in range(cfg.grad_accum_steps)]
        stats = stepper.step(step, micro)
        done = step + 1
        history.record_step(done, stats.loss, stats.lr, stats.logs)
        history.tokens_seen += stats.tokens
        if measure is not None and cfg.eval_interval and (done % cfg.eval_interval == 0
                                                          or done == cfg.max_steps):
            history.record_eval(done, measure())
            shown = {k: f"{v[-1]:.3f}" for k, v in history.evals.items() if k.startswith("val")}
            bar.set_postfix({"loss": f"{stats.loss:.3f}", **shown})
        elif done % 10 == 0:
            bar.set_postfix(loss=f"{stats.loss:.3f}")
        history.seconds = time.perf_counter() - began
        if cfg.checkpoint_path and (done == cfg.max_steps or (cfg.checkpoint_interval
                                                               and done % cfg.checkpoint_interval == 0)):
            if rank == 0:  # the ranks hold identical weights: one file is enough
                extra: dict[str, Any] = {"train_config": asdict(cfg), "data": data_key,
                                         "grad_scaler": stepper.scaler.state_dict()}
                if world > 1:
                    extra["world_size"] = world
                save_checkpoint(str(cfg.checkpoint_path).format(step=done), model,  # type: ignore[arg-type]
                                stepper.optimizer, step=done, history=history, extra=extra)
            distributed.barrier()  # no rank runs ahead (or returns) before the file exists
    bar.close()
    model.train(was_training)
    return history


def _resume(path: str | Path, model: nn.Module, stepper: TrainStep, cfg: TrainConfig, data_key: str,
            allow_changes: Collection[str]) -> tuple[History, int]:
    ckpt = load_checkpoint(path)
    saved = ckpt.extra.get("train_config")
    unknown = set(allow_changes) - {*RESUME_FIELDS, "data"}
    if unknown:
        raise ValueError(f"allow_changes names {sorted(unknown)}; it takes fields of {RESUME_FIELDS} or 'data'")
    if saved is not None:
        now = asdict(cfg)
        for name in RESUME_FIELDS:
            old, new = saved.get(name), now[name]
            if name == "betas":
                old, new = list(old or ()), list(new)
            if old != new and name not in allow_changes:
                raise ValueError(
                    f"cannot resume from {path}: it was trained with {name}={old!r}, this run asks for "
                    f"{name}={new!r}. A resumed run must continue the same schedule on the same batches; "
                    f"pass {name}={old!r}, or allow_changes={{{name!r}}} to go on with the new value anyway")
        old_data = ckpt.extra.get("data", "")
        if old_data and data_key and old_data != data_key and "data" not in allow_changes:
            raise ValueError(
                f"cannot resume from {path}: it was trained on other data (fingerprint {old_data}, "
                f"this run's is {data_key}). Pass the same training data, or allow_changes={{'data'}}")
    device = next(model.parameters()).device
    load_model_tensors(model, {k: v.to(device) for k, v in ckpt.model_state.items()})  # type: ignore[arg-type]
    ckpt.restore_optimizer(stepper.optimizer)
    ckpt.restore_rng()
    if ckpt.extra.get("grad_scaler"):
        stepper.scaler.load_state_dict(ckpt.extra["grad_scaler"])
    return History.from_dict(ckpt.history), ckpt.step


def train(
    model: GPT,
    train_data: PairDataset,
    val_data: PairDataset | None = None,
    config: TrainConfig | None = None,
    resume_from: str | Path | None = None,
    allow_changes: Collection[str] = (),
    desc: str = "training",
    **overrides: Any,
) -> History:
    """Train a language model in place on (input, target) pairs and return its ``History``.

    ``overrides`` replace fields of ``config`` (``train(model, ds, max_steps=200)``).
    ``resume_from`` continues from a checkpoint written by an earlier call (see ``fit``).
    The loss is the mean over every counted target of the step (targets that are not
    ``IGNORE_INDEX``), however the batch is split into micro-batches or processes.

    Under ``torchrun`` with an initialised process group of several ranks, pass the bare
    model on every rank: each rank takes an equal slice of every batch of ``batch_size``
    sequences, only rank 0 shows progress and writes checkpoints, and every rank returns
    the same weights and the same losses.
    """
    cfg = TrainConfig(**{**(asdict(config) if config else {}), **overrides})
    if len(train_data) < 1:
        raise ValueError("train_data is empty")
    n = len(train_data)

    def losses() -> dict[str, float]:
        assert val_data is not None
        return {name: evaluate(model, data, cfg.batch_size, cfg.eval_batches, cfg.precision)
                for name, data in (("eval_train_loss", train_data), ("val_loss", val_data))}

    return fit(model, NextTokenLoss(), cfg,
               sample=lambda k: batch_indices(n, cfg.batch_size, cfg.seed, k * cfg.batch_size),
               collate_batch=functools.partial(collate, train_data),
               measure=losses if val_data is not None else None,
               data_key=fingerprint(train_data), resume_from=resume_from, allow_changes=allow_changes,
               desc=desc)


__all__ = ["RESUME_FIELDS", "PairDataset", "TrainConfig", "batch_indices", "collate", "eval_indices",
           "evaluate", "fingerprint", "fit", "train"]
