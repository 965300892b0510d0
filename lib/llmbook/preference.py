"""Learning from preferences: preference pairs, sequence log-probabilities and DPO (chapter 11).

Instruction tuning (chapter 10) shows a model *one* good answer per prompt. Preference
tuning shows it *two* answers and says which one people prefer. RLHF (Christiano et al.,
2017; Ouyang et al., 2022) turns such comparisons into a reward model and then optimises
the language model against it with reinforcement learning (PPO). Direct preference
optimisation (DPO; Rafailov et al., 2023) reaches the same objective without either: for
a prompt x, a preferred ("chosen") answer y_w and a dispreferred ("rejected") one y_l,

    loss = -log sigmoid( beta * [ (log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x)) ] )

where ``pi`` is the model being trained (the *policy*), ``ref`` a frozen copy of where it
started, and each log-probability is the sum over the *answer's* tokens only. The
bracketed terms, times beta, are DPO's *implicit rewards*; their difference is the
*reward margin*, which the loss pushes up while the reference keeps the policy from
drifting far from what it knew.

The pieces here are small and reuse chapter 10's prompt format and padding
(``llmbook.finetune``): ``PreferenceDataset`` encodes pairs, ``sequence_logprobs`` scores
answers under a model, ``dpo_loss`` is the formula above, ``preference_metrics`` measures
margin and win rate, and ``dpo_train`` is the training loop.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from llmbook.finetune import Encoded, encode_example, format_prompt, masked_targets, pad_batch
from llmbook.model import GPT, IGNORE_INDEX
from llmbook.train import batch_indices, configure_optimizer, lr_at


class PreferencePair(NamedTuple):
    """One comparison: a formatted prompt, the preferred answer and the dispreferred one."""

    prompt: str
    chosen: str
    rejected: str


class DPOLoss(NamedTuple):
    """``dpo_loss``'s result: the mean loss and, per pair, the implicit rewards and their margin."""

    loss: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    margins: torch.Tensor


def make_pairs(entries: Sequence[Mapping[str, str]], rejected: Sequence[str],
               preamble: str | None = None) -> list[PreferencePair]:
    """Pairs from instruction records: the record's ``output`` is chosen over ``rejected[i]``.

    The prompt is chapter 10's Alpaca-style format (``llmbook.finetune.format_prompt``),
    so a model instruction-tuned in that format sees the layout it knows.
    """
    if len(entries) != len(rejected):
        raise ValueError(f"{len(entries)} records but {len(rejected)} rejected answers; give one per record")
    return [PreferencePair(format_prompt(e, preamble), e["output"], r) for e, r in zip(entries, rejected, strict=True)]


class PreferenceDataset:
    """Preference pairs as token ids, ready to be scored in padded batches.

    Each pair keeps two ``Encoded`` sequences (prompt + answer + end-of-text) that share
    the prompt. A pair in which either sequence is longer than the context
    (``max_length`` + 1 tokens) is dropped and counted in ``dropped``: cutting answers
    would compare a truncated answer with a whole one.
    """

    def __init__(self, pairs: Sequence[PreferencePair], tokenizer: Any, max_length: int) -> None:
        self.tokenizer, self.pad_id = tokenizer, tokenizer.eot_token
        self.pairs: list[PreferencePair] = []
        self.chosen: list[Encoded] = []
        self.rejected: list[Encoded] = []
        self.dropped = 0
        for pair in pairs:
            if not isinstance(pair, tuple) or len(pair) != 3:
                raise TypeError(f"expected (prompt, chosen, rejected) pairs, got {pair!r:.80}")
            try:
                chosen = encode_example(pair[0], pair[1], tokenizer, max_length)
                rejected = encode_example(pair[0], pair[2], tokenizer, max_length)
            except ValueError:
                self.dropped += 1
                continue
            self.pairs.append(PreferencePair(*pair))
            self.chosen.append(chosen)
            self.rejected.append(rejected)
        if not self.pairs:
            raise ValueError(f"no preference pair fits a context of {max_length} tokens")

    def __len__(self) -> int:
        return len(self.pairs)

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and answer-only targets for the pairs ``indices``: the chosen answers in
        the first half of the rows, the rejected ones (same order) in the second half.

        Scoring both halves in one forward pass costs one call instead of two.
        """
        indices = [int(i) for i in indices]
        rows = [masked_targets(*self.chosen[i]) for i in indices]
        rows += [masked_targets(*self.rejected[i]) for i in indices]
        return pad_batch(rows, self.pad_id)


def sequence_logprobs(model: GPT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum of log p(target) over each row's counted targets (those not ``IGNORE_INDEX``).

    With chapter 10's masking the counted targets are the answer and its end-of-text
    token, so this is log p(answer | prompt). Returns a (B,) tensor that keeps the
    graph when the model is in training, so it can be differentiated.
    """
    if x.shape != y.shape:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must have the same shape")
    logits, _ = model(x)
    logp = torch.log_softmax(logits.float(), dim=-1)
    counted = y != IGNORE_INDEX
    picked = logp.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * counted).sum(dim=-1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
             reference_chosen: torch.Tensor, reference_rejected: torch.Tensor,
             beta: float = 0.1) -> DPOLoss:
    """The DPO loss from per-pair answer log-probabilities under the policy and the reference.

    Implicit rewards are ``beta * (log pi - log ref)`` of each answer; the loss is the
    mean of ``-log sigmoid(chosen reward - rejected reward)``, written with
    ``F.logsigmoid``, which stays accurate for large margins where log(sigmoid(.)) would
    round to log(0).
    """
    if beta <= 0:
        raise ValueError(f"beta must be positive (typical values are 0.1 to 0.5), got {beta}")
    shapes = {tuple(t.shape) for t in (policy_chosen, policy_rejected, reference_chosen, reference_rejected)}
    if len(shapes) != 1:
        raise ValueError(f"the four log-probability tensors must have one shape (one value per pair), got {shapes}")
    chosen_rewards = beta * (policy_chosen - reference_chosen)
    rejected_rewards = beta * (policy_rejected - reference_rejected)
    margins = chosen_rewards - rejected_rewards
    return DPOLoss(-F.logsigmoid(margins).mean(), chosen_rewards, rejected_rewards, margins)


@torch.no_grad()
def pair_logprobs(model: GPT, dataset: PreferenceDataset, batch_size: int = 16,
                  indices: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(chosen | prompt) and log p(rejected | prompt) for every pair (or ``indices``), on the CPU."""
    indices = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    try:
        for start in range(0, len(indices), batch_size):
            part = indices[start:start + batch_size]
            x, y = (t.to(device) for t in dataset.batch(part))
            logps = sequence_logprobs(model, x, y).cpu()
            chosen.append(logps[: len(part)])
            rejected.append(logps[len(part):])
    finally:
        model.train(was_training)
    return torch.cat(chosen), torch.cat(rejected)


def preference_metrics(policy: tuple[torch.Tensor, torch.Tensor], reference: tuple[torch.Tensor, torch.Tensor],
                       beta: float = 0.1) -> dict[str, float]:
    """How strongly a model prefers the chosen answers, from ``pair_logprobs`` of it and of the reference.

    * ``reward_margin``: mean implicit reward margin (0 for the reference itself);
    * ``reward_accuracy``: share of pairs with a positive margin, i.e. where the model
      raised the chosen answer relative to the rejected one *more than the reference did*;
    * ``logprob_margin``: mean log p(chosen) - log p(rejected) under the model;
    * ``win_rate``: share of pairs where the model gives the chosen answer the higher
      log-probability, the plainest "which answer does it prefer?".
    """
    (pc, pr), (rc, rr) = policy, reference
    out = dpo_loss(pc, pr, rc, rr, beta)
    return {
        "loss": out.loss.item(),
        "reward_margin": out.margins.mean().item(),
        "reward_accuracy": (out.margins > 0).float().mean().item(),
        "logprob_margin": (pc - pr).mean().item(),
        "win_rate": (pc > pr).float().mean().item(),
    }


@dataclass
class DPOHistory:
    """Per-step DPO loss, mean reward margin and reward accuracy on the training batch."""

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    reward_margin: list[float] = field(default_factory=list)
    reward_accuracy: list[float] = field(default_factory=list)
    chosen_reward: list[float] = field(default_factory=list)
    rejected_reward: list[float] = field(default_factory=list)
    seconds: float = 0.0


def dpo_train(policy: GPT, reference: GPT, dataset: PreferenceDataset, *, steps: int, batch_size: int = 8,
              beta: float = 0.1, lr: float = 1e-4, warmup_steps: int = 10, weight_decay: float = 0.0,
              grad_clip: float | None = 1.0, seed: int = 0, progress: bool = True) -> DPOHistory:
    """Train ``policy`` in place with the DPO loss against the frozen ``reference``.

    The reference never changes (its parameters are set to ``requires_grad=False``), so
    its log-probabilities of every pair are computed once, before training, and looked up
    per batch; the policy scores the chosen and
    rejected answers of a batch in one forward pass. The schedule is chapter 8's
    warmup + cosine (down to lr / 10), with AdamW and gradient clipping.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    if policy is reference:
        raise ValueError("the reference must be a separate, frozen copy of the policy (copy.deepcopy(policy))")
    for p in reference.parameters():
        p.requires_grad_(False)
    ref_chosen, ref_rejected = pair_logprobs(reference, dataset)
    device = next(policy.parameters()).device
    optimizer = configure_optimizer(policy, lr, weight_decay)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    batch_size = min(batch_size, len(dataset))
    history, began = DPOHistory(), time.perf_counter()
    policy.train()
    bar = tqdm(range(steps), disable=not progress, desc="DPO", unit="step")
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr, lr / 10, warmup_steps)
        part = batch_indices(len(dataset), batch_size, seed, step * batch_size).tolist()  # as train() draws
        x, y = (t.to(device) for t in dataset.batch(part))
        logps = sequence_logprobs(policy, x, y)
        n = len(part)
        out = dpo_loss(logps[:n], logps[n:], ref_chosen[part].to(device), ref_rejected[part].to(device), beta)
        out.loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(trainable, grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        history.steps.append(step + 1)
        history.loss.append(out.loss.item())
        history.reward_margin.append(out.margins.mean().item())
        history.reward_accuracy.append((out.margins > 0).float().mean().item())
        history.chosen_reward.append(out.chosen_rewards.mean().item())
        history.rejected_reward.append(out.rejected_rewards.mean().item())
        if (step + 1) % 10 == 0:
            bar.set_postfix(loss=f"{out.loss.item():.3f}", margin=f"{history.reward_margin[-1]:.2f}")
        history.seconds = time.perf_counter() - began
    bar.close()
    policy.eval()
    return history


__all__ = [
    "DPOHistory", "DPOLoss", "PreferenceDataset", "PreferencePair", "dpo_loss", "dpo_train",
    "make_pairs", "pair_logprobs", "preference_metrics", "sequence_logprobs",
]
