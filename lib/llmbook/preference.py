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
margins and ranking accuracy, and ``dpo_train`` is the training loop.

On tasks whose answer can be computed (reverse a word, add two numbers) the human label
is replaced by a check: ``pairs_from_mistakes`` pairs the correct answer (chosen) with the
model's own wrong greedy answer (rejected), and ``exact_match_reward`` is the check.
``sequence_kl`` measures how far a tuned model has drifted from its reference on the
answers it writes itself. (Rewards, reward models and reinforcement learning proper are
in ``llmbook.rl``.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeAlias

import torch
import torch.nn.functional as F

from llmbook.finetune import Encoded, encode_example, format_prompt, generate_answers, masked_targets, pad_batch
from llmbook.generate import generate
from llmbook.history import History
from llmbook.model import GPT, IGNORE_INDEX
from llmbook.step import Loss
from llmbook.train import TrainConfig, batch_indices, fingerprint, fit

Prompt: TypeAlias = str | Mapping[str, str]
"""A prompt: a formatted prompt string, or an instruction record (``format_prompt`` formats it)."""


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


def token_logprobs(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log p(target) at every position (B, T), 0 where the target is ``IGNORE_INDEX``.

    The per-token form is what reinforcement learning needs (``llmbook.rl`` weighs each
    token of an answer); ``sequence_logprobs`` adds it up. Computed in fp32, with the graph
    kept when the model is in training, so it can be differentiated.
    """
    if x.shape != y.shape:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must have the same shape")
    logits, _ = model(x)  # (B, T, vocab)
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked * (y != IGNORE_INDEX)


def sequence_logprobs(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum of log p(target) over each row's counted targets (those not ``IGNORE_INDEX``).

    With chapter 10's masking the counted targets are the answer and its end-of-text
    token, so this is log p(answer | prompt). Returns a (B,) tensor that keeps the
    graph when the model is in training, so it can be differentiated.
    """
    return token_logprobs(model, x, y).sum(dim=-1)


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
    * ``ranking_accuracy``: share of pairs in which the model gives the chosen answer the
      higher log-probability, the plainest "which answer does it rank first?". It is not a
      win rate in the sense of the literature (how often a judge prefers the model's own
      generated answer to another model's): it scores two given answers, and says nothing
      about what the model writes.
    """
    (pc, pr), (rc, rr) = policy, reference
    out = dpo_loss(pc, pr, rc, rr, beta)
    return {
        "loss": out.loss.item(),
        "reward_margin": out.margins.mean().item(),
        "reward_accuracy": (out.margins > 0).float().mean().item(),
        "logprob_margin": (pc - pr).mean().item(),
        "ranking_accuracy": (pc > pr).float().mean().item(),
    }


class DPOObjective:
    """DPO as an objective for the shared training step: a batch is a list of pair indices.

    The reference's log-probabilities of every pair are computed once, up front, since
    the reference never changes. The loss is summed over the batch's pairs (each pair
    counts once); the step also logs the mean implicit rewards, their margin, the share
    of pairs with a positive margin (``reward_accuracy``) and the chosen answers' mean
    per-token negative log-likelihood (``chosen_nll``).

    DPO only asks that the chosen answer gain on the rejected one; it can lower both,
    and on a small model with few distinct answers it often does, moving probability to
    answers that are in neither (Pal et al., 2024; Razin et al., 2024). ``nll_weight`` > 0
    adds that weight times the chosen answer's per-token negative log-likelihood to each
    pair's loss, as RPO does (Pang et al., 2024), so the chosen answers stay likely.
    """

    def __init__(self, reference: GPT, dataset: PreferenceDataset, beta: float, nll_weight: float = 0.0) -> None:
        if beta <= 0:
            raise ValueError(f"beta must be positive (typical values are 0.1 to 0.5), got {beta}")
        if nll_weight < 0:
            raise ValueError(f"nll_weight must be >= 0 (0 is plain DPO), got {nll_weight}")
        self.dataset, self.beta, self.nll_weight = dataset, beta, nll_weight
        self.ref_chosen, self.ref_rejected = pair_logprobs(reference, dataset)

    def count(self, batch: tuple[list[int], torch.Tensor, torch.Tensor]) -> int:
        return len(batch[0])

    def loss(self, model: torch.nn.Module, batch: tuple[list[int], torch.Tensor, torch.Tensor]) -> Loss:
        part, x, y = batch
        logps = sequence_logprobs(model, x, y)  # chosen rows first, then rejected
        n = len(part)
        out = dpo_loss(logps[:n], logps[n:], self.ref_chosen[part].to(x.device),
                       self.ref_rejected[part].to(x.device), self.beta)
        nll = -logps[:n] / (y[:n] != IGNORE_INDEX).sum(dim=-1).clamp(min=1)  # (n,) per token of the chosen
        sums = {"reward_margin": out.margins.sum().item(),
                "reward_accuracy": (out.margins > 0).sum().item(),
                "chosen_reward": out.chosen_rewards.sum().item(),
                "rejected_reward": out.rejected_rewards.sum().item(),
                "chosen_nll": nll.sum().item()}
        total = out.loss * n + (self.nll_weight * nll.sum() if self.nll_weight else 0.0)
        return Loss(total, sums, x.numel())


def dpo_train(policy: GPT, reference: GPT, dataset: PreferenceDataset, *, steps: int, batch_size: int = 8,
              beta: float = 0.1, lr: float = 1e-4, warmup_steps: int = 10, weight_decay: float = 0.0,
              grad_clip: float | None = 1.0, nll_weight: float = 0.0, seed: int = 0, precision: str = "auto",
              progress: bool = True) -> History:
    """Train ``policy`` in place with the DPO loss against the frozen ``reference``.

    The reference never changes (its parameters are set to ``requires_grad=False``), so
    its log-probabilities of every pair are computed once, before training; the policy
    scores the chosen and rejected answers of a batch in one forward pass. The step is
    the shared one of ``llmbook.train.fit`` (AdamW, warmup + cosine down to lr / 10,
    clipping, precision). The history's ``train_loss`` is the DPO loss (plus ``nll_weight``
    times the chosen answers' NLL, see ``DPOObjective``), and its logs hold ``reward_margin``,
    ``reward_accuracy``, ``chosen_reward``, ``rejected_reward`` and ``chosen_nll``.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps} and {batch_size}")
    if policy is reference:
        raise ValueError("the reference must be a separate, frozen copy of the policy (copy.deepcopy(policy))")
    for p in reference.parameters():
        p.requires_grad_(False)
    objective = DPOObjective(reference, dataset, beta, nll_weight)
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


# --------------------------------------------------------------------------- computable tasks


def exact_match_reward(prompt: Prompt, completion: str) -> float:
    """1.0 when ``completion`` (surrounding whitespace stripped) is the record's ``output``, else 0.0.

    A verifiable reward for tasks whose answer is computable. It is deliberately stricter
    than ``llmbook.metrics.exact_match``, which lower-cases and drops punctuation: on such
    tasks ``-3`` and ``3``, or ``Olleh`` and ``olleh``, are different answers.
    """
    if isinstance(prompt, str) or "output" not in prompt:
        raise TypeError("exact_match_reward compares with the record's 'output': pass the instruction record "
                        f"(a dict with 'instruction', 'input', 'output'), not {type(prompt).__name__}")
    return float(completion.strip() == str(prompt["output"]).strip())


class MistakePairs(NamedTuple):
    """``pairs_from_mistakes``' result: the pairs, which records they came from, every greedy answer."""

    pairs: list[PreferencePair]
    indices: list[int]  # the record behind each pair
    answers: list[str]  # the model's greedy answer to every record, right or wrong
    skipped: int  # records the model already answered correctly: no pair


def pairs_from_mistakes(model: GPT, tokenizer: Any, records: Sequence[Mapping[str, str]], *,
                        max_new_tokens: int = 32, correct: Callable[[Prompt, str], float] = exact_match_reward,
                        preamble: str | None = None, batch_size: int = 16) -> MistakePairs:
    """Preference pairs on a computable task: the right answer over the model's own wrong one.

    The model answers every record greedily (``generate_answers``); where ``correct(record,
    answer)`` is false, the pair is (prompt, record's ``output``, the model's answer). A record
    the model already gets right makes no pair (``skipped``): it has no mistake to move
    away from. Using the model's own mistakes, not made-up wrong answers, is the point of
    preference tuning: it pushes probability away from what *this* model tends to write.
    """
    if not records:
        raise ValueError("no records given: pairs need prompts with known answers")
    answers = generate_answers(model, tokenizer, records, max_new_tokens, batch_size, preamble)
    assert isinstance(answers, list)
    pairs, indices = [], []
    for i, (record, answer) in enumerate(zip(records, answers, strict=True)):
        if not correct(record, answer):
            pairs.append(PreferencePair(format_prompt(record, preamble), record["output"], answer))
            indices.append(i)
    return MistakePairs(pairs, indices, answers, len(records) - len(pairs))


class Completions(NamedTuple):
    """Sampled answers: token ids of prompts and completions (end-of-text kept where the model
    stopped), the completions as text (without end-of-text, stripped), and who stopped."""

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    texts: list[str]
    stopped: list[bool]

    def batch(self, pad_id: int, start: int = 0, stop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and completion-only targets (prompt and padding ``IGNORE_INDEX``), right-padded,
        of the completions ``start:stop`` (default: all)."""
        pairs = zip(self.prompt_ids[start:stop], self.completion_ids[start:stop], strict=True)
        return pad_batch([masked_targets(p + c, len(p)) for p, c in pairs], pad_id)


@torch.no_grad()
def sample_completions(model: GPT, tokenizer: Any, prompts: Sequence[Prompt], *, max_new_tokens: int,
                       temperature: float = 1.0, generator: torch.Generator | None = None,
                       preamble: str | None = None, batch_size: int = 64) -> Completions:
    """Sample one completion per prompt (repeat a prompt to get several), stopping at end-of-text.

    Sampling (not greedy) is what learning from rewards and estimating a KL need: the
    answers must be drawn from the model's own distribution. ``generator`` makes the
    draws reproducible; prompts are generated in order, ``batch_size`` at a time.
    """
    if not prompts:
        raise ValueError("no prompts given")
    if max_new_tokens < 1 or temperature <= 0:
        raise ValueError(f"max_new_tokens must be positive and temperature > 0 (sampling), "
                         f"got {max_new_tokens} and {temperature}")
    texts = [p if isinstance(p, str) else format_prompt(p, preamble) for p in prompts]
    encoded = [tokenizer.encode(t) for t in texts]
    room = model.config.n_positions - max_new_tokens
    for i, ids in enumerate(encoded):
        if not 0 < len(ids) <= room:
            raise ValueError(f"prompt {i} is {len(ids)} tokens; with max_new_tokens={max_new_tokens} the "
                             f"context of {model.config.n_positions} leaves room for prompts of 1 to {room}")
    eot = tokenizer.eot_token
    out = Completions([], [], [], [])
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start:start + batch_size]
        sequences = generate(model, chunk, max_new_tokens, temperature=temperature, stop_token=eot,
                             generator=generator)
        for ids, seq in zip(chunk, sequences, strict=True):
            new = list(seq[len(ids):])
            stopped = eot in new
            out.prompt_ids.append(ids)
            out.completion_ids.append(new)
            out.texts.append(tokenizer.decode(new[:-1] if stopped else new).strip())
            out.stopped.append(stopped)
    return out


@torch.no_grad()
def sequence_kl(policy: GPT, reference: GPT, tokenizer: Any, prompts: Sequence[Prompt], *,
                samples_per_prompt: int = 4, max_new_tokens: int = 32, seed: int = 0,
                preamble: str | None = None, batch_size: int = 64) -> dict[str, float]:
    """How far ``policy`` has drifted from ``reference``, on answers the policy writes itself.

    Samples ``samples_per_prompt`` answers per prompt from the policy (temperature 1, so
    they follow its distribution exactly) and averages log pi(y|x) - log ref(y|x), summed
    over each answer's tokens: a Monte-Carlo estimate of the sequence-level KL(pi || ref),
    the quantity RLHF's penalty and DPO's beta keep small (Ouyang et al., 2022; Rafailov
    et al., 2023). One sample can be negative; the mean is unbiased. (Answers cut at
    ``max_new_tokens`` are scored as the prefixes they are.) Returns ``kl`` (nats per
    answer), ``kl_per_token`` and ``tokens`` (mean answer length); 0 for the reference itself.
    """
    if samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt must be positive, got {samples_per_prompt}")
    device = next(policy.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    repeated = [p for p in prompts for _ in range(samples_per_prompt)]
    done = sample_completions(policy, tokenizer, repeated, max_new_tokens=max_new_tokens, generator=generator,
                              preamble=preamble, batch_size=batch_size)
    modes = policy.training, reference.training
    policy.eval()
    reference.eval()
    ratios, tokens = [], 0
    try:
        for start in range(0, len(repeated), batch_size):
            x, y = (t.to(device) for t in done.batch(tokenizer.eot_token, start, start + batch_size))
            ratios.append((sequence_logprobs(policy, x, y) - sequence_logprobs(reference, x, y)).cpu())
            tokens += int((y != IGNORE_INDEX).sum())
    finally:
        policy.train(modes[0])
        reference.train(modes[1])
    total = torch.cat(ratios)
    return {"kl": total.mean().item(), "kl_per_token": total.sum().item() / tokens,
            "tokens": tokens / len(total)}


__all__ = [
    "Completions", "DPOLoss", "DPOObjective", "MistakePairs", "PreferenceDataset", "PreferencePair", "Prompt",
    "dpo_loss", "dpo_train", "exact_match_reward", "make_pairs", "pair_logprobs", "pairs_from_mistakes",
    "preference_metrics", "sample_completions", "sequence_kl", "sequence_logprobs", "token_logprobs",
]
