"""Checks for chapter 12, "Scaling up".

Four exercises on the arithmetic and the slicing behind scaling a training run: the slice
of a global batch that one data-parallel rank trains on, the days a training run takes
(6·N·D FLOPs over the GPUs' useful throughput), the memory each GPU needs for Adam's model
states under ZeRO stage 0-3, and the compute-optimal model and data size for a budget
(Chinchilla's 20 tokens per parameter). Each check compares the learner's function with a
reference on several inputs and, when they differ, names the input, the expected and
actual values, and the mistake that most often produces that difference (recognised by
computing the mistake and comparing).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from llmbook.exercises.compare import Mistake, close, known_mistake, number, same, unchanged
from llmbook.exercises.core import CheckFailed, NotWritten, call, describe, register

CHAPTER = "12"
SECONDS_PER_DAY = 86_400


# --------------------------------------------------------------------------- rank shard


def _shard_ref(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    per = len(batch) // world_size
    return batch[rank * per:(rank + 1) * per]


_SHARD_MISTAKES: list[Mistake] = [
    (lambda b, r, w: b[r::w],
     ("you dealt the examples out like cards (every world_size-th one, batch[rank::world_size]). "
      "That is also a fair split, but this exercise asks for consecutive pieces, as llmbook's "
      "shard does: rank r takes batch[r * per_rank:(r + 1) * per_rank].")),
    (lambda b, r, w: b[r * w:(r + 1) * w],
     "your pieces have world_size examples each; each piece should have len(batch) // world_size."),
    (lambda b, r, w: b[(r + 1) * (len(b) // w):(r + 2) * (len(b) // w)],
     "your pieces are shifted by one rank: rank 0 takes the first piece, starting at index 0."),
    (lambda b, r, w: b[r * (len(b) // w):(r + 1) * (len(b) // w) + 1],
     ("your piece has one example too many: Python slices stop before the end index, so "
      "batch[start:start + per_rank] already has per_rank examples.")),
    (lambda b, r, w: b[: (r + 1) * (len(b) // w)],
     ("your piece starts at the beginning of the batch for every rank; it should start at "
      "rank * per_rank.")),
]


@register("scaling.rank_shard", chapter=CHAPTER, title="One rank's slice of a global batch")
def check_rank_shard(fn: Any) -> str:
    """Every rank of several world sizes, the union of the slices, and an uneven split."""
    g = torch.Generator().manual_seed(12)
    for n, world in [(8, 2), (12, 3), (12, 4), (5, 1), (6, 6), (16, 8)]:
        batch = torch.randperm(100, generator=g)[:n]
        pieces = []
        for rank in range(world):
            label = f"rank_shard(batch={batch.tolist()}, rank={rank}, world_size={world})"
            given = batch.clone()
            got = call(fn, given, rank, world, label=label)
            unchanged(label, [given], [batch], ["batch"])
            try:
                got_t = torch.as_tensor(got)
            except Exception:  # anything that is not a sequence of indices
                raise CheckFailed(f"{label} should return a tensor of indices, but returned "
                                  f"{describe(got)}.") from None
            expected = _shard_ref(batch, rank, world)
            if not same(got_t.long(), expected):
                hint = known_mistake(got_t.long(), _SHARD_MISTAKES, batch, rank, world) or (
                    "cut the batch into world_size equal consecutive pieces of len(batch) // "
                    "world_size; rank r takes piece number r.")
                raise CheckFailed(
                    f"{label} is wrong.\n  expected: {expected.tolist()}\n  got:      {got_t.tolist()}\n"
                    f"Hint: {hint}"
                )
            pieces.append(got_t.long())
        if not torch.equal(torch.cat(pieces), batch):  # pragma: no cover - implied by the above
            raise CheckFailed(f"the slices of all {world} ranks, in rank order, should be the batch.")
    label = "rank_shard(batch=torch.arange(10), rank=0, world_size=4)"
    try:
        got = fn(torch.arange(10), 0, 4)
    except ValueError:
        pass
    except NotImplementedError as err:
        raise NotWritten(str(err)) from None
    except Exception as err:  # the wrong kind of error
        raise CheckFailed(
            f"{label} raised {type(err).__name__}: {err}. A batch of 10 cannot be split evenly across "
            f"4 ranks, and that should raise a ValueError (raise ValueError('...'))."
        ) from None
    else:
        raise CheckFailed(
            f"{label} returned {describe(got)}, but 10 examples cannot be split evenly across 4 ranks. "
            f"Unequal slices would make the averaged gradient differ from the batch's gradient: raise "
            f"a ValueError when len(batch) is not a multiple of world_size."
        )
    return ("Every rank of every world size gets its consecutive, equal slice; the slices put back "
            "in rank order are the batch; an uneven split is refused.")


# --------------------------------------------------------------------------- training days


def _days_ref(n: float, d: float, gpus: int, peak: float, mfu: float) -> float:
    return 6 * n * d / (gpus * peak * mfu) / SECONDS_PER_DAY


_DAYS_MISTAKES: list[Mistake] = [
    (lambda n, d, g, p, m: 2 * n * d / (g * p * m) / SECONDS_PER_DAY,
     ("you counted 2·N·D FLOPs, the forward pass only. Training also runs backward, which costs "
      "about twice the forward: 6·N·D in all.")),
    (lambda n, d, g, p, m: 4 * n * d / (g * p * m) / SECONDS_PER_DAY,
     "you counted 4·N·D FLOPs; training costs about 6·N·D (2 forward + 4 backward)."),
    (lambda n, d, g, p, m: 6 * n * d / (g * p) / SECONDS_PER_DAY,
     "you left out the utilisation: the GPUs do useful work at mfu × peak_flops, not at the peak."),
    (lambda n, d, g, p, m: 6 * n * d * m / (g * p) / SECONDS_PER_DAY,
     "you multiplied by mfu; the useful throughput is mfu × peak_flops, so divide by it."),
    (lambda n, d, g, p, m: 6 * n * d / (p * m) / SECONDS_PER_DAY,
     "you left out the number of GPUs: n_gpus GPUs share the work."),
    (lambda n, d, g, p, m: 6 * n * d / (g * p * m),
     "that is the time in seconds; the question asks for days (divide by 86,400 seconds per day)."),
    (lambda n, d, g, p, m: 6 * n * d / (g * p * m) / 3600,
     "that is the time in hours; the question asks for days (divide by 24 more)."),
    (lambda n, d, g, p, m: 6 * n * d / (g * p * m) / 60,
     "that is the time in minutes; the question asks for days."),
]


@register("scaling.training_days", chapter=CHAPTER, title="Days to train: 6·N·D over the GPUs' throughput")
def check_training_days(fn: Any) -> str:
    cases = [
        (124e6, 2.5e9, 8, 312e12, 0.4),      # GPT-2 small, Chinchilla tokens, 8 A100s
        (175e9, 300e9, 1024, 312e12, 0.4),   # GPT-3 on a thousand A100s
        (7e9, 1e12, 256, 989e12, 0.5),       # a 7B model on H100s
        (1e6, 1e9, 1, 1e11, 1.0),            # a small model on one CPU at its peak
    ]
    for n, d, gpus, peak, mfu in cases:
        label = (f"training_days(n_params={n:g}, n_tokens={d:g}, n_gpus={gpus}, peak_flops={peak:g}, "
                 f"mfu={mfu})")
        expected = _days_ref(n, d, gpus, peak, mfu)
        got = float(number(call(fn, n, d, gpus, peak, mfu, label=label), label, expected))
        if not close(got, expected):
            hint = known_mistake(got, _DAYS_MISTAKES, n, d, gpus, peak, mfu)
            raise CheckFailed(
                f"{label} is wrong.\n  expected: {expected:.6g} days\n  got:      {got:.6g}\n"
                f"Hint: {hint or 'days = 6 · n_params · n_tokens / (n_gpus · peak_flops · mfu) / 86,400.'}"
            )
    gpt3 = _days_ref(175e9, 300e9, 1024, 312e12, 0.4)
    return f"Right in every case: GPT-3's 300B tokens on 1,024 A100s at 40% MFU take about {gpt3:.0f} days."


# --------------------------------------------------------------------------- ZeRO memory


_BYTES = {"weights": 2, "gradients": 2, "optimizer": 12}  # mixed precision with Adam (ZeRO paper)


def _zero_ref(n: float, gpus: int, stage: int,
              sharded_order: tuple[str, ...] = ("optimizer", "gradients", "weights"),
              bytes_: dict[str, int] | None = None, unit: float = 1e9) -> float:
    bytes_ = bytes_ or _BYTES
    sharded = set(sharded_order[:stage])
    return sum(n * b / (gpus if part in sharded else 1) for part, b in bytes_.items()) / unit


_ZERO_MISTAKES: list[Mistake] = [
    (lambda n, g, s: _zero_ref(n, g, s, ("weights", "gradients", "optimizer")),
     ("you shard the parts in the wrong order. Stage 1 shards the optimizer states (the biggest, "
      "12 bytes per parameter), stage 2 adds the gradients, stage 3 adds the weights.")),
    (lambda n, g, s: _zero_ref(n, g, s, ("gradients", "optimizer", "weights")),
     "stage 1 shards the optimizer states first, not the gradients."),
    (lambda n, g, s: _zero_ref(n, g, s, bytes_={"weights": 4, "gradients": 4, "optimizer": 8}),
     ("you used fp32 training's bytes (4 + 4 + 8). In mixed precision the weights and gradients "
      "are 2 bytes each, and the optimizer keeps 12: an fp32 master copy and Adam's two moments.")),
    (lambda n, g, s: _zero_ref(n, g, s, bytes_={"weights": 2, "gradients": 2, "optimizer": 8}),
     ("the optimizer states in mixed precision are 12 bytes per parameter: Adam's two fp32 moments "
      "(8) and the fp32 master copy of the weights (4).")),
    (lambda n, g, s: _zero_ref(n, g, s, unit=2**30),
     "you converted to GiB (2**30 bytes); the question asks for GB, 10**9 bytes."),
    (lambda n, g, s: _zero_ref(n, g, s, unit=1),
     "that is bytes; the question asks for GB (divide by 10**9)."),
    (lambda n, g, s: 16 * n / g / 1e9,
     "you divided everything by n_gpus whatever the stage; only the parts that stage shards are divided."),
    (lambda n, g, s: _zero_ref(n, g, max(0, s - 1)),
     "you are one stage behind: stage 1 already shards the optimizer states (stage 0 is plain DDP)."),
    (lambda n, g, s: _zero_ref(n, g, min(3, s + 1)),
     "you are one stage ahead: stage 0 (plain DDP) shards nothing, stage 1 only the optimizer states."),
]


@register("scaling.zero_memory", chapter=CHAPTER, title="Model-state memory per GPU under ZeRO stage 0-3")
def check_zero_memory(fn: Any) -> str:
    cases = [(1.5e9, 8, s) for s in range(4)] + [(175e9, 64, 3), (175e9, 64, 1), (124e6, 2, 2), (7e9, 1, 3)]
    for n, gpus, stage in cases:
        label = f"zero_memory_gb(n_params={n:g}, n_gpus={gpus}, stage={stage})"
        expected = _zero_ref(n, gpus, stage)
        got = float(number(call(fn, n, gpus, stage, label=label), label, expected))
        if not close(got, expected):
            hint = known_mistake(got, _ZERO_MISTAKES, n, gpus, stage)
            hint = hint or ("bytes per parameter: weights 2, gradients 2, optimizer 12; stage s shards "
                            "the first s of (optimizer, gradients, weights) across n_gpus; GB = 10**9 bytes.")
            raise CheckFailed(
                f"{label} is wrong.\n  expected: {expected:.6g} GB\n  got:      {got:.6g}\nHint: {hint}"
            )
    return (f"Right in every case: GPT-3 needs {_zero_ref(175e9, 64, 3):.1f} GB per GPU for its model states "
            f"even fully sharded over 64 GPUs.")


# --------------------------------------------------------------------------- compute-optimal size


def _optimal_ref(c: float) -> tuple[float, float]:
    n = math.sqrt(c / 120)
    return n, 20 * n


_OPTIMAL_MISTAKES: list[Mistake] = [
    (lambda c: (20 * math.sqrt(c / 120), math.sqrt(c / 120)),
     "you returned (n_tokens, n_params); return the parameters first: (n_params, n_tokens)."),
    (lambda c: (math.sqrt(c / 20), 20 * math.sqrt(c / 20)),
     "you left out the 6 of C = 6·N·D: with D = 20·N, C = 120·N², so N = sqrt(C / 120)."),
    (lambda c: (math.sqrt(c / 40), 20 * math.sqrt(c / 40)),
     "you used C = 2·N·D (forward only); training costs 6·N·D, so N = sqrt(C / 120)."),
    (lambda c: (c / 120, 20 * c / 120),
     "you forgot the square root: C = 120·N² gives N = sqrt(C / 120)."),
    (lambda c: (math.sqrt(c / 120), math.sqrt(c / 120) / 20),
     "the data should be 20 tokens per parameter, D = 20·N, not N / 20."),
    (lambda c: (math.sqrt(c / 6), 20 * math.sqrt(c / 6)),
     "you left out the 20: D = 20·N turns C = 6·N·D into 120·N²."),
]


@register("scaling.compute_optimal", chapter=CHAPTER, title="Chinchilla: the best model and data for a budget")
def check_compute_optimal(fn: Any) -> str:
    for c in (1.86e18, 5.76e23, 1e20, 120.0):
        label = f"compute_optimal({c:g})"
        got = call(fn, c, label=label)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise CheckFailed(f"{label} should return a pair (n_params, n_tokens), but returned {describe(got)}.")
        en, ed = _optimal_ref(c)
        n = float(number(got[0], f"{label}[0] (n_params)", en))
        d = float(number(got[1], f"{label}[1] (n_tokens)", ed))
        if not (close(n, en) and close(d, ed)):
            hint = known_mistake((n, d), _OPTIMAL_MISTAKES, c)
            if hint is None and close(n, en):
                hint = "n_params is right; the tokens are D = 20 · n_params."
            if hint is None and close(d, ed):
                hint = "n_tokens is right; n_params = n_tokens / 20."
            raise CheckFailed(
                f"{label} is wrong.\n  expected: (n_params={en:.6g}, n_tokens={ed:.6g})\n"
                f"  got:      (n_params={n:.6g}, n_tokens={d:.6g})\n"
                f"Hint: {hint or 'solve C = 6·N·D with D = 20·N: N = sqrt(C / 120), D = 20·N.'}"
            )
    n, d = _optimal_ref(5.76e23)
    return (f"Right in every case: Chinchilla's budget of 5.76e23 FLOPs buys {n / 1e9:.0f}B parameters "
            f"on {d / 1e12:.1f}T tokens.")
