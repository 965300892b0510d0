"""Checks for chapter 11, "Emergent abilities and learning from preferences".

Six exercises rebuild the chapter's measurements: a k-shot prompt (examples written as
text before the query), a batch of repeated random sequences (the data on which
induction heads form), the induction score of an attention map (attention from each
token of the second copy to the token after its earlier occurrence), the log-probability
of an answer with the prompt and padding masked out, the DPO loss, and GRPO's
group-relative advantages. Each check compares the learner's function with a reference
on several inputs and, when they differ, names the input, shows expected and actual
values, and recognises the usual mistakes (a trailing newline, tokens doubled instead of the segment repeated, the
duplicate-token or previous-token offset instead of the induction offset, a mean where a
sum belongs, ignored targets that still count, a missing beta, a swapped sign,
``log(sigmoid(.))`` that overflows, a population std, a batch-wide mean, groups read
with the wrong stride, 0 / 0 for a group of equal rewards) by recomputing the answer
with that mistake.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from llmbook.exercises.compare import (
    first_difference,
    known_mistake,
    same,
    tensor_answer,
    token_ids,
    unchanged,
)
from llmbook.exercises.core import CheckFailed, call, mismatch, register
from llmbook.model import IGNORE_INDEX

CHAPTER = "11"


def _in_shape(got: Any, shape: torch.Size) -> Any:
    """The answer in the reference's shape when it holds as many numbers, so that a known
    mistake is still recognised in an answer of shape (B, 1) instead of (B,)."""
    if isinstance(got, torch.Tensor) and got.numel() == shape.numel():
        return got.reshape(shape)
    return got


# --------------------------------------------------------------------------- a k-shot prompt


def reference_k_shot_prompt(instruction: str, examples: Sequence[tuple[str, str]], query: str) -> str:
    """The instruction line (if any), one ``input: output`` line per example, then ``query:``."""
    lines = [instruction] if instruction else []
    lines += [f"{x}: {y}" for x, y in examples]
    lines.append(f"{query}:")
    return "\n".join(lines)


PROMPT_CASES: list[tuple[str, list[tuple[str, str]], str]] = [
    ("", [], "gold"),
    ("Name the object that each colour stands for.", [], "gold"),
    ("", [("red", "apple")], "red"),
    ("", [("red", "apple"), ("gold", "door"), ("red", "apple")], "gold"),
    ("Translate English to French.", [("sea otter", "loutre de mer"), ("cheese", "fromage"),
                                      ("peppermint", "menthe poivrée")], "plush giraffe"),
]


def _k_shot_hint(instruction: str, examples: list[tuple[str, str]], query: str, got: str) -> str:
    expected = reference_k_shot_prompt(instruction, examples, query)
    if got == expected + "\n" or got == expected + " ":
        return ("the prompt must end right after the query's colon: no newline or space after it "
                "(the model's answer starts with the space).")
    if got.endswith("\n") and got.rstrip("\n") == expected.rsplit("\n", 1)[0]:
        return f"the last line is the query, written '{query}:'; it is missing."
    if not instruction and got == "\n" + expected:
        return "with an empty instruction, leave the instruction line out entirely (no blank first line)."
    if instruction and got == expected[len(instruction) + 1:]:
        return "when the instruction is not empty, it is the first line of the prompt."
    if got.replace("\n", " ") == expected.replace("\n", " ") or got.replace("\n", "") == expected.replace("\n", ""):
        return "put each example on its own line, and the query on the last line (join lines with '\\n')."
    if got.replace(" ", "") == expected.replace(" ", ""):
        return "write each example as 'input: output', with one space after the colon."
    return first_difference(expected, got)


@register("emergent.k_shot_prompt", chapter=CHAPTER, title="A k-shot prompt")
def check_k_shot_prompt(fn: Any) -> str:
    """Zero-shot with and without an instruction, one and three examples, multi-word inputs."""
    for instruction, examples, query in PROMPT_CASES:
        snapshot = list(examples)
        label = f"k_shot_prompt({instruction!r}, {examples!r}, {query!r})"
        got = call(fn, instruction, examples, query, label=label)
        expected = reference_k_shot_prompt(instruction, examples, query)
        if not isinstance(got, str):
            raise mismatch(f"{label} should return the prompt as one string.", expected, got,
                           "join the lines with '\\n'.join(lines).")
        unchanged(label, [examples], [snapshot], ["examples"])
        if got != expected:
            raise mismatch(f"{label} is not the expected prompt.", expected, got,
                           _k_shot_hint(instruction, examples, query, got))
    return ("Correct: instruction (when given), one 'input: output' line per example, and the "
            "query with its colon last, for 0 to 3 examples.")


# --------------------------------------------------------------------------- repeated sequences


def reference_repeated_sequences(batch: int, length: int, vocab_size: int,
                                 generator: torch.Generator) -> torch.Tensor:
    """(batch, 2 * length) int64: a random segment per row followed by an exact copy of it."""
    segment = torch.randint(vocab_size, (batch, length), generator=generator)
    return torch.cat([segment, segment], dim=1)


@register("emergent.repeated_sequences", chapter=CHAPTER, title="Repeated random sequences")
def check_repeated_sequences(fn: Any) -> str:
    """Shape, dtype, range, the copy, randomness across rows, and use of the generator."""
    for batch, length, vocab in ((4, 6, 10), (1, 1, 3), (16, 12, 32), (3, 20, 500)):
        label = f"repeated_sequences({batch}, {length}, {vocab}, generator)"
        got = call(fn, batch, length, vocab, torch.Generator().manual_seed(7), label=label)
        expected_shape = (batch, 2 * length)
        got = tensor_answer(got, label, expected=f"a tensor of shape {expected_shape}",
                            hint="draw the segment with torch.randint and join it to itself with "
                                 "torch.cat.")
        if tuple(got.shape) != expected_shape:
            hint = ("torch.cat joins along dim=1 (time) for two copies side by side; dim=0 would "
                    "stack them as extra rows." if tuple(got.shape) == (2 * batch, length) else
                    "one row per sequence, each twice the segment length.")
            raise mismatch(f"{label} has the wrong shape.", f"shape {expected_shape}", got, hint)
        token_ids(got, label, "the batch")
        if int(got.min()) < 0 or int(got.max()) >= vocab:
            raise mismatch(f"{label}: token ids must lie in 0 .. {vocab - 1}.", f"ids in [0, {vocab})",
                        got, "torch.randint(vocab_size, ...) draws from 0 to vocab_size - 1.")
        first, second = got[:, :length], got[:, length:]
        if not torch.equal(first, second):
            doubled = got[:, 0::2] if length > 1 else None
            hint = "the second half of each row must be an exact copy of the first half."
            if doubled is not None and torch.equal(got[:, 0::2], got[:, 1::2]):
                hint = ("every token appears twice in a row (a a b b ...): that is repeat_interleave. "
                        "Repeat the whole segment instead: a b ... a b ... (torch.cat([s, s], dim=1)).")
            raise mismatch(f"{label}: the second half does not repeat the first.", "row[length:] == row[:length]",
                           got[0], hint)
        if batch > 1 and length >= 6 and bool((got == got[0]).all()):
            raise mismatch(f"{label}: every row is the same sequence.", "a different random segment per row",
                           got, "draw a (batch, length) tensor of tokens, not one segment shared by all rows.")
    a = call(fn, 8, 10, 50, torch.Generator().manual_seed(3), label="repeated_sequences(8, 10, 50, g)")
    b = call(fn, 8, 10, 50, torch.Generator().manual_seed(3), label="repeated_sequences(8, 10, 50, g)")
    c = call(fn, 8, 10, 50, torch.Generator().manual_seed(4), label="repeated_sequences(8, 10, 50, g)")
    if not torch.equal(a, b):
        raise CheckFailed("Two calls with generators seeded alike gave different sequences.\nHint: pass the "
                          "generator to the random function: torch.randint(..., generator=generator).")
    if torch.equal(a, c):
        raise CheckFailed("Generators with different seeds gave the same sequences: the tokens must be drawn "
                          "at random, with the generator you are given.")
    return "Correct: random segments per row, each followed by its exact copy, reproducible from the generator."


# --------------------------------------------------------------------------- induction score


def reference_induction_score(weights: torch.Tensor) -> torch.Tensor:
    """Mean attention from each query t in the second copy (t >= L) to key t - L + 1, L = T // 2."""
    T = weights.shape[-1]
    L = T // 2
    t = torch.arange(L, T)
    return weights[..., t, t - L + 1].mean(dim=-1)


def _offset_score(weights: torch.Tensor, start: int, offset: int) -> torch.Tensor:
    T = weights.shape[-1]
    t = torch.arange(start, T)
    return weights[..., t, t - offset].mean(dim=-1)


def _random_maps(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    T = shape[-1]
    scores = torch.randn(shape, generator=g) * 2
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    return scores.masked_fill(future, float("-inf")).softmax(dim=-1)


def _pattern(T: int, offset_of: Callable[[int], int | None]) -> torch.Tensor:
    """A (T, T) map with all of query t's attention on key offset_of(t) (or on itself when None)."""
    w = torch.zeros(T, T)
    for t in range(T):
        k = offset_of(t)
        w[t, t if k is None else k] = 1.0
    return w


@register("emergent.induction_score", chapter=CHAPTER, title="The induction score of an attention map")
def check_induction_score(fn: Any) -> str:
    """A perfect induction head, a previous-token head, random maps of shapes (T,T) to (B,H,T,T)."""
    T = 10
    L = T // 2
    named = [
        ("a perfect induction head", _pattern(T, lambda t: t - L + 1 if t >= L else None), 1.0),
        ("a perfect previous-token head", _pattern(T, lambda t: t - 1 if t >= 1 else None), 0.0),
        ("a head that attends to the earlier copy of the same token",
         _pattern(T, lambda t: t - L if t >= L else None), 0.0),
    ]
    results = []
    for name, weights, value in named:
        got = call(fn, weights, label=f"induction_score(<{name}, shape ({T}, {T})>)")
        results.append((name, weights, value, got))
    hits = [same(got, torch.tensor(1.0, dtype=torch.float64)) for _, _, _, got in results]
    for name, weights, value, got in results:
        if same(got, torch.tensor(value, dtype=torch.float64)):
            continue
        if hits[1]:
            hint = ("your score is 1 for the previous-token head: you measured attention to key t - 1. "
                    "The induction target is t - L + 1.")
        elif hits[2]:
            hint = ("your score is 1 for the same-token head: you measured attention to key t - L, the "
                    "earlier occurrence of the same token. The induction head looks one further, at "
                    "t - L + 1, the token that came *after* it.")
        else:
            hint = known_mistake(_in_shape(got, torch.Size()), [(
                _offset_score(weights, 1, L - 1).double(),
                "average over the queries of the second copy only (t from L to T - 1); earlier "
                "tokens have no earlier occurrence.")]) or (
                "average weights[..., t, t - L + 1] over t = L, ..., T - 1, with L = T // 2.")
        raise mismatch(f"induction_score of {name} should be {value}.", value, got, hint)
    for shape, seed in (((12, 12), 0), ((4, 16, 16), 1), ((3, 2, 8, 8), 2), ((2, 1, 2, 2), 3)):
        weights = _random_maps(shape, seed)
        label = f"induction_score(<random causal attention of shape {shape}>)"
        got = call(fn, weights, label=label)
        expected = reference_induction_score(weights)
        if isinstance(got, (int, float)) and expected.dim() == 0:
            got = torch.tensor(float(got))
        if not isinstance(got, torch.Tensor):
            raise mismatch(f"{label} should return a tensor of one score per map.", expected, got)
        if got.shape != expected.shape:
            hint = ("return one score per attention map: average over the queries only (the last "
                    "dimension after indexing), keeping the leading dimensions (batch, heads).")
            raise mismatch(f"{label} has the wrong shape.", f"shape {tuple(expected.shape)}", got, hint)
        if not same(got, expected):
            Ls = shape[-1] // 2
            variants = [(_offset_score(weights, Ls, Ls), ("you used key t - L (the same token's earlier "
                         "occurrence); the induction target is t - L + 1.")),
                        (_offset_score(weights, Ls, 1), "you used key t - 1; the target is t - L + 1."),
                        (_offset_score(weights, Ls - 1, Ls - 1), ("start at query t = L, the first token "
                         "of the second copy."))]
            raise mismatch(f"{label} is not the induction score.", expected, got,
                           known_mistake(got, variants) or "index weights[..., t, t - L + 1] for t = L .. T - 1, then "
                           "average over that last dimension.")
    return ("Correct: 1 for a perfect induction head, 0 for previous-token and same-token heads, and "
            "the right per-head scores for batches of maps.")


# --------------------------------------------------------------------------- log p(answer)


def reference_sequence_logprob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over each row's targets that are not IGNORE_INDEX of log softmax(logits)[target]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    counted = targets != IGNORE_INDEX
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * counted).sum(dim=-1)


def _logprob_cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(11)
    cases = []
    for B, T, V, name in ((2, 5, 7, "two rows"), (3, 8, 11, "three rows"), (1, 4, 5, "one row")):
        logits = torch.randn(B, T, V, generator=g) * 2
        targets = torch.randint(V, (B, T), generator=g)
        targets[:, : T // 2] = IGNORE_INDEX          # the prompt
        if B > 1:
            targets[-1, -2:] = IGNORE_INDEX          # padding at the end of the last row
        cases.append((name, logits, targets))
    logits = torch.randn(2, 3, 4, generator=g)
    targets = torch.tensor([[IGNORE_INDEX] * 3, [1, 2, 3]])
    cases.append(("a row with no counted target", logits, targets))
    return cases


@register("emergent.sequence_logprob", chapter=CHAPTER, title="log p(answer | prompt) with masking")
def check_sequence_logprob(fn: Any) -> str:
    """Rows with masked prompts and padding, and a row with nothing counted (its sum is 0)."""
    for name, logits, targets in _logprob_cases():
        label = f"sequence_logprob(logits {tuple(logits.shape)}, targets {tuple(targets.shape)}) [{name}]"
        got = call(fn, logits.clone(), targets.clone(), label=label)
        expected = reference_sequence_logprob(logits, targets)
        got = tensor_answer(got, label, expected=expected, hint="one log-probability per row.")
        if not same(got, expected):
            logp = torch.log_softmax(logits, dim=-1)
            counted = targets != IGNORE_INDEX
            picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            probs = logits.softmax(-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            raw = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            variants = [
                ((picked * counted).sum(-1) / counted.sum(-1).clamp(min=1), ("that is the *mean* per "
                 "counted token; log p(answer) is the *sum* of the tokens' log-probabilities.")),
                (picked.sum(-1), ("the targets equal to -100 (prompt and padding) must not count; multiply "
                 "by the mask (targets != -100) before summing.")),
                ((probs * counted).sum(-1), "add up log-probabilities (torch.log_softmax), not probabilities."),
                ((raw * counted).sum(-1), ("raw logits are not log-probabilities: apply torch.log_softmax "
                 "over the vocabulary (dim=-1) first.")),
                ((logp[:, :-1].gather(-1, targets[:, 1:].clamp(min=0).unsqueeze(-1)).squeeze(-1)
                  * counted[:, 1:]).sum(-1), ("logits and targets are already aligned (targets[t] is "
                 "the token after position t): do not shift them again.")),
            ]
            raise mismatch(f"{label} gives the wrong log-probabilities.", expected, got,
                           known_mistake(_in_shape(got, expected.shape), variants)
                           or "gather log_softmax(logits)[b, t, targets[b, t]] and sum "
                           "over t where targets != -100.")
    return "Correct: the sum of the answer tokens' log-probabilities, with prompt and padding left out."


# --------------------------------------------------------------------------- the DPO loss


def reference_dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
                       reference_chosen: torch.Tensor, reference_rejected: torch.Tensor,
                       beta: float) -> torch.Tensor:
    """mean of -log sigmoid(beta * ((pi_w - ref_w) - (pi_l - ref_l)))."""
    margin = beta * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected))
    return -F.logsigmoid(margin).mean()


def _dpo_variants(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor,
                  beta: float) -> list[tuple[torch.Tensor, str]]:
    m = (pc - rc) - (pr - rr)
    return [
        (-F.logsigmoid(m).mean(), ("beta is missing: multiply the difference of log-ratios by beta "
         "before the sigmoid.")),
        (-F.logsigmoid(-beta * m).mean(), ("the sign is flipped: the loss should be small when the "
         "chosen answer gained more (relative to the reference) than the rejected one. Each log-ratio "
         "is policy minus reference (log pi - log ref), and the rejected one is subtracted.")),
        (F.logsigmoid(beta * m).mean(), "the loss is minus log sigmoid(...): you forgot the minus sign."),
        (-F.logsigmoid(beta * m).sum(), "average over the pairs (.mean()), do not sum."),
        (-torch.sigmoid(beta * m).mean(), "take the log of the sigmoid (F.logsigmoid)."),
        (-F.logsigmoid(beta * ((pc - rc) - (rr - pr))).mean(), ("both log-ratios are policy minus "
         "reference; the rejected one is subtracted as a whole: (pi_w - ref_w) - (pi_l - ref_l).")),
    ]


@register("emergent.dpo_loss", chapter=CHAPTER, title="The DPO loss")
def check_dpo_loss(fn: Any) -> str:
    """Random log-probabilities and betas, huge margins (no inf), and the gradient."""
    g = torch.Generator().manual_seed(5)
    for n, beta in ((4, 0.1), (7, 0.5), (1, 1.0), (16, 0.05)):
        pc, pr, rc, rr = (-torch.rand(n, generator=g, dtype=torch.float64) * 80 for _ in range(4))
        label = f"dpo_loss(<{n} pairs>, beta={beta})"
        got = call(fn, pc.clone(), pr.clone(), rc.clone(), rr.clone(), beta, label=label)
        expected = reference_dpo_loss(pc, pr, rc, rr, beta)
        if not isinstance(got, torch.Tensor):
            raise mismatch(f"{label} should return the loss as a tensor (so that it can be differentiated).",
                           expected, got, "keep it a tensor: no .item() or float(...) at the end.")
        if got.numel() != 1:
            raise mismatch(f"{label} should return one number, the mean over the pairs.", expected, got,
                           "finish with .mean().")
        if not same(got.reshape(()), expected):
            raise mismatch(f"{label} is not the DPO loss.", expected, got,
                           known_mistake(got.reshape(()), _dpo_variants(pc, pr, rc, rr, beta))
                           or "loss = -logsigmoid(beta * ((pi_w - ref_w) - (pi_l - ref_l))).mean()")
    # When the policy equals the reference the loss is log 2, whatever the log-probabilities.
    chosen = -torch.rand(5, generator=g, dtype=torch.float64) * 50
    rejected = -torch.rand(5, generator=g, dtype=torch.float64) * 50
    got = call(fn, chosen, rejected, chosen.clone(), rejected.clone(), 0.1, label="dpo_loss(pi, pi_l, pi, pi_l, 0.1)")
    if not (isinstance(got, torch.Tensor) and same(got.reshape(()), torch.tensor(math.log(2), dtype=torch.float64))):
        raise mismatch("When the policy equals the reference, every margin is 0 and the loss is log 2.",
                       math.log(2), got)
    # A pair the policy gets badly wrong: the loss is large but finite.
    pc, pr = torch.tensor([-3000.0], dtype=torch.float64), torch.tensor([-10.0], dtype=torch.float64)
    rc, rr = torch.tensor([-20.0], dtype=torch.float64), torch.tensor([-20.0], dtype=torch.float64)
    got = call(fn, pc, pr, rc, rr, 1.0, label="dpo_loss(<a margin of -2990>, beta=1.0)")
    expected = reference_dpo_loss(pc, pr, rc, rr, 1.0)
    if not (isinstance(got, torch.Tensor) and torch.isfinite(got).all() and same(got.reshape(()), expected)):
        raise mismatch("With a margin of -2990, the loss should be about 2990, not infinite.", expected, got,
                       "torch.log(torch.sigmoid(x)) rounds sigmoid(-2990) to 0 and gives -inf; "
                       "F.logsigmoid(x) computes the same value accurately.")
    # The loss must carry gradients back to the policy's log-probabilities.
    pc = torch.tensor([-12.0, -30.0], dtype=torch.float64, requires_grad=True)
    pr = torch.tensor([-15.0, -25.0], dtype=torch.float64, requires_grad=True)
    rc, rr = torch.tensor([-13.0, -28.0], dtype=torch.float64), torch.tensor([-14.0, -27.0], dtype=torch.float64)
    got = call(fn, pc, pr, rc, rr, 0.5, label="dpo_loss(<log-probs that require grad>, beta=0.5)")
    if not isinstance(got, torch.Tensor) or not got.requires_grad:
        raise CheckFailed("The loss must stay connected to the policy's log-probabilities so that training "
                          "can follow its gradient.\nHint: use torch operations only, no .item(), "
                          ".detach() or torch.no_grad().")
    got.reshape(()).backward()
    pc2 = pc.detach().clone().requires_grad_(True)
    pr2 = pr.detach().clone().requires_grad_(True)
    reference_dpo_loss(pc2, pr2, rc, rr, 0.5).backward()
    if not (same(pc.grad, pc2.grad) and same(pr.grad, pr2.grad)):
        raise mismatch("The gradient of your loss with respect to log pi(chosen) is not DPO's.", pc2.grad, pc.grad)
    return ("Correct: -logsigmoid(beta * margin) averaged over the pairs, log 2 when the policy is the "
            "reference, finite for huge margins, with the right gradients.")


# --------------------------------------------------------------------------- GRPO's group advantages


ADVANTAGE_EPS = 1e-6
"""The small number added to the group's standard deviation (as ``llmbook.rl``)."""


def reference_group_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(r - group mean) / (group sample std + eps), groups of ``group_size`` consecutive rewards."""
    r = rewards.view(-1, group_size)
    centred = r - r.mean(dim=1, keepdim=True)
    return (centred / (r.std(dim=1, keepdim=True) + ADVANTAGE_EPS)).reshape(-1)


def _advantage_variants(rewards: torch.Tensor, group_size: int) -> list[tuple[torch.Tensor, str]]:
    r = rewards.view(-1, group_size)
    centred = r - r.mean(dim=1, keepdim=True)
    strided = rewards.view(group_size, -1)
    return [
        ((centred / (r.std(dim=1, keepdim=True, unbiased=False) + ADVANTAGE_EPS)).reshape(-1),
         "use the sample standard deviation (n - 1 in the denominator), which is what "
         "torch.std computes by default; unbiased=False (or correction=0) divides by n."),
        ((centred / r.std(dim=1, keepdim=True)).reshape(-1),
         "a group whose rewards are all equal has std 0: add a small eps to the std before "
         "dividing (std + 1e-6), so that its advantages are 0 instead of 0 / 0 = nan."),
        (centred.reshape(-1), "divide the centred rewards by the group's standard deviation "
         "(plus eps), not only subtract the mean."),
        ((rewards - rewards.mean()) / (rewards.std() + ADVANTAGE_EPS),
         "normalise within each group (a prompt's own answers), not over the whole batch: "
         "reshape to (groups, group_size) and take the mean and std along dim=1."),
        (((strided - strided.mean(dim=0, keepdim=True)) / (strided.std(dim=0, keepdim=True)
                                                          + ADVANTAGE_EPS)).reshape(-1),
         "a group is group_size *consecutive* rewards: reshape to (-1, group_size) "
         "(one row per prompt) and reduce along dim=1."),
        ((r - r.mean(dim=1, keepdim=True)).div(r.std(dim=1, keepdim=True) + ADVANTAGE_EPS)
         .neg().reshape(-1), "the sign is flipped: an answer better than its group's mean "
         "gets a positive advantage (r - mean, not mean - r)."),
    ]


@register("emergent.group_advantages", chapter=CHAPTER, title="GRPO's group-relative advantages")
def check_group_advantages(fn: Any) -> str:
    """Binary and graded rewards, several group sizes, groups of equal rewards, inputs left alone."""
    g = torch.Generator().manual_seed(11)
    cases = [
        ("[1, 0, 0, 0,  1, 1, 0, 0]", torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0]), 4),
        ("[0, 1, 1, 0, 0, 1]", torch.tensor([0.0, 1, 1, 0, 0, 1]), 3),
        ("<32 rewards of 0 or 1>", torch.randint(2, (32,), generator=g).float(), 8),
        ("<12 graded rewards>", torch.rand(12, generator=g) * 5 - 1, 4),
        ("[0.3, 0.9]", torch.tensor([0.3, 0.9]), 2),
    ]
    for text, rewards, size in cases:
        label = f"group_advantages({text}, group_size={size})"
        original = rewards.clone()
        got = call(fn, rewards, size, label=label)
        unchanged(label, [rewards], [original], ["rewards"])
        expected = reference_group_advantages(original, size)
        got = tensor_answer(got, label, expected=expected,
                            hint="return one advantage per reward, a tensor of shape (N,).")
        if tuple(got.shape) != tuple(expected.shape):
            raise mismatch(f"{label} has the wrong shape.", f"shape {tuple(expected.shape)}", got,
                           "one advantage per reward, in the order of the rewards: after "
                           "working on (groups, group_size), reshape back with .reshape(-1).")
        if not same(got, expected):
            raise mismatch(f"{label} gives the wrong advantages.", expected, got,
                           known_mistake(got, _advantage_variants(original, size))
                           or "A = (r - mean of its group) / (std of its group + eps).")
    # Groups whose rewards are all equal: every advantage is exactly 0 (not nan).
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0])
    label = "group_advantages([1, 1, 1,  0, 0, 0,  1, 0, 1], group_size=3)"
    got = tensor_answer(call(fn, rewards.clone(), 3, label=label), label)
    expected = reference_group_advantages(rewards, 3)
    if got.numel() == 9 and not torch.isfinite(got.reshape(-1)[:6]).all():
        raise mismatch(f"{label}: a group whose rewards are all equal must get advantages of 0.",
                       expected, got, "its std is 0: add a small eps to the std before dividing "
                       "(std + 1e-6), so that 0 / eps gives 0 instead of 0 / 0 = nan.")
    if not same(got, expected):
        raise mismatch(f"{label} gives the wrong advantages.", expected, got,
                       known_mistake(got, _advantage_variants(rewards, 3))
                       or "A = (r - mean of its group) / (std of its group + eps).")
    return ("Correct: each reward compared with its own group's mean, in units of the group's "
            "standard deviation, and 0 for groups that all scored alike.")


__all__ = [
    "reference_dpo_loss", "reference_group_advantages", "reference_induction_score",
    "reference_k_shot_prompt", "reference_repeated_sequences", "reference_sequence_logprob",
]
