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

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from llmbook.finetune import Encoded, encode_example, format_prompt, masked_targets, pad_batch
from llmbook.model import GPT, IGNORE_INDEX
from llmbook.history import History
from llmbook.step import Loss
from llmbook.train import TrainConfig, batch_indices, fingerprint, fit


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


def sequence_logprobs(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
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


class DPOObjective:
    """DPO as an objective for the shared training step: a batch is a list of pair indices.

    The reference's log-probabilities of every pair are computed once, up front, since
    the reference never changes. The loss is summed over the batch's pairs (each pair
    counts once); the step also logs the mean implicit rewards, their margin, and the
    share of pairs with a positive margin (``reward_accuracy``).
    """

    def __init__(self, reference: GPT, dataset: PreferenceDataset, beta: float) -> None:
        if beta <= 0:
            raise ValueError(f"beta must be positive (typical values are 0.1 to 0.5), got {beta}")
        self.dataset, self.beta = dataset, beta
        self.ref_chosen, self.ref_rejected = pair_logprobs(reference, dataset)

    def count(self, batch: tuple[list[int], torch.Tensor, torch.Tensor]) -> int:
        return len(batch[0])

    def loss(self, model: torch.nn.Module, batch: tuple[list[int], torch.Tensor, torch.Tensor]) -> Loss:
        part, x, y = batch
        logps = sequence_logprobs(model, x, y)  # chosen rows first, then rejected
        n = len(part)
        out = dpo_loss(logps[:n], logps[n:], self.ref_chosen[part].to(x.device),
                       self.ref_rejected[part].to(x.device), self.beta)
        sums = {"reward_margin": out.margins.sum().item(),
                "reward_accuracy": (out.margins > 0).sum().item(),
                "chosen_reward": out.chosen_rewards.sum().item(),
                "rejected_reward": out.rejected_rewards.sum().item()}
        return Loss(out.loss * n, sums, x.numel())


def dpo_train(policy: GPT, reference: GPT, dataset: PreferenceDataset, *, steps: int, batch_size: int = 8,
              beta: float = 0.1, lr: float = 1e-4, warmup_steps: int = 10, weight_decay: float = 0.0,
              grad_clip: float | None = 1.0, seed: int = 0, precision: str = "auto",
              progress: bool = True) -> History:
    """Train ``policy`` in place with the DPO loss against the frozen ``reference``.

    The reference never changes (its parameters are set to ``requires_grad=False``), so
    its log-probabilities of every pair are computed once, before training; the policy
    scores the chosen and rejected answers of a batch in one forward pass. The step is
    the shared one of ``llmbook.train.fit`` (AdamW, warmup + cosine down to lr / 10,
    clipping, precision). The history's ``train_loss`` is the DPO loss, and its logs hold
    ``reward_margin``, ``reward_accuracy``, ``chosen_reward`` and ``rejected_reward``.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    if policy is reference:
        raise ValueError("the reference must be a separate, frozen copy of the policy (copy.deepcopy(policy))")
    for p in reference.parameters():
        p.requires_grad_(False)
    objective = DPOObjective(reference, dataset, beta)
    batch_size = min(batch_size, len(dataset))
    cfg = TrainConfig(max_steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
                      weight_decay=weight_decay, grad_clip=grad_clip, seed=seed, precision=precision,
                      progress=progress)

    def collate(indices: torch.Tensor) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        part = indices.tolist()
        return (part, *dataset.batch(part))

    return fit(policy, objective, cfg,
               sample=lambda k: batch_indices(len(dataset), batch_size, seed, k * batch_size),
               collate_batch=collate, data_key=fingerprint(dataset.pairs), desc="DPO")


__all__ = [
    "DPOLoss", "DPOObjective", "PreferenceDataset", "PreferencePair", "dpo_loss", "dpo_train",
    "make_pairs", "pair_logprobs", "preference_metrics", "sequence_logprobs",
]
