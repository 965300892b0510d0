"""The training loop: AdamW, warmup + cosine, clipping, mixed precision, evaluation (chapter 8).

``train`` takes a model and two datasets of (input, target) pairs and returns a
``History`` that plots itself. Batches are drawn from a seeded permutation that
depends only on the seed and the step, so a run resumed from a checkpoint sees exactly
the batches the uninterrupted run would have seen and ends with the same weights.

The same call trains data-parallel across processes (chapter 12): started by
``torchrun`` with a process group initialised (``llmbook.distributed.setup``), ``train``
wraps the model in ``DistributedDataParallel`` and each rank takes an equal, disjoint
slice of every batch, so N processes with ``batch_size=B`` compute what one process
computes with ``batch_size=B``, and end with the same weights.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from llmbook import distributed
from llmbook.checkpoint import load_checkpoint, load_model_tensors, save_checkpoint
from llmbook.device import autocast
from llmbook.model import GPT


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
    precision: str = "auto"  # "auto" (bf16 on GPUs that have it), "fp32" or "bf16"
    progress: bool = True
    checkpoint_path: str | None = None  # where to save; "{step}" in it keeps one file per save
    checkpoint_interval: int | None = None  # default: at the end only

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.batch_size < 1 or self.grad_accum_steps < 1:
            raise ValueError("max_steps, batch_size and grad_accum_steps must be positive")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        self.betas = tuple(self.betas)


@dataclass
class History:
    """What happened during training: per-step loss and learning rate, periodic evaluations."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    tokens_seen: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> History:
        return cls(**d) if d else cls()

    @property
    def final_val_loss(self) -> float:
        if not self.val_loss:
            raise ValueError("no validation loss was recorded (pass val_data and eval_interval)")
        return self.val_loss[-1]

    def plot(self, ax=None, title: str | None = None, smooth: int = 20):
        """Loss curves: the noisy per-step training loss, and train/val at each evaluation."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4))
        if self.steps:
            ax.plot(self.steps, self.train_loss, color="tab:blue", alpha=0.25, lw=0.8, label="train (per step)")
            if len(self.train_loss) > smooth:
                k = torch.ones(smooth) / smooth
                smoothed = torch.conv1d(torch.tensor(self.train_loss)[None, None], k[None, None])[0, 0]
                ax.plot(self.steps[smooth - 1:], smoothed.tolist(), color="tab:blue", lw=1.2,
                        label=f"train (mean of {smooth} steps)")
        if self.eval_steps:
            ax.plot(self.eval_steps, self.eval_train_loss, "o-", color="tab:blue", ms=3, label="train (eval)")
            ax.plot(self.eval_steps, self.val_loss, "o-", color="tab:orange", ms=3, label="validation")
        ax.set_xlabel("training step")
        ax.set_ylabel("cross-entropy loss (nats per token)")
        ax.set_title(title or "Loss during training")
        ax.grid(alpha=0.3)
        ax.legend()
        return ax


def configure_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.95)
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (weights, embeddings), not on biases or norms.

    Decay pulls weights towards zero; that regularises matrices, but on a bias or a
    layer-norm gain it only fights the model. Fused AdamW is used on CUDA.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = bool(params) and params[0].device.type == "cuda"
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)


def lr_at(step: int, max_steps: int, lr: float, min_lr: float, warmup_steps: int) -> float:
    """Linear warmup for ``warmup_steps``, then a cosine from ``lr`` down to ``min_lr``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


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


def collate(dataset: Dataset, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = [dataset[int(i)] for i in indices]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


@torch.no_grad()
def evaluate(model: GPT, dataset: Dataset, batch_size: int = 16, max_batches: int | None = 20,
             precision: str = "auto") -> float:
    """Mean loss over evenly spaced examples of ``dataset`` (the same ones every call)."""
    total, weight = _loss_sum(model, dataset, _eval_indices(dataset, batch_size, max_batches), batch_size, precision)
    return total / weight


def _eval_indices(dataset: Dataset, batch_size: int, max_batches: int | None) -> torch.Tensor:
    n = len(dataset)
    count = n if max_batches is None else min(n, max_batches * batch_size)
    return torch.linspace(0, n - 1, count).round().long()


@torch.no_grad()
def _loss_sum(model: GPT, dataset: Dataset, indices: torch.Tensor, batch_size: int,
              precision: str) -> tuple[float, int]:
    """Sum of per-example mean losses over ``indices``, and how many examples that was."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, weight = 0.0, 0
    try:
        for chunk in indices.split(batch_size):
            x, y = (t.to(device) for t in collate(dataset, chunk))
            with precision_context(device, precision):
                _, loss = model(x, y)
            total += loss.item() * len(chunk)
            weight += len(chunk)
    finally:
        model.train(was_training)
    return total, weight


def _evaluate_across_ranks(model: GPT, dataset: Dataset, batch_size: int, max_batches: int | None,
                           precision: str) -> float:
    """``evaluate``, with the examples dealt out across ranks and the sums all-reduced."""
    if not distributed.is_distributed():
        return evaluate(model, dataset, batch_size, max_batches, precision)
    indices = _eval_indices(dataset, batch_size, max_batches)[distributed.rank()::distributed.world_size()]
    total, weight = distributed.sum_across_ranks(*_loss_sum(model, dataset, indices, batch_size, precision))
    return total / weight


def precision_context(device: torch.device | str, precision: str):
    """fp32: nothing; bf16: autocast to bf16 on any device; auto: whatever the device is good at.

    Under autocast, matrix multiplications (the linear layers) run in bf16, operations
    that need the range or the digits (the loss) run in fp32, and the rest follow their
    inputs; the weights themselves, and the optimizer's update, stay fp32 (chapter 12).
    """
    device = torch.device(device)
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return autocast(device)


_precision_context = precision_context  # the name chapter 8 and older code use


def train(
    model: GPT,
    train_data: Dataset,
    val_data: Dataset | None = None,
    config: TrainConfig | None = None,
    resume_from: str | Path | None = None,
    **overrides: Any,
) -> History:
    """Train ``model`` in place and return its ``History``.

    ``overrides`` replace fields of ``config`` (``train(model, ds, max_steps=200)``).
    ``resume_from`` continues from a checkpoint written by an earlier call.

    Under ``torchrun`` with an initialised process group of several ranks, pass the bare
    model on every rank: ``train`` wraps it in ``DistributedDataParallel`` (which first
    copies rank 0's weights to every rank), splits each batch of ``batch_size`` sequences
    evenly across the ranks, averages the logged loss over them, and only rank 0 shows
    progress and writes checkpoints. Every rank returns the same weights and the same losses.
    """
    cfg = TrainConfig(**{**(asdict(config) if config else {}), **overrides})
    if isinstance(model, DistributedDataParallel):
        raise TypeError("pass the bare model to train(); it wraps the model in DistributedDataParallel itself")
    world, rank = distributed.world_size(), distributed.rank()
    if cfg.batch_size % world:
        raise ValueError(
            f"batch_size={cfg.batch_size} is the batch summed over all {world} processes and must be a "
            f"multiple of {world}, so that each process gets an equal share"
        )
    min_lr = cfg.min_lr if cfg.min_lr is not None else cfg.lr / 10
    device = next(model.parameters()).device
    optimizer = configure_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas)
    history, start = History(), 0
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from)
        load_model_tensors(model, {k: v.to(device) for k, v in ckpt.model_state.items()})
        ckpt.restore_optimizer(optimizer)
        ckpt.restore_rng()
        history, start = History.from_dict(ckpt.history), ckpt.step
    if len(train_data) < 1:
        raise ValueError("train_data is empty")

    model.train()
    # Data-parallel: DDP copies rank 0's weights to every rank now, and from then on
    # averages the gradients across ranks during backward().
    forward = model
    if distributed.is_distributed():
        ids = [device.index if device.index is not None else torch.cuda.current_device()] \
            if device.type == "cuda" else None
        forward = DistributedDataParallel(model, device_ids=ids)
    optimizer.zero_grad(set_to_none=True)  # gradients left by earlier backward() calls are not ours
    began = time.perf_counter() - history.seconds
    bar = tqdm(range(start, cfg.max_steps), initial=start, total=cfg.max_steps,
               disable=not cfg.progress or rank != 0, desc="training", unit="step")
    for step in bar:
        lr = lr_at(step, cfg.max_steps, cfg.lr, min_lr, cfg.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        step_loss = 0.0
        for micro in range(cfg.grad_accum_steps):
            first = (step * cfg.grad_accum_steps + micro) * cfg.batch_size
            indices = batch_indices(len(train_data), cfg.batch_size, cfg.seed, first)
            x, y = collate(train_data, distributed.shard(indices, rank, world))
            x, y = x.to(device), y.to(device)
            # Only the last micro-batch's backward() needs to all-reduce the gradients.
            last = micro == cfg.grad_accum_steps - 1
            with contextlib.nullcontext() if forward is model or last else forward.no_sync():
                with precision_context(device, cfg.precision):
                    _, loss = forward(x, y)
                (loss / cfg.grad_accum_steps).backward()
            step_loss += loss.item() / cfg.grad_accum_steps
            history.tokens_seen += x.numel() * world
        step_loss = distributed.mean_across_ranks(step_loss)
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        history.steps.append(step + 1)
        history.train_loss.append(step_loss)
        history.lr.append(lr)

        done = step + 1
        if val_data is not None and cfg.eval_interval and (done % cfg.eval_interval == 0 or done == cfg.max_steps):
            history.eval_steps.append(done)
            for dataset, losses in ((train_data, history.eval_train_loss), (val_data, history.val_loss)):
                losses.append(_evaluate_across_ranks(model, dataset, cfg.batch_size, cfg.eval_batches, cfg.precision))
            bar.set_postfix(loss=f"{step_loss:.3f}", val=f"{history.val_loss[-1]:.3f}")
        elif done % 10 == 0:
            bar.set_postfix(loss=f"{step_loss:.3f}")
        history.seconds = time.perf_counter() - began
        if cfg.checkpoint_path and (
            done == cfg.max_steps or (cfg.checkpoint_interval and done % cfg.checkpoint_interval == 0)
        ):
            if rank == 0:  # the ranks hold identical weights: one file is enough
                extra = {"train_config": asdict(cfg)} | ({"world_size": world} if world > 1 else {})
                save_checkpoint(str(cfg.checkpoint_path).format(step=done), model, optimizer, step=done,
                                history=history, extra=extra)
            distributed.barrier()  # no rank runs ahead (or returns) before the file exists
    bar.close()
    model.eval()
    return history
