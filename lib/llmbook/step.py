"""One optimisation step, shared by every training loop of the course (chapters 8–12).

Pretraining, classification, instruction tuning and preference tuning differ in what
a batch holds and in what the loss is, not in how a step is taken. So each loop hands
``TrainStep`` an *objective* (how to count and score a batch) and the step does the rest,
the same way every time:

1. set the learning rate from the schedule (linear warmup, then a cosine);
2. for each micro-batch: forward under the precision policy (``llmbook.precision``),
   the loss as a *sum* over counted targets, ``backward()``;
3. unscale (fp16 only), clip the gradient norm, take the optimizer step, clear gradients.

**Why sums.** A batch's loss is the mean over its *counted* targets (the tokens that are
not ``IGNORE_INDEX``, or the examples of a classifier). When a batch is cut into
micro-batches (gradient accumulation) or dealt out across processes (data parallelism),
the pieces can hold different numbers of counted targets. Averaging the pieces' means
would then weigh a target in a small piece more than one in a big piece, and the
gradient would not be the big batch's. Instead every piece contributes its *sum*, divided
by the count of the whole batch, known before the first forward pass because it depends
only on the targets. Under ``DistributedDataParallel``, which averages gradients over
the N ranks, each rank multiplies by N to turn that average back into the sum.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from llmbook import distributed
from llmbook.model import IGNORE_INDEX
from llmbook.precision import grad_scaler, precision_context


class Loss(NamedTuple):
    """An objective's verdict on one micro-batch.

    ``total`` is the loss summed over the micro-batch's counted targets (a differentiable
    scalar); ``sums`` are other per-target quantities, summed, to be logged as means
    (for example DPO's reward margins); ``tokens`` is how many input tokens were read.
    """

    total: torch.Tensor
    sums: dict[str, float]
    tokens: int


class Objective(Protocol):
    """What a loop trains for: how many targets a batch counts, and their summed loss."""

    def count(self, batch: Any) -> int:
        """How many targets of ``batch`` count towards the mean (known before the forward pass)."""
        ...

    def loss(self, model: nn.Module, batch: Any) -> Loss:
        """Forward ``batch`` through ``model``; the summed loss over the counted targets."""
        ...


class NextTokenLoss:
    """Cross-entropy of next-token prediction, summed over targets that are not ``IGNORE_INDEX``.

    A batch is ``(x, y)``: inputs and targets of the same shape (B, T). The loss is
    computed in fp32 even under autocast, as ``GPT.forward`` does.
    """

    def count(self, batch: tuple[torch.Tensor, torch.Tensor]) -> int:
        return int((batch[1] != IGNORE_INDEX).sum())

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> Loss:
        x, y = batch
        logits, _ = model(x)  # (B, T, vocab)
        total = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(),
                                ignore_index=IGNORE_INDEX, reduction="sum")
        return Loss(total, {}, x.numel())


def configure_optimizer(
    model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.95)
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (weights, embeddings), not on biases or norms.

    Decay pulls weights towards zero; that regularises matrices, but on a bias or a
    layer-norm gain it only fights the model. Frozen parameters (``requires_grad=False``)
    are left out. Fused AdamW is used on CUDA.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("no parameter of the model requires grad, so there is nothing to train; "
                         "unfreeze some (p.requires_grad_(True)) or check how the model was frozen")
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    fused = params[0].device.type == "cuda"
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)


def lr_at(step: int, max_steps: int, lr: float, min_lr: float, warmup_steps: int) -> float:
    """Linear warmup for ``warmup_steps``, then a cosine from ``lr`` down to ``min_lr``."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


@dataclass
class StepStats:
    """What one step did: the mean loss over all counted targets, and what it logged."""

    loss: float
    lr: float
    count: int  # counted targets in the whole step (all micro-batches, all ranks)
    tokens: int  # input tokens read (all micro-batches, all ranks)
    grad_norm: float | None  # before clipping; None when grad_clip is None
    logs: dict[str, float] = field(default_factory=dict)  # objective's sums / count


class TrainStep:
    """One optimisation step for ``model`` towards ``objective``: the heart of every loop.

    Holds the optimizer (AdamW, ``configure_optimizer``), the gradient scaler of the
    precision policy, and, when a process group is running, the model wrapped in
    ``DistributedDataParallel``. ``step(number, micro_batches)`` takes one step on this
    rank's micro-batches; every rank must call it with its share of the same global batch.
    """

    def __init__(self, model: nn.Module, objective: Objective, *, lr: float, min_lr: float,
                 max_steps: int, warmup_steps: int, weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.95), grad_clip: float | None = 1.0,
                 precision: str = "auto") -> None:
        self.model, self.objective = model, objective
        self.lr, self.min_lr, self.max_steps, self.warmup_steps = lr, min_lr, max_steps, warmup_steps
        self.grad_clip, self.precision = grad_clip, precision
        self.device = next(model.parameters()).device
        self.optimizer = configure_optimizer(model, lr, weight_decay, betas)
        self.scaler = grad_scaler(self.device, precision)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.forward: nn.Module = model
        if distributed.is_distributed():
            # DDP copies rank 0's weights to every rank now, and from then on averages
            # the gradients across ranks during backward().
            ids = None
            if self.device.type == "cuda":
                ids = [self.device.index if self.device.index is not None
                       else torch.cuda.current_device()]
            self.forward = DistributedDataParallel(model, device_ids=ids)

    def lr_at(self, step: int) -> float:
        return lr_at(step, self.max_steps, self.lr, self.min_lr, self.warmup_steps)

    def step(self, number: int, micro_batches: Sequence[Any]) -> StepStats:
        """Take optimisation step ``number`` (from 0) on this rank's ``micro_batches``."""
        if not micro_batches:
            raise ValueError("a step needs at least one micro-batch")
        lr = self.lr_at(number)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        world = distributed.world_size()
        counts = [self.objective.count(b) for b in micro_batches]
        (total_count,) = distributed.sum_across_ranks(sum(counts))
        if total_count == 0:
            raise ValueError("this step's batch has no counted target (every target is "
                             f"IGNORE_INDEX={IGNORE_INDEX}); check the masking or the data")
        scale = world / total_count  # DDP averages over ranks; undo that to get the sum
        self.model.train()
        loss_sum, tokens, sums = 0.0, 0, dict[str, float]()
        for i, batch in enumerate(micro_batches):
            # Only the last micro-batch's backward() needs to all-reduce the gradients.
            last = i == len(micro_batches) - 1
            sync = self.forward is self.model or last
            with contextlib.nullcontext() if sync else self.forward.no_sync():  # type: ignore[operator]
                with precision_context(self.device, self.precision):
                    out = self.objective.loss(self.forward, _to(batch, self.device))
                self.scaler.scale(out.total * scale).backward()
            loss_sum += out.total.item()
            tokens += out.tokens
            for key, value in out.sums.items():
                sums[key] = sums.get(key, 0.0) + value
        keys = sorted(sums)
        loss_sum, tokens_all, *summed = distributed.sum_across_ranks(
            loss_sum, tokens, *(sums[k] for k in keys))
        self.scaler.unscale_(self.optimizer)
        norm = None
        if self.grad_clip is not None:
            norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        logs = {k: v / total_count for k, v in zip(keys, summed, strict=True)}
        return StepStats(loss_sum / total_count, lr, int(total_count), int(tokens_all), norm, logs)


def _to(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor in it (also inside tuples and lists) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a NamedTuple
        return type(batch)(*(_to(b, device) for b in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    return batch


@torch.no_grad()
def summed_loss(model: nn.Module, objective: Objective, batches: Sequence[Any],
              precision: str = "auto") -> tuple[float, int]:
    """Summed loss and count of ``batches`` under ``objective``, without gradients.

    Every counted target weighs the same, whichever batch it is in: the mean of the whole
    is ``total / count``, not the mean of the batches' means.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for batch in batches:
            with precision_context(device, precision):
                out = objective.loss(model, _to(batch, device))
            total += out.total.item()
            count += objective.count(batch)
    finally:
        model.train(was_training)
    return total, count


__all__ = ["Loss", "NextTokenLoss", "Objective", "StepStats", "TrainStep", "configure_optimizer",
           "lr_at", "summed_loss"]
