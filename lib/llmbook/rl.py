"""Learning from rewards: GRPO with a verifiable reward, and a learned reward model (chapter 11).

DPO (``llmbook.preference``) learns from answers someone else wrote. Reinforcement
learning lets the model write its own answers, scores them, and makes the better ones
more likely. When the answer can be *checked* (a sum, a reversed word), the score is
a program, ``reward(prompt, completion) -> float``, and nothing has to be learned to
judge: a verifiable reward. Where it cannot, RLHF learns a reward model from human
comparisons (Ouyang et al., 2022); ``RewardModel`` here is that step, trained with the
Bradley–Terry loss (Bradley and Terry, 1952) and measured on pairs whose winner we know.

GRPO, group relative policy optimisation (Shao et al., 2024, DeepSeekMath), is PPO
(Schulman et al., 2017) without PPO's learned value model. For each prompt it samples a
*group* of G completions and uses the group as its own baseline:

    A_i = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + eps)

so a completion is pushed up exactly when it beat its siblings. Every token of
completion i gets the advantage A_i, and the loss per token is

    -min(rho * A_i, clip(rho, 1 - eps_clip, 1 + eps_clip) * A_i) + beta * KL_k3

with rho = pi(token) / pi_old(token), the policy against the policy that sampled the
completion. The clip stops one batch from moving a token's probability far: once rho
is outside 1 ± eps_clip in the direction the advantage pushes, that token gives no
gradient. The KL term (the k3 estimator, as in the paper) holds the policy near a
frozen reference, as RLHF's penalty does.

Choices, stated: the std is the sample standard deviation (Bessel's n - 1, as
``torch.std``); a group whose rewards are all equal (all right, or all wrong) has
advantage 0 for every member, so it gives the policy no signal, only the KL term; we
log the share of such groups, which is high when the task is too easy or too hard.
Each completion *token* weighs the same in the step's mean (the shared step divides by
the number of completion tokens), as in DAPO (Yu et al., 2025), rather than DeepSeekMath's
mean per completion then per group. With ``updates_per_batch=1`` (DeepSeekMath's setting)
the sampling policy is the policy being trained, rho is 1 and the loss is the plain
policy gradient; the clip only acts when a batch is reused for several steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Real
from typing import Any, NamedTuple, TypeAlias

import torch
import torch.nn.functional as F
from torch import nn

from llmbook import distributed
from llmbook.classification import Batch, pad_messages, pool_last
from llmbook.finetune import generate_answers
from llmbook.history import History
from llmbook.model import GPT, IGNORE_INDEX
from llmbook.preference import PreferenceDataset, Prompt, exact_match_reward, sample_completions, token_logprobs
from llmbook.step import Loss
from llmbook.train import TrainConfig, batch_indices, fingerprint, fit

RewardFn: TypeAlias = Callable[[Prompt, str], float]
"""``reward(prompt, completion)``: the prompt as given (record or text), the completion's text."""


# --------------------------------------------------------------------------- the pieces


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """(r - group mean) / (group std + eps) for rewards (N,) laid out as N / group_size groups.

    Rewards of one prompt's group are consecutive. The std is the sample std (n - 1). A
    group whose rewards are all equal gets advantages of exactly 0: no completion beat
    another, so there is nothing to learn from it.
    """
    if group_size < 2:
        raise ValueError(f"group_size must be at least 2 (an advantage compares a completion with "
                         f"the others of its group), got {group_size}")
    if rewards.dim() != 1 or len(rewards) % group_size:
        raise ValueError(f"rewards must be (N,) with N a multiple of group_size={group_size}, "
                         f"got shape {tuple(rewards.shape)}")
    r = rewards.float().view(-1, group_size)  # (groups, G)
    centred = r - r.mean(dim=1, keepdim=True)
    return (centred / (r.std(dim=1, keepdim=True) + eps)).view(-1)


def grpo_token_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                    clip_eps: float = 0.2) -> torch.Tensor:
    """PPO's clipped surrogate, negated, per token: (B, T) from log-probs (B, T) and advantages (B,).

    ``-min(rho * A, clip(rho, 1 - clip_eps, 1 + clip_eps) * A)`` with rho = exp(logp - old_logp)
    (Schulman et al., 2017). Lowering it raises the probability of tokens with A > 0 and
    lowers it for A < 0, until rho leaves the clip range in that direction.
    """
    if clip_eps <= 0:
        raise ValueError(f"clip_eps must be positive (PPO and GRPO use 0.2), got {clip_eps}")
    ratio = torch.exp(logp - old_logp)
    adv = advantages.unsqueeze(-1)  # (B, 1): every token of a completion shares its advantage
    return -torch.min(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)


def clipped_tokens(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                   clip_eps: float = 0.2) -> torch.Tensor:
    """Which tokens the clip silenced (B, T): rho beyond 1 ± clip_eps in the advantage's direction."""
    ratio, adv = torch.exp(logp - old_logp), advantages.unsqueeze(-1)
    return ((ratio > 1 + clip_eps) & (adv > 0)) | ((ratio < 1 - clip_eps) & (adv < 0))


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi || ref) estimate ``exp(ref - logp) - (ref - logp) - 1`` (Schulman's k3).

    On tokens sampled from pi its mean is KL(pi || ref) (E[ref/pi] = 1), every value is
    >= 0 (e^x >= 1 + x), and it is 0 where the two agree: the estimator of DeepSeekMath.
    """
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def check_reward(value: Any, prompt: Prompt, completion: str) -> float:
    """``value`` as a float, or an error that names the prompt and completion that produced it."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if not isinstance(value, Real):
        raise TypeError(f"the reward function must return a number, got {type(value).__name__} "
                        f"({value!r:.40}) for the completion {completion!r:.60} of {prompt!r:.60}")
    if not math.isfinite(float(value)):
        raise ValueError(f"the reward function returned {value} for the completion {completion!r:.60}")
    return float(value)


# --------------------------------------------------------------------------- GRPO


class GRPOBatch(NamedTuple):
    """One step's sampled groups, ready for the loss. Rows are completions, groups consecutive."""

    x: torch.Tensor  # (B, T) prompt + completion, right-padded
    y: torch.Tensor  # (B, T) next-token targets, completion tokens only (else IGNORE_INDEX)
    advantages: torch.Tensor  # (B,)
    old_logp: torch.Tensor | None  # (B, T) the sampling policy's; None: the policy itself (on-policy)
    ref_logp: torch.Tensor  # (B, T) the frozen reference's
    logs: dict[str, float]  # per-batch means measured when sampling (reward, zero_signal, ...)


class GRPOObjective:
    """GRPO's loss for the shared step: summed over completion tokens, which are what ``count`` counts.

    Besides the loss the step logs the mean per-token ``kl`` (k3) to the reference, the
    share of tokens the clip silenced (``clip_frac``), and the sampling statistics of the
    batch (``reward``, ``zero_signal``, ``completion_tokens``).
    """

    def __init__(self, beta: float = 0.04, clip_eps: float = 0.2) -> None:
        if beta < 0 or clip_eps <= 0:
            raise ValueError(f"beta must be >= 0 and clip_eps > 0, got {beta} and {clip_eps}")
        self.beta, self.clip_eps = beta, clip_eps

    def count(self, batch: GRPOBatch) -> int:
        return int((batch.y != IGNORE_INDEX).sum())

    def loss(self, model: nn.Module, batch: GRPOBatch) -> Loss:
        logp = token_logprobs(model, batch.x, batch.y)  # (B, T), 0 off the completions
        mask = batch.y != IGNORE_INDEX
        old = batch.old_logp if batch.old_logp is not None else logp.detach()
        kl = kl_k3(logp, batch.ref_logp)
        per_token = grpo_token_loss(logp, old, batch.advantages, self.clip_eps) + self.beta * kl
        n = int(mask.sum())
        sums = {name: value * n for name, value in batch.logs.items()}  # logged means stay means
        sums["kl"] = (kl * mask).sum().item()
        sums["clip_frac"] = (clipped_tokens(logp, old, batch.advantages, self.clip_eps) & mask).sum().item()
        return Loss((per_token * mask).sum(), sums, batch.x.numel())


@torch.no_grad()
def sample_groups(policy: GPT, reference: GPT, tokenizer: Any, prompts: Sequence[Prompt], reward_fn: RewardFn, *,
                  group_size: int, max_new_tokens: int, temperature: float = 1.0,
                  generator: torch.Generator | None = None, keep_old_logp: bool = False,
                  preamble: str | None = None) -> GRPOBatch:
    """Sample ``group_size`` completions per prompt from ``policy``, score them, and build the batch.

    ``keep_old_logp`` stores the sampling policy's log-probs, needed when the batch will be
    trained on for more than one step; otherwise the loss uses the policy's own, detached.
    """
    repeated = [p for p in prompts for _ in range(group_size)]
    done = sample_completions(policy, tokenizer, repeated, max_new_tokens=max_new_tokens, temperature=temperature,
                              generator=generator, preamble=preamble, batch_size=len(repeated))
    rewards = torch.tensor([check_reward(reward_fn(p, text), p, text)
                            for p, text in zip(repeated, done.texts, strict=True)])
    device = next(policy.parameters()).device
    x, y = (t.to(device) for t in done.batch(tokenizer.eot_token))
    modes = policy.training, reference.training
    policy.eval()
    reference.eval()
    try:
        old = token_logprobs(policy, x, y) if keep_old_logp else None
        ref = token_logprobs(reference, x, y)
    finally:
        policy.train(modes[0])
        reference.train(modes[1])
    grouped = rewards.view(-1, group_size)
    flat = (grouped.max(dim=1).values == grouped.min(dim=1).values).sum().item()
    # Means over the whole step's completions (all ranks when data-parallel).
    r_sum, n, flat, groups, tokens = distributed.sum_across_ranks(
        rewards.sum().item(), len(rewards), flat, len(grouped), int((y != IGNORE_INDEX).sum()))
    logs = {"reward": r_sum / n, "zero_signal": flat / groups, "completion_tokens": tokens / n}
    return GRPOBatch(x, y, group_advantages(rewards, group_size).to(device), old, ref, logs)


def grpo_train(policy: GPT, reference: GPT, prompts: Sequence[Prompt], reward_fn: RewardFn, tokenizer: Any, *,
               steps: int, prompts_per_step: int = 8, group_size: int = 8, max_new_tokens: int = 32,
               temperature: float = 1.0, lr: float = 1e-4, beta: float = 0.04, clip_eps: float = 0.2,
               updates_per_batch: int = 1, warmup_steps: int = 0, weight_decay: float = 0.0,
               grad_clip: float | None = 1.0, seed: int = 0, precision: str = "auto", preamble: str | None = None,
               measure: Callable[[], dict[str, float]] | None = None, eval_interval: int | None = None,
               progress: bool = True) -> History:
    """Train ``policy`` in place with GRPO on ``prompts`` scored by ``reward_fn``; return its History.

    Each round draws ``prompts_per_step`` prompts (a seeded shuffle, epoch after epoch),
    samples ``group_size`` completions of each from the current policy (temperature
    sampling, stopping at end-of-text or after ``max_new_tokens``; the draws are seeded
    per round from ``seed``, so a run repeats exactly), scores them, and takes
    ``updates_per_batch`` steps of the shared training step on them (AdamW, warmup +
    cosine to lr / 10, clipping, precision). The frozen ``reference`` anchors the KL term.
    ``temperature`` only shapes which completions are drawn: the loss scores them under
    the policy itself (temperature 1), so 1 keeps sampling and scoring the same policy.
    History: ``train_loss`` and the logs ``reward`` (mean over the step's completions),
    ``zero_signal`` (share of groups with equal rewards), ``kl``, ``clip_frac`` and
    ``completion_tokens``; ``measure()`` is recorded at the start and every
    ``eval_interval`` steps (default: the end).
    """
    if not prompts:
        raise ValueError("no prompts given: GRPO needs prompts to sample completions for")
    if group_size < 2:
        raise ValueError(f"group_size must be at least 2: GRPO's advantage compares each completion with the "
                         f"others sampled for the same prompt (DeepSeekMath uses 64), got {group_size}")
    if min(steps, prompts_per_step, max_new_tokens, updates_per_batch) < 1:
        raise ValueError("steps, prompts_per_step, max_new_tokens and updates_per_batch must be positive, got "
                         f"{steps}, {prompts_per_step}, {max_new_tokens} and {updates_per_batch}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0: greedy decoding gives every member of a group the same "
                         f"completion, hence no signal; got {temperature}")
    if not callable(reward_fn):
        raise TypeError(f"reward_fn must be a function reward(prompt, completion) -> float, got {reward_fn!r:.60}")
    if policy is reference:
        raise ValueError("the reference must be a separate, frozen copy of the policy (copy.deepcopy(policy))")
    for p in reference.parameters():
        p.requires_grad_(False)
    objective = GRPOObjective(beta, clip_eps)
    n, per_step = len(prompts), min(prompts_per_step, len(prompts))
    cfg = TrainConfig(max_steps=steps, batch_size=per_step, lr=lr, warmup_steps=warmup_steps,
                      weight_decay=weight_decay, grad_clip=grad_clip, eval_interval=eval_interval or steps,
                      seed=seed, precision=precision, progress=progress)
    device = next(policy.parameters()).device
    state: dict[str, Any] = {"k": 0, "round": -1, "batch": None}

    def sample(k: int) -> torch.Tensor:
        state["k"] = k  # fit calls collate_batch with these indices right away
        return batch_indices(n, per_step, seed, (k // updates_per_batch) * per_step)

    def collate(indices: torch.Tensor) -> GRPOBatch:
        round_ = state["k"] // updates_per_batch
        if round_ != state["round"]:  # a new round: sample fresh groups with the current policy
            rank = distributed.rank()
            generator = torch.Generator(device=device).manual_seed((seed * 1_000_003 + round_) * 4096 + rank)
            state["batch"] = sample_groups(
                policy, reference, tokenizer, [prompts[int(i)] for i in indices], reward_fn,
                group_size=group_size, max_new_tokens=max_new_tokens, temperature=temperature,
                generator=generator, keep_old_logp=updates_per_batch > 1, preamble=preamble)
            state["round"] = round_
        return state["batch"]

    return fit(policy, objective, cfg, sample=sample, collate_batch=collate, measure=measure,
               eval_at_start=measure is not None, data_key=fingerprint(list(prompts)), desc="GRPO")


def mean_reward(model: GPT, tokenizer: Any, prompts: Sequence[Prompt], reward_fn: RewardFn = exact_match_reward,
                *, max_new_tokens: int = 32, preamble: str | None = None, batch_size: int = 32) -> float:
    """Mean reward of the model's greedy answers (``generate_answers``): with the default
    ``exact_match_reward``, held-out exact match. Greedy, so it measures what the model
    answers, not what it might sample."""
    if not prompts:
        raise ValueError("no prompts given")
    answers = generate_answers(model, tokenizer, prompts, max_new_tokens, batch_size, preamble)
    assert isinstance(answers, list)
    return sum(check_reward(reward_fn(p, a), p, a) for p, a in zip(prompts, answers, strict=True)) / len(prompts)


# --------------------------------------------------------------------------- a learned reward model


class RewardModel(nn.Module):
    """r(x, y): a GPT with a scalar head on the hidden state of the last real token.

    InstructGPT's reward model (Ouyang et al., 2022) is its SFT model with the output
    layer replaced by one number; here the GPT is kept whole (``GPT.hidden_states``) and
    the head reads the last token, as chapter 9's classifier does (``pool_last``).
    """

    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        self.gpt = gpt
        self.head = nn.Linear(gpt.config.n_embd, 1)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Rewards (B,) of right-padded prompt + answer ids (B, T); ``mask`` marks real tokens."""
        return self.head(pool_last(self.gpt.hidden_states(ids), mask)).squeeze(-1).float()


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(r_chosen - r_rejected): the negative log-likelihood of the
    comparisons under the Bradley–Terry model (Bradley and Terry, 1952), where
    P(chosen beats rejected) = sigmoid(r_chosen - r_rejected)."""
    if chosen.shape != rejected.shape:
        raise ValueError(f"chosen {tuple(chosen.shape)} and rejected {tuple(rejected.shape)} must pair up")
    return -F.logsigmoid(chosen - rejected).mean()


def pair_batch(dataset: PreferenceDataset, indices: Sequence[int]) -> Batch:
    """The pairs' full sequences (prompt + answer + end-of-text), right-padded: chosen rows
    first, then the rejected ones in the same order (labels 1 and 0)."""
    idx = [int(i) for i in indices]
    seqs = [dataset.chosen[i].ids for i in idx] + [dataset.rejected[i].ids for i in idx]
    return pad_messages(seqs, [1] * len(idx) + [0] * len(idx), dataset.pad_id)


class BradleyTerryObjective:
    """The Bradley–Terry loss for the shared step, summed over pairs (each pair counts once);
    logs ``accuracy`` (share of pairs ranked right) and ``margin`` (mean r_chosen - r_rejected)."""

    def count(self, batch: Batch) -> int:
        return len(batch.labels) // 2

    def loss(self, model: nn.Module, batch: Batch) -> Loss:
        scores = model(batch.ids, batch.mask)  # (2n,)
        n = len(batch.labels) // 2
        diff = scores[:n] - scores[n:]
        sums = {"accuracy": (diff > 0).sum().item(), "margin": diff.sum().item()}
        return Loss(bradley_terry_loss(scores[:n], scores[n:]) * n, sums, int(batch.mask.sum()))


@torch.no_grad()
def reward_scores(model: RewardModel, dataset: PreferenceDataset,
                  batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of every pair's chosen and rejected answer, two (N,) tensors on the CPU."""
    device, was_training = next(model.parameters()).device, model.training
    model.eval()
    chosen, rejected = [], []
    try:
        for start in range(0, len(dataset), batch_size):
            batch = pair_batch(dataset, range(start, min(start + batch_size, len(dataset))))
            scores = model(batch.ids.to(device), batch.mask.to(device)).cpu()
            chosen.append(scores[: len(scores) // 2])
            rejected.append(scores[len(scores) // 2:])
    finally:
        model.train(was_training)
    return torch.cat(chosen), torch.cat(rejected)


def pairwise_accuracy(model: RewardModel, dataset: PreferenceDataset, batch_size: int = 32) -> float:
    """Share of pairs whose chosen answer the reward model scores strictly higher (0.5: chance)."""
    chosen, rejected = reward_scores(model, dataset, batch_size)
    return (chosen > rejected).float().mean().item()


def train_reward_model(model: RewardModel, dataset: PreferenceDataset, *, steps: int, batch_size: int = 16,
                       lr: float = 1e-3, warmup_steps: int = 10, weight_decay: float = 0.0,
                       grad_clip: float | None = 1.0, seed: int = 0, precision: str = "auto",
                       measure: Callable[[], dict[str, float]] | None = None, eval_interval: int | None = None,
                       progress: bool = True) -> History:
    """Train ``model`` in place on (chosen, rejected) pairs with the Bradley–Terry loss.

    The shared step of ``llmbook.train.fit``; batches are a seeded shuffle of the pairs,
    each scored as one padded batch (chosen rows, then rejected). History: ``train_loss``
    and the logs ``accuracy`` and ``margin``; ``measure()`` (e.g. held-out
    ``pairwise_accuracy``) at the start and every ``eval_interval`` steps.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    if not isinstance(model, RewardModel):
        raise TypeError(f"train_reward_model trains a RewardModel, got {type(model).__name__}")
    longest, context = max(len(e.ids) for e in dataset.chosen + dataset.rejected), model.gpt.config.n_positions
    if longest > context:
        raise ValueError(f"a pair's sequence is {longest} tokens but the reward model reads at most {context}; "
                         f"build the PreferenceDataset with max_length={context - 1}")
    batch_size = min(batch_size, len(dataset))
    cfg = TrainConfig(max_steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
                      weight_decay=weight_decay, grad_clip=grad_clip, eval_interval=eval_interval or steps,
                      seed=seed, precision=precision, progress=progress)
    return fit(model, BradleyTerryObjective(), cfg,
               sample=lambda k: batch_indices(len(dataset), batch_size, seed, k * batch_size),
               collate_batch=lambda idx: pair_batch(dataset, idx.tolist()), measure=measure,
               eval_at_start=measure is not None, data_key=fingerprint(dataset.pairs), desc="reward model")


__all__ = [
    "BradleyTerryObjective", "GRPOBatch", "GRPOObjective", "RewardFn", "RewardModel", "bradley_terry_loss",
    "check_reward", "clipped_tokens", "exact_match_reward", "group_advantages", "grpo_token_loss", "grpo_train",
    "kl_k3", "mean_reward", "pair_batch", "pairwise_accuracy", "reward_scores", "sample_groups",
    "train_reward_model",
]
