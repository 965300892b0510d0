"""Checks for chapter 8, "Pretraining".

Five exercises build what chapter 8 explains but leaves to the library, and measure one
training run: a training step that accumulates gradients over micro-batches with ignored
(-100) targets and matches one big batch, the learning-rate schedule (linear warmup, then
a cosine), the top-p (nucleus) and min-p cuts of the distribution that sampling draws
from, and an experiment that picks a learning rate and a width so that a small GPT's
held-out loss falls below a bound in 200 steps. Each check compares the learner's answer
with a reference (one big batch through ``llmbook.GPT``, ``llmbook.step.lr_at``,
``llmbook.generate.filtered_probs``, min-p by its definition, and a training run it does
itself) and, when they differ, names the input, the expected and actual values, and the
mistake that most often produces that difference (recognised by computing it and
comparing).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
import torch.nn.functional as F

from llmbook.config import GPTConfig
from llmbook.exercises.compare import (
    Mistake,
    close,
    head,
    known_mistake,
    number,
    same,
    tensor_answer,
    unchanged,
)
from llmbook.exercises.core import CheckFailed, call, describe, mismatch, register
from llmbook.generate import filtered_probs
from llmbook.model import GPT, IGNORE_INDEX
from llmbook.step import lr_at

CHAPTER = "08"
ATOL = 1e-6  # probabilities are compared more tightly than the default, near zero especially


# --------------------------------------------------------------------------- gradient accumulation

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def _accum_model(config: GPTConfig, weights: dict[str, torch.Tensor]) -> GPT:
    model = GPT(config).double()
    model.load_state_dict({k: v.double() for k, v in weights.items()})
    return model


def _sgd(model: GPT, lr: float) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.sub_(lr * p.grad)
    return {k: v.float() for k, v in model.state_dict().items()}


def _token_losses(model: GPT, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits, _ = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def _accum_ref(config: GPTConfig, weights: dict[str, torch.Tensor], batches: Batches,
               lr: float, mode: str = "right") -> dict[str, torch.Tensor]:
    """One SGD step on the mean loss over every kept target of every micro-batch (mode
    "right"), or what a usual mistake computes instead."""
    model = _accum_model(config, weights)
    kept = sum(int((y != IGNORE_INDEX).sum()) for _, y in batches)
    total = sum(y.numel() for _, y in batches)
    for i, (x, y) in enumerate(batches):
        n = int((y != IGNORE_INDEX).sum())
        if mode == "last" and i < len(batches) - 1:
            continue
        if mode == "right":
            loss = _token_losses(model, x, y) / kept
        elif mode == "mean_of_means":
            loss = _token_losses(model, x, y) / n / len(batches)
        elif mode == "sum_of_means":
            loss = _token_losses(model, x, y) / n
        elif mode == "all_positions":
            loss = _token_losses(model, x, y) / total
        elif mode == "sum":
            loss = _token_losses(model, x, y)
        elif mode == "ascent":
            loss = -_token_losses(model, x, y) / kept
        elif mode == "last":
            loss = _token_losses(model, x, y) / n
        elif mode in ("step_each", "step_each_mean"):
            loss = _token_losses(model, x, y) / (kept if mode == "step_each" else n)
            loss.backward()
            _sgd(model, lr)
            model.zero_grad()
            continue
        else:  # pragma: no cover - a typo in this module
            raise ValueError(mode)
        loss.backward()
    if mode.startswith("step_each"):
        return {k: v.float() for k, v in model.state_dict().items()}
    return _sgd(model, lr)


_ACCUM_MISTAKES = [
    ("mean_of_means",
     ("you averaged each micro-batch's mean loss (loss / number of micro-batches). With "
      "ignored targets the micro-batches keep different numbers of tokens, so that is not "
      "the big batch's mean: add up the summed losses (reduction='sum') and divide by the "
      "number of kept targets in ALL micro-batches together.")),
    ("sum_of_means",
     ("you added up the micro-batches' mean losses without dividing: the gradient is about "
      "number-of-micro-batches times too large. Divide each micro-batch's SUMMED loss by "
      "the number of kept targets in all micro-batches together.")),
    ("all_positions",
     ("you divided by every target position, ignored ones included. Count only the "
      "targets that are not -100.")),
    ("sum",
     ("you summed the losses without dividing; the big batch's loss is the MEAN over its "
      "kept targets: divide by their number.")),
    ("ascent", "the step went uphill: subtract lr × gradient (p -= lr * p.grad), do not add it."),
    ("last",
     ("only the last micro-batch's gradient arrived: did you call zero_grad() inside the "
      "loop? Zero the gradients once, before the first micro-batch, and let backward() "
      "add them up.")),
    ("step_each",
     ("you took one step per micro-batch. Accumulating means: backward() on every "
      "micro-batch (gradients add up in .grad), then ONE step at the end.")),
    ("step_each_mean",
     ("you took one step per micro-batch, each on its own mean loss: that is several "
      "small-batch steps, not one big-batch step. Call backward() on every micro-batch "
      "(gradients add up in .grad), then take ONE step at the end.")),
]


def _accum_batches(g: torch.Generator, V: int, T: int, sizes: list[int],
                   ignore: list[float]) -> Batches:
    batches = []
    for b, share in zip(sizes, ignore, strict=True):
        x = torch.randint(0, V, (b, T), generator=g)
        y = torch.randint(0, V, (b, T), generator=g)
        y[torch.rand(b, T, generator=g) < share] = IGNORE_INDEX
        batches.append((x, y))
    return batches


def _run_accum(fn: Any, config: GPTConfig, batches: Batches, lr: float, seed: int,
               what: str) -> None:
    torch.manual_seed(seed)
    weights = {k: v.clone() for k, v in GPT(config).state_dict().items()}
    for name in weights:  # weights further from 0 than the usual init: every gradient shows
        weights[name] = weights[name] + 0.05 * torch.randn(weights[name].shape,
                                                           generator=torch.Generator().manual_seed(seed))
    weights["lm_head.weight"] = weights["wte.weight"]  # tied, as the model has it
    kept = [int((y != IGNORE_INDEX).sum()) for _, y in batches]
    label = (f"accumulated_step(config, weights, micro_batches, lr={lr}) with "
             f"{len(batches)} micro-batches of {[int(x.shape[0]) for x, _ in batches]} "
             f"sequences keeping {kept} targets ({what})")
    given = ({k: v.clone() for k, v in weights.items()},
             [(x.clone(), y.clone()) for x, y in batches])
    out = call(fn, config, given[0], given[1], lr, label=label, hints=[
        ("Missing key", "return model.state_dict() after the step: every key of weights."),
        ("-100", "targets of -100 are ignored: F.cross_entropy(..., ignore_index=-100)."),
        ("Target", "targets of -100 are ignored: F.cross_entropy(..., ignore_index=-100).")])
    if not isinstance(out, dict) or sorted(out) != sorted(weights):
        missing = sorted(set(weights) - set(out)) if isinstance(out, dict) else None
        raise CheckFailed(
            f"{label} should return the updated weights as a dict with the same keys as "
            f"weights (model.state_dict()), but returned {describe(out)}"
            + (f"; missing {missing[:4]}" if missing else "") + ".")
    expected = _accum_ref(config, weights, batches, lr)
    bad = [k for k in expected if not (isinstance(out[k], torch.Tensor)
                                       and tuple(out[k].shape) == tuple(expected[k].shape)
                                       and same(out[k].double(), expected[k].double(),
                                                rtol=1e-4, atol=1e-6))]
    if not bad:
        return
    name = bad[0]
    got = out[name]
    if not isinstance(got, torch.Tensor):
        raise mismatch(f"{label}: weights[{name!r}] should be a tensor.", "a tensor", got)
    hint = None
    if not torch.isfinite(got).all():
        hint = ("your weights became nan. A micro-batch whose targets are all -100 has no "
                "mean (0 / 0): sum the losses of each micro-batch and divide by the number "
                "of kept targets in ALL micro-batches, which is never 0 here.")
    if hint is None and torch.equal(got.double(), weights[name].double()):
        hint = ("the weights did not change: after backward() on every micro-batch, take "
                "the step, p -= lr * p.grad (inside torch.no_grad()), or optimizer.step().")
    if hint is None:
        for mode, why in _ACCUM_MISTAKES:
            try:
                wrong = _accum_ref(config, weights, batches, lr, mode)
            except Exception:  # a mistake that cannot run explains nothing
                continue
            if all(same(out[k].double(), wrong[k].double(), rtol=1e-4, atol=1e-6)
                   for k in wrong if isinstance(out[k], torch.Tensor)):
                hint = why
                break
    raise mismatch(
        f"{label}: weights[{name!r}] after the step is wrong (first values shown).",
        head(expected[name], digits=6), head(got, digits=6),
        hint or "zero the gradients once; for every micro-batch add its summed loss "
                "divided by the kept targets of all micro-batches, backward(); then one "
                "SGD step, p -= lr * p.grad.")


@register("pretraining.accumulated_step", chapter=CHAPTER, kind="build",
          title="A training step that accumulates gradients over micro-batches")
def check_accumulated_step(fn: Any) -> str:
    """Micro-batches of different sizes and ignored shares through a tiny tied GPT, against
    one SGD step on the mean loss of the whole batch."""
    g = torch.Generator().manual_seed(8)
    config = GPTConfig(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    _run_accum(fn, config, _accum_batches(g, 11, 6, [3], [0.3]), 0.5, 0,
               "one micro-batch: the big batch itself")
    _run_accum(fn, config, _accum_batches(g, 11, 6, [2, 3, 1], [0.1, 0.6, 0.3]), 0.5, 1,
               "micro-batches that keep different numbers of targets")
    _run_accum(fn, config, _accum_batches(g, 11, 5, [2, 2, 2], [0.2, 1.0, 0.0]), 0.3, 2,
               "a micro-batch whose targets are all -100")
    return ("One step with accumulated gradients equals one SGD step on the whole batch: "
            "every kept target weighs the same whichever micro-batch holds it, and a "
            "micro-batch with nothing to predict adds nothing.")


# --------------------------------------------------------------------------- the schedule


def _schedule_mistakes() -> list[Mistake]:
    def cosine(step: int, max_steps: int, lr: float, min_lr: float, warmup: int,
               start: int, span: int, floor: float) -> float:
        progress = min(max((step - start) / max(1, span), 0.0), 1.0)
        return floor + 0.5 * (lr - floor) * (1 + math.cos(math.pi * progress))

    def warm(step: int, warmup: int, lr: float, plus: int) -> float:
        return lr * (step + plus) / warmup

    def make(plus: int = 1, floor_zero: bool = False, span_all: bool = False,
             linear: bool = False, no_warmup: bool = False) -> Any:
        def f(step: int, max_steps: int, lr: float, min_lr: float, warmup: int) -> float:
            if step < warmup and not no_warmup:
                return warm(step, warmup, lr, plus)
            floor = 0.0 if floor_zero else min_lr
            if step >= max_steps:
                return floor
            span = max_steps if span_all else max_steps - warmup
            if linear:
                return lr - (lr - floor) * (step - warmup) / max(1, span)
            return cosine(step, max_steps, lr, min_lr, warmup, 0 if span_all else warmup,
                          span, floor)
        return f

    return [
        (make(plus=0), ("the warmup starts one step late: at step 0 the rate is "
                        "lr × 1 / warmup_steps, not 0 (a step at rate 0 is wasted), so use "
                        "(step + 1) / warmup_steps.")),
        (make(floor_zero=True), ("the cosine ends at min_lr, not at 0: "
                                 "min_lr + 0.5·(lr − min_lr)·(1 + cos(π·progress)).")),
        (make(span_all=True), ("the cosine starts where the warmup ends: progress = (step − "
                               "warmup_steps) / (max_steps − warmup_steps), not step / max_steps.")),
        (make(linear=True), "that decays in a straight line; the decay follows half a cosine."),
        (make(no_warmup=True), ("there is no warmup: for step < warmup_steps the rate climbs "
                                "linearly, lr × (step + 1) / warmup_steps.")),
    ]


@register("pretraining.lr_schedule", chapter=CHAPTER, kind="formula",
          title="The learning rate: linear warmup, then a cosine")
def check_lr_schedule(fn: Any) -> str:
    """Every step of three schedules (and steps past the end) against llmbook.step.lr_at."""
    for max_steps, lr, min_lr, warmup in [(100, 1e-3, 1e-4, 10), (20, 3e-3, 0.0, 5),
                                          (50, 6e-4, 6e-5, 0)]:
        for step in [*range(max_steps + 3)]:
            label = (f"lr_at(step={step}, max_steps={max_steps}, lr={lr}, min_lr={min_lr}, "
                     f"warmup_steps={warmup})")
            expected = lr_at(step, max_steps, lr, min_lr, warmup)
            got = number(call(fn, step, max_steps, lr, min_lr, warmup, label=label,
                              hints=[("division by zero", "with warmup_steps = 0 there is "
                                      "no warmup: go straight to the cosine.")]),
                         label, expected)
            if close(float(got), expected, rel=1e-6, abs_=1e-12):
                continue
            hint = None
            if step >= max_steps:
                hint = "after max_steps the rate stays at min_lr."
            hint = hint or known_mistake(float(got), _schedule_mistakes(), step, max_steps, lr,
                                         min_lr, warmup)
            raise mismatch(f"{label} is wrong.", expected, float(got),
                           hint or "warmup: lr·(step + 1)/warmup_steps; then min_lr + "
                                   "0.5·(lr − min_lr)·(1 + cos(π·progress)) with progress = "
                                   "(step − warmup_steps)/(max_steps − warmup_steps).")
    return ("Matches llmbook.step.lr_at at every step of three schedules: a linear warmup "
            "from lr/warmup_steps to lr, half a cosine down to min_lr, and min_lr after "
            "the end.")


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


@register("pretraining.top_p_probs", chapter=CHAPTER, kind="build",
          title="Top-p (nucleus): the smallest set reaching p")
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
# --------------------------------------------------------------------------- min-p


def _min_p_ref(logits: torch.Tensor, min_p: float, temperature: float) -> torch.Tensor:
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    keep = probs >= min_p * probs.amax(dim=-1, keepdim=True)
    kept = probs * keep
    return (kept / kept.sum(-1, keepdim=True)).float()


def _min_p_mistakes() -> list[Mistake]:
    def renorm(p: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        kept = p * keep
        return (kept / kept.sum(-1, keepdim=True)).float()

    def soft(z: torch.Tensor, t: float) -> torch.Tensor:
        return torch.softmax(z.double() / t, -1)

    return [
        (lambda z, m, t: renorm(soft(z, t), soft(z, t) >= m),
         ("you compared each probability with min_p itself. The threshold scales with the "
          "most likely token: keep p ≥ min_p × max(p), so a confident model cuts more and "
          "an unsure one less.")),
        (lambda z, m, t: (soft(z, t) * (soft(z, t) >= m * soft(z, t).amax(-1, keepdim=True))).float(),
         ("the kept probabilities must be renormalised to sum to 1: divide them by their "
          "total (or softmax again with the cut logits set to -inf).")),
        (lambda z, m, t: renorm(soft(z, t), soft(z, 1.0) >= m * soft(z, 1.0).amax(-1, keepdim=True)),
         ("you decided what to keep from the probabilities before the temperature. Divide "
          "the logits by the temperature first, then cut with min_p on those probabilities.")),
        (lambda z, m, t: renorm(soft(z, 1.0), soft(z, 1.0) >= m * soft(z, 1.0).amax(-1, keepdim=True)),
         "the temperature is missing: divide the logits by it before the softmax."),
        (lambda z, m, t: renorm(soft(z, t), soft(z, t) >= m * soft(z, t).max()),
         ("you took the largest probability of the whole batch; each row is its own "
          "distribution: use the maximum of each row (amax(dim=-1, keepdim=True)).")),
        (lambda z, m, t: renorm(soft(z, t), soft(z, t) < m * soft(z, t).amax(-1, keepdim=True)),
         "you kept the UNLIKELY tokens; keep those with p ≥ min_p × max(p) and drop the rest."),
    ]


def _run_min_p(fn: Any, logits: torch.Tensor, min_p: float, temperature: float, what: str) -> None:
    label = f"min_p_probs(logits of shape {tuple(logits.shape)}, min_p={min_p}, temperature={temperature})"
    given = logits.clone()
    out = call(fn, given, min_p, temperature, label=label)
    unchanged(label, [given], [logits], ["logits"])
    out = tensor_answer(out, label, shape=logits.shape, hint="return one probability per "
                        "vocabulary token (cut ones are 0), same shape as logits.")
    expected = _min_p_ref(logits, min_p, temperature)
    if same(out, expected, atol=ATOL):
        return
    if not torch.isfinite(out).all():
        hint = ("a row came out as nan: nothing in it passed your cut. The most likely "
                "token of every row always passes p ≥ min_p × max(p) when max(p) is the "
                "row's own largest probability, amax(dim=-1, keepdim=True).")
    else:
        hint = known_mistake(out, _min_p_mistakes(), logits, min_p, temperature, atol=ATOL) or (
            "p = softmax(logits / temperature); keep p ≥ min_p × (the largest p of the row); "
            "divide the kept ones by their sum.")
    raise mismatch(f"{label} is wrong for {what} (first values shown).", head(expected, 8, 5),
                   head(out, 8, 5), hint)


@register("pretraining.min_p_probs", chapter=CHAPTER, kind="build",
          title="Min-p: cut relative to the most likely token")
def check_min_p_probs(fn: Any) -> str:
    """Hand-made, random and batched logits (a confident row and a flat one), several
    temperatures, against min-p's definition."""
    g = torch.Generator().manual_seed(8)
    probs = torch.tensor([0.5, 0.25, 0.15, 0.07, 0.03])
    _run_min_p(fn, probs.log(), 0.2, 1.0,
               "probabilities [0.5, 0.25, 0.15, 0.07, 0.03] (the cut is 0.1: three are kept)")
    _run_min_p(fn, 2 * torch.randn(40, generator=g), 0.1, 1.0, "40 random logits")
    _run_min_p(fn, 2 * torch.randn(40, generator=g), 0.05, 1.5, "40 random logits, temperature 1.5")
    batch = torch.stack([torch.tensor([6.0, 2.0, 1.0, 0.5, 0.0, -1.0]),
                         torch.tensor([0.3, 0.2, 0.1, 0.0, -0.1, -2.0])])
    _run_min_p(fn, batch, 0.3, 0.7, "a confident row and a flat row (cut each on its own)")
    return ("Matches min-p (Nguyen et al., 2024): keep the tokens whose probability after the "
            "temperature is at least min_p times the row's largest, renormalised; a confident "
            "row keeps few tokens and a flat row many.")


# --------------------------------------------------------------------------- experiment

MARKOV_VOCAB, MARKOV_T, MARKOV_STEPS, MARKOV_BATCH, MARKOV_BOUND = 32, 16, 200, 16, 0.85


def markov_stream(n: int, seed: int) -> torch.Tensor:
    """``n`` tokens of a made-up language: each of the 32 tokens has two possible next
    tokens, equally likely (fixed once for all), so the best possible loss is ln 2 ≈ 0.693
    nats per token."""
    table = torch.Generator().manual_seed(1234)
    successors = torch.stack([torch.randperm(MARKOV_VOCAB, generator=table)[:2]
                              for _ in range(MARKOV_VOCAB)])
    g = torch.Generator().manual_seed(seed)
    choice = torch.randint(0, 2, (n,), generator=g).tolist()
    out, t = [], int(torch.randint(0, MARKOV_VOCAB, (1,), generator=g))
    for c in choice:
        out.append(t)
        t = int(successors[t, c])
    return torch.tensor(out)


def _windows(stream: torch.Tensor, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(0, len(stream) - MARKOV_T - 1, (n,), generator=g).tolist()
    x = torch.stack([stream[s:s + MARKOV_T] for s in starts])
    y = torch.stack([stream[s + 1:s + MARKOV_T + 1] for s in starts])
    return x, y


def train_markov(settings: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Train a one-block GPT (2 heads, width ``settings["n_embd"]``) on the made-up
    language: 200 AdamW steps of 16 windows of 16 tokens at ``settings["lr"]``, seeded.
    Returns the training loss every 25 steps and the held-out loss on 256 windows of a
    stream the model never saw. This is exactly what the check runs."""
    torch.manual_seed(seed)
    train_ids, held_ids = markov_stream(20_000, 1), markov_stream(5_000, 2)
    model = GPT(GPTConfig(vocab_size=MARKOV_VOCAB, n_positions=MARKOV_T,
                          n_embd=int(settings["n_embd"]), n_layer=1, n_head=2, dropout=0.0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(settings["lr"]), weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(MARKOV_STEPS):
        _, loss = model(*_windows(train_ids, MARKOV_BATCH, g))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 0 or step == MARKOV_STEPS - 1:
            losses.append(round(loss.item(), 4))
    model.eval()
    with torch.no_grad():
        _, held = model(*_windows(held_ids, 256, torch.Generator().manual_seed(99)))
    return {"train_loss": losses, "held_out_loss": float(held)}


def _is_real(value: Any) -> bool:
    """A real number, not a bool (without narrowing the type, so checks stay typed Any)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@register("pretraining.lr_and_width", chapter=CHAPTER, kind="experiment", time_limit=30,
          title="Choose a learning rate and a width that reach a held-out loss in 200 steps")
def check_lr_and_width(fn: Any) -> str:
    """Train with the learner's settings (train_markov, seed 0) and measure held-out loss."""
    label = "markov_settings()"
    value = call(fn, label=label)
    example = "{'lr': 1e-4, 'n_embd': 16}"
    if not isinstance(value, dict) or sorted(value) != ["lr", "n_embd"]:
        raise CheckFailed(f"{label} should return a dict with exactly the keys ['lr', "
                          f"'n_embd'], but returned {describe(value)}.\nHint: for example "
                          f"{example}.")
    lr: Any = value["lr"]
    d: Any = value["n_embd"]
    if not _is_real(lr) or not 0 < lr <= 1:
        raise CheckFailed(f"{label}: lr = {lr!r} should be a number between 0 and 1.")
    if (not _is_real(d) or not float(d).is_integer()
            or not 2 <= d <= 64 or int(d) % 2):
        raise CheckFailed(f"{label}: n_embd = {d!r} should be an even whole number from 2 "
                          f"to 64 (the model has 2 heads).\nHint: for example {example}.")
    run = train_markov(value)
    held, curve = run["held_out_loss"], run["train_loss"]
    shown = f"{{lr={lr:g}, n_embd={int(d)}}}"
    if math.isfinite(held) and held < MARKOV_BOUND:
        return (f"{shown}: after {MARKOV_STEPS} steps the held-out loss is {held:.3f} nats "
                f"(bound {MARKOV_BOUND}; the best possible is ln 2 = {math.log(2):.3f}, a "
                f"uniform guess ln 32 = {math.log(32):.2f}).")
    if not math.isfinite(held) or lr >= 0.05:
        hint = (f"lr = {lr:g} is too large: the steps overshoot and the loss jumps about "
                f"instead of falling. Try a rate 3 to 10 times smaller.")
    elif lr < 2e-3:
        hint = (f"lr = {lr:g} is too small for 200 steps: the loss is still falling when "
                f"the run ends. Try 3e-3 to 1e-2.")
    elif d < 8:
        hint = (f"n_embd = {int(d)} is too narrow: the model must tell 32 tokens apart and "
                f"say which two follow each, through {int(d)} numbers. Try 16 or 32.")
    else:
        hint = "try a learning rate between 3e-3 and 1e-2 with n_embd 16 to 32."
    raise CheckFailed(
        f"{label} = {shown} does not reach the bound in {MARKOV_STEPS} steps (seed 0).\n"
        f"  expected: held-out loss below {MARKOV_BOUND} nats\n  got:      {held:.4f} nats "
        f"(training loss every 25 steps: {curve})\nHint: {hint}")
