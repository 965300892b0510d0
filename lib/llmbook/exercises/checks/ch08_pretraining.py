"""Checks for chapter 8, "Pretraining".

Five exercises rebuild the pieces of pretraining and decoding that chapter 8 uses: the
next-token training pairs cut from a token stream (the "labels for free" of
self-supervised learning), cross-entropy from logits with ignored positions, bits per
byte (the unit that lets models with different tokenizers be compared), and the two
cuts that shape the distribution sampling draws from: temperature with top-k, and
top-p (nucleus). Each check compares the learner's function with a reference (the
library's ``TokenWindows``, ``F.cross_entropy`` and ``llmbook.generate.filtered_probs``)
and, when they differ, names the input, the expected and actual values, and the mistake
that most often produces that difference (recognised by computing it and comparing).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
import torch.nn.functional as F

from llmbook.datasets import TokenWindows
from llmbook.exercises.compare import (
    Mistake,
    close,
    head,
    known_mistake,
    number,
    same,
    tensor_answer,
    tensor_tuple,
    token_ids,
    unchanged,
)
from llmbook.exercises.core import CheckFailed, call, describe, mismatch, register
from llmbook.generate import filtered_probs
from llmbook.model import IGNORE_INDEX

CHAPTER = "08"
ATOL = 1e-6  # probabilities are compared more tightly than the default, near zero especially


# --------------------------------------------------------------------------- next-token pairs


def _pairs_ref(tokens: list[int], T: int) -> tuple[torch.Tensor, torch.Tensor]:
    ds = TokenWindows(tokens, T, stride=T)
    xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
    return torch.stack(xs), torch.stack(ys)


def _pairs_mistakes(tokens: list[int], T: int) -> list[Mistake]:
    t = torch.tensor(tokens)

    def windows(offset: int, n: int, stride: int = T) -> torch.Tensor:
        return torch.stack([t[i * stride + offset: i * stride + offset + T] for i in range(n)])

    n = (len(tokens) - 1) // T
    return [
        (lambda: (windows(0, n), windows(0, n)),
         ("your targets equal your inputs. The target at each position is the NEXT token: "
         "y is x shifted left by one, y[i] = tokens[start + 1 : start + T + 1].")),
        (lambda: (windows(1, n), windows(0, n)),
         ("inputs and targets are swapped: x is the window starting at the window's start, "
         "y the same window moved one token later.")),
        (lambda: (windows(0, n - 1), windows(1, n - 1)),
         ("you made one window too few. A window of T inputs needs T + 1 tokens, and the "
         "windows do not overlap, so there are (len(tokens) - 1) // T of them.")),
        (lambda: (windows(0, len(tokens) - T, 1), windows(1, len(tokens) - T, 1)),
         ("your windows overlap (they move by one token). Here each window starts T tokens "
         "after the previous one: the i-th starts at i * T.")),
        (lambda: (windows(0, n, T + 1), windows(1, n, T + 1)),
         ("each window starts T tokens after the previous one (i * T), not T + 1: the last "
         "target of one window is the first input of the next, and that is fine.")),
    ]


def _check_pairs(fn: Any, tokens: Any, T: int, what: str) -> None:
    as_list = [int(v) for v in tokens]
    label = f"next_token_pairs({what}, context_length={T})"
    given = tokens.clone() if isinstance(tokens, torch.Tensor) else list(tokens)
    too_few = (f"with {len(as_list)} tokens there are ({len(as_list)} - 1) // {T} = "
               f"{(len(as_list) - 1) // T} windows: the last window's targets run one token "
               f"past its inputs, so a window needs T + 1 tokens, not T.")
    out = call(fn, given, T, label=label, hints=[("stack expects", too_few),
                                                 ("out of range", too_few), ("size", too_few)])
    x, y = tensor_tuple(out, label, ("x", "y"), hint="end with `return x, y`, each of shape "
                                                     "(number of windows, context_length).")
    token_ids(x, label, "x")
    token_ids(y, label, "y")
    ex, ey = _pairs_ref(as_list, T)
    if same(x, ex) and same(y, ey):
        return
    hint = known_mistake((x, y), _pairs_mistakes(as_list, T))
    if hint is None and tuple(x.shape) != tuple(ex.shape):
        hint = (f"with {len(as_list)} tokens and context_length {T} there are "
                f"({len(as_list)} - 1) // {T} = {ex.shape[0]} windows, so x and y have shape "
                f"{tuple(ex.shape)}.")
    shown = f"x {ex[:2].tolist()}..., y {ey[:2].tolist()}..."
    got = f"x {x[:2].tolist()}..., y {y[:2].tolist()}..." if x.dim() == 2 and y.dim() == 2 else describe(out)
    raise CheckFailed(
        f"{label} gives the wrong pairs (first two windows shown).\n  expected: {shown} "
        f"shapes {tuple(ex.shape)}\n  got:      {got} shapes {tuple(x.shape)}, {tuple(y.shape)}"
        + f"\nHint: {hint or 'x[i] = tokens[i*T : i*T + T] and y[i] = tokens[i*T + 1 : i*T + T + 1].'}"
    )


@register("pretraining.next_token_pairs", chapter=CHAPTER, title="Next-token training pairs from a token stream")
def check_next_token_pairs(fn: Any) -> str:
    """Lists and tensors of several lengths against llmbook.datasets.TokenWindows(stride=T)."""
    g = torch.Generator().manual_seed(8)
    _check_pairs(fn, list(range(10, 19)), 4, "tokens=[10, 11, ..., 18] (9 tokens)")
    _check_pairs(fn, list(range(100, 105)), 4, "tokens=[100, ..., 104] (exactly one window)")
    _check_pairs(fn, list(range(20, 32)), 4, "tokens=[20, ..., 31] (12 tokens: a multiple of 4)")
    stream = torch.randint(0, 257, (103,), generator=g)
    _check_pairs(fn, stream, 8, "a tensor of 103 random token ids")
    _check_pairs(fn, list(b"The cat sat on the mat."), 5, "the bytes of 'The cat sat on the mat.'")
    return ("Matches llmbook.datasets.TokenWindows with stride = context_length on lists and "
            "tensors: every target is the next token, windows tile the stream, and none is lost.")


# --------------------------------------------------------------------------- cross-entropy


def _ce_ref(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.double(), targets, ignore_index=IGNORE_INDEX).float()


def _ce_mistakes() -> list[Mistake]:
    def keep(t: torch.Tensor) -> torch.Tensor:
        return t != IGNORE_INDEX

    def naive_logp(z: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.exp(z) / torch.exp(z).sum(-1, keepdim=True))

    def picked(logp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return logp[torch.arange(len(t)), t.clamp(min=0)]

    return [
        (lambda z, t: -picked(torch.log_softmax(z, -1), t)[keep(t)].sum(),
         ("you summed the losses; cross-entropy as a training loss is the MEAN over the "
         "positions that count.")),
        (lambda z, t: -(picked(torch.log_softmax(z, -1), t) * keep(t)).sum() / len(t),
         ("you divided by all positions, ignored ones included. Average over the positions "
         "whose target is not -100 only.")),
        (lambda z, t: -picked(torch.log_softmax(z, -1), t).mean(),
         ("the positions with target -100 must not count at all: leave them out of the sum "
         "and of the count.")),
        (lambda z, t: picked(torch.log_softmax(z, -1), t)[keep(t)].mean(),
         ("the sign is wrong: the loss is MINUS the log-probability of the target, so it is "
         "never negative.")),
        (lambda z, t: -picked(torch.log_softmax(z, -1), t)[keep(t)].mean() / math.log(2),
         "you measured in bits (log base 2); the loss is in nats: use the natural log."),
        (lambda z, t: -picked(torch.softmax(z, -1), t)[keep(t)].mean(),
         "you averaged minus the probabilities; the loss is minus the LOG-probability of the target."),
        (lambda z, t: -picked(torch.log_softmax(z, 0), t)[keep(t)].mean(),
         ("the softmax is over the wrong dimension: each row (one position) is a distribution "
         "over the vocabulary, so normalise along the last dimension.")),
        (lambda z, t: -picked(z, t)[keep(t)].mean(),
         ("you used the raw logit of the target; turn logits into log-probabilities first "
         "(subtract the log of the sum of exponentials, logsumexp).")),
    ]


def _run_ce(fn: Any, logits: torch.Tensor, targets: torch.Tensor, what: str) -> None:
    label = f"cross_entropy(logits of shape {tuple(logits.shape)}, targets {targets.tolist()})"
    given = [logits.clone(), targets.clone()]
    ignored = ("a target of -100 is not a token id: it marks a position to ignore. Keep only "
               "the rows whose target is not -100 (keep = targets != -100) before you pick the "
               "target's log-probability.")
    # Where -100 targets are in the input, any error is most likely about them.
    hints = [("", ignored)] if bool((targets == IGNORE_INDEX).any()) else []
    out = call(fn, *given, label=label, hints=hints)
    unchanged(label, given, [logits, targets], ("logits", "targets"))
    if isinstance(out, torch.Tensor) and out.numel() == 1:
        got = out.reshape(()).detach()
    elif isinstance(out, numbers.Real):
        got = torch.tensor(float(out))
    else:
        raise CheckFailed(
            f"{label} should return one number (a 0-dimensional tensor), but returned "
            f"{describe(out)}.\nHint: average the per-position losses to a single number."
        )
    expected = _ce_ref(logits, targets)
    if same(got, expected):
        return
    if not torch.isfinite(got):
        hint = ("your loss is nan or inf on large logits: exp(1000) overflows. Subtract each row's "
                "maximum before exponentiating (log_softmax(z) = z - max - log(sum(exp(z - max)))), "
                "or use torch.logsumexp.")
    else:
        hint = known_mistake(got, _ce_mistakes(), logits, targets, atol=ATOL) or (
            "loss = mean over kept positions of -(z[target] - logsumexp(z)).")
    raise mismatch(f"{label} is wrong for {what}.", round(float(expected), 6), round(float(got), 6), hint)


@register("pretraining.cross_entropy", chapter=CHAPTER, title="Cross-entropy from logits, with ignored targets")
def check_cross_entropy(fn: Any) -> str:
    """Small hand-checkable logits, random batches, -100 targets and huge logits, against F.cross_entropy."""
    g = torch.Generator().manual_seed(8)
    _run_ce(fn, torch.tensor([[2.0, 1.0, 0.1], [0.5, 2.5, 0.0]]), torch.tensor([0, 2]),
            "two positions and a 3-token vocabulary")
    _run_ce(fn, 3 * torch.randn(6, 11, generator=g), torch.randint(0, 11, (6,), generator=g),
            "random logits")
    _run_ce(fn, 3 * torch.randn(5, 7, generator=g), torch.tensor([3, IGNORE_INDEX, 0, IGNORE_INDEX, 6]),
            "targets where -100 marks positions to ignore")
    _run_ce(fn, torch.tensor([[1000.0, 999.0, 998.0], [-1000.0, -998.0, -999.0]]), torch.tensor([1, 0]),
            "very large logits (a naive exp overflows)")
    return ("Matches F.cross_entropy(logits, targets, ignore_index=-100): the mean of -log p(target) "
            "over the kept positions, in nats, stable for logits of ±1000.")


# --------------------------------------------------------------------------- bits per byte


def _bpb_ref(loss: float, n_tokens: int, n_bytes: int) -> float:
    return loss * n_tokens / n_bytes / math.log(2)


def _bpb_mistakes() -> list[Mistake]:
    return [
        (lambda loss, t, b: loss * t / b,
         "that is nats per byte; one bit is ln 2 ≈ 0.693 nats, so divide by math.log(2)."),
        (lambda loss, t, b: loss / math.log(2),
         ("that is bits per TOKEN. Spread the token's bits over its bytes: multiply by "
         "n_tokens / n_bytes.")),
        (lambda loss, t, b: loss * t / b * math.log(2),
         "you multiplied by ln 2; a nat is 1/ln 2 ≈ 1.443 bits, so DIVIDE by math.log(2)."),
        (lambda loss, t, b: loss * b / t / math.log(2),
         ("the ratio is upside down: the total loss is loss × n_tokens, and that total is "
         "shared among n_bytes bytes, so multiply by n_tokens / n_bytes.")),
        (lambda loss, t, b: loss * t / b / math.log(10),
         "bits use log base 2: divide by math.log(2), not math.log(10)."),
        (lambda loss, t, b: loss * t / b / math.log10(2),
         "math.log10(2) converts to base 10 digits; for bits divide by math.log(2) (natural log of 2)."),
        (lambda loss, t, b: math.exp(loss) * t / b,
         "exp(loss) is the perplexity, not a number of bits: bits = loss (nats) / ln 2."),
    ]


@register("pretraining.bits_per_byte", chapter=CHAPTER, title="Bits per byte from a per-token loss")
def check_bits_per_byte(fn: Any) -> str:
    """Byte-level and BPE-like token/byte ratios; the result must be a plain number."""
    cases = [
        (math.log(257), 1000, 1000, "a uniform guess over 257 byte tokens (loss ln 257)"),
        (2.0, 1000, 1000, "a byte-level model (one token per byte)"),
        (3.3, 2500, 10000, "a GPT-2-like tokenizer (4 bytes per token)"),
        (0.75, 3, 7, "small counts"),
    ]
    for loss, n_tokens, n_bytes, what in cases:
        label = f"bits_per_byte(loss={loss:.6g}, n_tokens={n_tokens}, n_bytes={n_bytes})"
        expected = _bpb_ref(loss, n_tokens, n_bytes)
        out = number(call(fn, loss, n_tokens, n_bytes, label=label), label, expected)
        if not close(float(out), expected):
            hint = known_mistake(float(out), _bpb_mistakes(), loss, n_tokens, n_bytes) or (
                "bits per byte = loss × n_tokens / n_bytes / ln 2: the total loss in nats, "
                "shared among the bytes, converted to bits.")
            raise mismatch(f"{label} is wrong for {what}.", round(expected, 6), round(float(out), 6), hint)
    return ("Right for byte-level and BPE-like tokenizers: a uniform guess over 257 bytes costs "
            "log2(257) ≈ 8.006 bits per byte, and the token/byte ratio moves bits between units.")


# --------------------------------------------------------------------------- temperature + top-k


def _topk_mistakes() -> list[Mistake]:
    def cut(z: torch.Tensor, k: int) -> torch.Tensor:
        if k >= z.size(-1):
            return z
        kth = torch.topk(z, k, dim=-1).values[..., -1:]
        return z.masked_fill(z < kth, float("-inf"))

    return [
        (lambda z, t, k: torch.softmax(cut(z * t, k), -1),
         ("you multiplied the logits by the temperature; DIVIDE them by it (a low temperature "
         "must sharpen the distribution).")),
        (lambda z, t, k: torch.softmax(cut(z, k), -1),
         "the temperature is missing: divide the logits by it before the softmax."),
        (lambda z, t, k: torch.softmax(z / t, -1) * (cut(z, k) > float("-inf")),
         ("you cut the probabilities to the top k but did not renormalise: the kept ones "
         "must sum to 1 again (apply the softmax after the cut, or divide by their sum).")),
        (lambda z, t, k: torch.softmax(cut(z / t, k + 1), -1),
         "you kept k + 1 tokens; keep exactly the k largest logits."),
        (lambda z, t, k: torch.softmax(cut(z / t, max(k - 1, 1)), -1),
         "you kept k - 1 tokens; keep exactly the k largest logits."),
        (lambda z, t, k: torch.softmax((z / t).masked_fill(cut(z, k) > float("-inf"), float("-inf")), -1),
         "you removed the k MOST likely tokens; keep them and remove the others."),
        (lambda z, t, k: torch.softmax(cut(z / t, k).masked_fill(cut(z, k) == float("-inf"), 0.0), -1),
         ("the cut tokens still get probability: set their logits to -inf (not 0) before the "
         "softmax, so exp gives exactly 0.")),
        (lambda z, t, k: torch.softmax(z, -1) / t,
         "divide the LOGITS by the temperature before the softmax, not the probabilities after it."),
    ]


def _run_topk(fn: Any, logits: torch.Tensor, temperature: float, k: int, what: str) -> None:
    label = f"top_k_probs(logits of shape {tuple(logits.shape)}, temperature={temperature}, k={k})"
    given = logits.clone()
    out = call(fn, given, temperature, k, label=label)
    unchanged(label, [given], [logits], ["logits"])
    out = tensor_answer(out, label, shape=logits.shape, hint="return one probability per "
                        "vocabulary token (cut ones are 0), same shape as logits.")
    expected = filtered_probs(logits.double(), temperature, top_k=k).float()
    if same(out, expected, atol=ATOL):
        return
    if not torch.isfinite(out).all():
        hint = ("your probabilities contain nan or inf. Set the logits you cut to -inf and let "
                "the softmax turn them into exactly 0; check that at least one logit is kept.")
    else:
        hint = known_mistake(out, _topk_mistakes(), logits, temperature, k, atol=ATOL) or (
            "divide the logits by the temperature, set all but the k largest to -inf, then softmax.")
    raise mismatch(f"{label} is wrong for {what} (first values shown).", head(expected, 8, 5), head(out, 8, 5), hint)


@register("pretraining.top_k_probs", chapter=CHAPTER, title="Temperature and top-k: the distribution to sample from")
def check_top_k_probs(fn: Any) -> str:
    """Random logits (no ties), 1-D and batched, several temperatures and k, against filtered_probs."""
    g = torch.Generator().manual_seed(8)
    _run_topk(fn, torch.tensor([2.0, 1.0, 0.5, -1.0, 3.0]), 1.0, 2, "five logits, temperature 1, k = 2")
    _run_topk(fn, 2 * torch.randn(40, generator=g), 0.5, 5, "40 random logits, a low temperature")
    _run_topk(fn, 2 * torch.randn(40, generator=g), 2.0, 10, "40 random logits, a high temperature")
    _run_topk(fn, 2 * torch.randn(3, 17, generator=g), 0.8, 4, "a batch of 3 rows (cut each row on its own)")
    _run_topk(fn, 2 * torch.randn(9, generator=g), 1.3, 9, "k equal to the vocabulary size (nothing is cut)")
    return ("Matches llmbook.generate.filtered_probs(logits, temperature, top_k=k): divide by the "
            "temperature, keep the k largest logits of each row, softmax; nothing else gets probability.")


# --------------------------------------------------------------------------- top-p


def _top_p_ref(logits: torch.Tensor, p: float) -> torch.Tensor:
    return filtered_probs(logits.double(), 1.0, top_p=p).float()


def _top_p_mistakes() -> list[Mistake]:
    def keep_mask(z: torch.Tensor, p: float, rule: str) -> torch.Tensor:
        probs = torch.softmax(z.double(), -1)
        sp, order = torch.sort(probs, dim=-1, descending=True)
        cum = sp.cumsum(-1)
        if rule == "below":      # keep while the running total stays below p (drops the crossing token)
            keep_sorted = cum < p
        elif rule == "upto":     # keep while the running total is at most p
            keep_sorted = cum <= p
        else:                    # the correct rule
            keep_sorted = (cum - sp) < p
        return keep_sorted.scatter(-1, order, keep_sorted)

    def renorm(z: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return torch.softmax(z.double().masked_fill(~keep, float("-inf")), -1).float()

    return [
        (lambda z, p: renorm(z, keep_mask(z, p, "below")),
         ("you left out the token that makes the total reach p. Keep tokens, most likely first, "
         "until their total probability is at least p, INCLUDING the one that crosses p (so the "
         "most likely token is always kept).")),
        (lambda z, p: renorm(z, keep_mask(z, p, "upto")),
         ("you left out the token that makes the total cross p. Keep tokens, most likely first, "
         "until their total probability is at least p, including the one that crosses it.")),
        (lambda z, p: (torch.softmax(z.double(), -1) * keep_mask(z, p, "right")).float(),
         ("the kept probabilities must be renormalised to sum to 1 (softmax again after the cut, "
         "or divide by their sum).")),
        (lambda z, p: torch.softmax(z, -1),
         ("nothing was cut: keep only the smallest set of most likely tokens whose probabilities "
         "add up to at least p.")),
    ]


def _run_top_p(fn: Any, logits: torch.Tensor, p: float, what: str) -> None:
    label = f"top_p_probs(logits of shape {tuple(logits.shape)}, p={p})"
    given = logits.clone()
    out = call(fn, given, p, label=label)
    unchanged(label, [given], [logits], ["logits"])
    out = tensor_answer(out, label, shape=logits.shape, hint="return one probability per "
                        "vocabulary token (cut ones are 0), same shape as logits.")
    expected = _top_p_ref(logits, p)
    if same(out, expected, atol=ATOL):
        return
    if not torch.isfinite(out).all():
        hint = "your probabilities contain nan: is at least one token always kept (the most likely one)?"
    elif (out.sum(-1) == 0).any():
        hint = "a row got no probability at all: the most likely token must always be kept."
    else:
        hint = known_mistake(out, _top_p_mistakes(), logits, p, atol=ATOL) or (
            "sort the probabilities in descending order, keep a token while the total of the tokens "
            "BEFORE it is still below p, map the decision back to the original order, renormalise. "
            "The batch rows are cut each on its own.")
    raise mismatch(f"{label} is wrong for {what} (first values shown).", head(expected, 8, 5), head(out, 8, 5), hint)


@register("pretraining.top_p_probs", chapter=CHAPTER, title="Top-p (nucleus): the smallest set reaching p")
def check_top_p_probs(fn: Any) -> str:
    """Hand-made and random logits (totals never exactly p), 1-D and batched, against filtered_probs."""
    g = torch.Generator().manual_seed(8)
    probs = torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03])
    _run_top_p(fn, probs.log(), 0.7, "probabilities [0.5, 0.25, 0.15, 0.07, 0.03] (keeps the first two)")
    _run_top_p(fn, probs.log()[[3, 0, 4, 2, 1]], 0.8, "the same probabilities, shuffled (keeps three)")
    _run_top_p(fn, torch.tensor([5.0, 0.0, -1.0, 0.5]), 0.3, "one dominant token (only it is kept)")
    _run_top_p(fn, 1.5 * torch.randn(30, generator=g), 0.9, "30 random logits, p = 0.9")
    _run_top_p(fn, 1.5 * torch.randn(4, 12, generator=g), 0.6, "a batch of 4 rows (cut each row on its own)")
    return ("Matches llmbook.generate.filtered_probs(logits, top_p=p): the most likely tokens whose "
            "total first reaches p (the crossing token included), renormalised, each row on its own.")
