"""Checks for chapter 12, "Scaling up".

Five exercises build what the chapter explained but ran with the library or only
described: dynamic loss scaling for fp16 (unscale in fp32, skip and halve on overflow,
grow after a run of good steps), a ring all-reduce simulated in one process (the ranks
exchange chunks only through a ``send`` the check passes in, so the check sees every
message: the reduce-scatter and the all-gather, each R - 1 steps of one chunk to the
right neighbour), one ZeRO-1 Adam step simulated across ranks (average the gradients,
each rank updates its own shard of the optimizer states, gather the weights), the
compute-optimal model for a budget (the one formula), and an experiment: choose the
runs, fit a scaling law to their losses, and predict the loss of a model 100 times
bigger than any run. Each check names the input that failed, shows expected and actual
values, and recognises the usual mistakes (unscaling in fp16, nan not caught, the counter
not reset; whole tensors sent, messages to the left neighbour, the reduce-scatter alone,
an all-gather that starts one chunk off, the sum instead of the average, inputs changed
through tensor_split's views; gradients summed instead of averaged, a rank's own gradient
only, Adam without bias correction, shards not gathered; a pure power law with no
irreducible loss) by recomputing the answer with that mistake or reading the messages.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

from llmbook.exercises.compare import Mistake, close, known_mistake, number, same
from llmbook.exercises.core import CheckFailed, call, describe, mismatch, register

CHAPTER = "12"


# --------------------------------------------------------------------------- dynamic loss scaling


def reference_scaler_step(
    grads: Sequence[torch.Tensor], scale: float, good_steps: int, growth_interval: int
) -> tuple[list[torch.Tensor] | None, float, int]:
    """(fp32 unscaled gradients or None to skip, the next scale, the next count of good steps)."""
    if any(not bool(torch.isfinite(g).all()) for g in grads):
        return None, scale / 2, 0
    unscaled = [g.float() / scale for g in grads]
    good_steps += 1
    if good_steps == growth_interval:
        return unscaled, scale * 2, 0
    return unscaled, scale, good_steps


def _scaler_cases() -> list[tuple[str, list[torch.Tensor], float, int, int]]:
    g = torch.Generator().manual_seed(12)
    small = [(torch.randn(4, 3, generator=g) * 1e-3).half(), (torch.randn(5, generator=g) * 1e-3).half()]
    tiny = [(torch.randn(6, generator=g) * 2e-3).half()]  # unscaled by 2**16: below fp16's smallest number
    inf = [small[0].clone(), torch.tensor([1.0, float("inf"), 2.0], dtype=torch.float16)]
    nan = [torch.tensor([0.5, float("nan")], dtype=torch.float16)]
    return [
        ("finite gradients, 3 good steps so far", small, 1024.0, 3, 2000),
        ("gradients of 1e-3 scaled by 2**16", tiny, 65536.0, 0, 2000),
        ("an inf in the second gradient", inf, 65536.0, 1999, 2000),
        ("a nan", nan, 256.0, 5, 10),
        ("the step that completes growth_interval good steps", small, 1024.0, 9, 10),
        ("the first step, growth_interval = 1", small, 8.0, 0, 1),
    ]


def _scaler_variants(grads: list[torch.Tensor], scale: float, good: int, interval: int) -> list[tuple[Any, str]]:
    finite = all(bool(torch.isfinite(x).all()) for x in grads)
    no_inf = not any(bool(torch.isinf(x).any()) for x in grads)
    ref = reference_scaler_step(grads, scale, good, interval)
    variants: list[tuple[Any, str]] = []
    if finite:
        variants.append(
            (
                ([(x / scale).float() for x in grads], *ref[1:]),
                "divide in fp32: convert each gradient with .float() *before* dividing by the scale. "
                "In fp16, 1e-3 / 65536 (about 1.5e-8) rounds to 0, the very underflow loss scaling avoids.",
            )
        )
        variants.append(
            (
                ([x.float() for x in grads], *ref[1:]),
                "the gradients are still multiplied by the scale: divide them by it (unscale) before the "
                "optimizer uses them.",
            )
        )
        if good + 1 == interval:
            variants.append(
                (
                    (ref[0], scale * 2, good + 1),
                    "after growing the scale, start counting good steps again from 0.",
                )
            )
            variants.append(
                (
                    (ref[0], scale, good + 1),
                    f"after growth_interval ({interval}) good steps in a row, double the scale.",
                )
            )
    else:
        if no_inf:
            variants.append(
                (
                    ([x.float() / scale for x in grads], scale, good + 1),
                    "a nan is an overflow too: test with torch.isfinite (false for inf *and* nan), not torch.isinf.",
                )
            )
        variants.append(
            (
                (None, scale / 2, good),
                "on an overflow, also reset the count of good steps to 0: growth needs "
                "growth_interval good steps *in a row*.",
            )
        )
        variants.append(
            (
                (None, scale, 0),
                "on an overflow, halve the scale, so that the next step is less likely to overflow.",
            )
        )
        variants.append(
            (
                ([x.float() / scale for x in grads], scale / 2, 0),
                "skip the step on an overflow: return None instead of gradients with inf or nan in them.",
            )
        )
    return variants


def _same_scaler(got: Any, expected: tuple[Any, float, int]) -> bool:
    if not (isinstance(got, (tuple, list)) and len(got) == 3):
        return False
    grads, scale, good = got
    if expected[0] is None:
        if grads is not None:
            return False
    elif not (isinstance(grads, (list, tuple)) and len(grads) == len(expected[0])) or not all(
        isinstance(a, torch.Tensor) and a.shape == b.shape and same(a, b, rtol=1e-5, atol=0.0)
        for a, b in zip(grads, expected[0], strict=False)
    ):
        return False
    try:
        return close(float(scale), expected[1]) and int(good) == expected[2] and float(good) == float(good // 1)
    except (TypeError, ValueError):
        return False


@register("scaling.loss_scaler", chapter=CHAPTER, kind="build", title="Dynamic loss scaling for fp16")
def check_loss_scaler(fn: Any) -> str:
    """Finite gradients, gradients that underflow if unscaled in fp16, inf, nan, growth."""
    for name, grads, scale, good, interval in _scaler_cases():
        label = f"scaler_step(<{name}>, scale={scale:g}, good_steps={good}, growth_interval={interval})"
        got = call(fn, [x.clone() for x in grads], scale, good, interval, label=label)
        expected = reference_scaler_step(grads, scale, good, interval)
        if not (isinstance(got, (tuple, list)) and len(got) == 3):
            raise CheckFailed(
                f"{label} should return a triple (grads or None, new_scale, new_good_steps), "
                f"but returned {describe(got)}."
            )
        if got[0] is not None and isinstance(got[0], (list, tuple)):
            wrong = [x for x in got[0] if isinstance(x, torch.Tensor) and x.dtype != torch.float32]
            if wrong and expected[0] is not None:
                raise mismatch(
                    f"{label}: the unscaled gradients should be fp32 (torch.float32).",
                    "float32 tensors",
                    wrong[0],
                    "the master weights and the optimizer work in fp32: convert with .float() and divide.",
                )
        if not _same_scaler(got, expected):
            hint = next(
                (why for wrong, why in _scaler_variants(grads, scale, good, interval) if _same_scaler(got, wrong)), None
            )
            raise mismatch(
                f"{label} is wrong.",
                expected,
                got,
                hint
                or "if any gradient has an inf or nan: (None, scale / 2, 0); otherwise the gradients as fp32 "
                "divided by scale, and good_steps + 1, doubling the scale (and resetting the count) when it "
                "reaches growth_interval.",
            )
    return (
        "Correct: unscaled in fp32, overflow skipped and the scale halved, the scale doubled after "
        "growth_interval good steps in a row."
    )


# --------------------------------------------------------------------------- ring all-reduce


def ring_bounds(n: int, world: int) -> list[tuple[int, int]]:
    """Chunk c's slice [start, end) of n numbers cut into ``world`` chunks as
    ``torch.tensor_split`` cuts them: the first n % world chunks one number longer."""
    size, extra = divmod(n, world)
    starts = [c * size + min(c, extra) for c in range(world + 1)]
    return list(itertools.pairwise(starts))


class Message:
    """One message of a ring: who sent it to whom, which chunk, and a copy of the values."""

    def __init__(self, src: int, dst: int, chunk: int, values: torch.Tensor) -> None:
        self.src, self.dst, self.chunk, self.values = src, dst, chunk, values

    def __repr__(self) -> str:
        return f"send({self.src}, {self.dst}, {self.chunk}, <{self.values.numel()} values>)"


class Wire:
    """What the learner's function receives as ``send``: it records every message and
    delivers a copy of the values, which it returns (what rank ``dst`` receives)."""

    def __init__(self, world: int) -> None:
        self.world = world
        self.log: list[Message] = []

    def __call__(self, src: Any, dst: Any, chunk_index: Any, values: Any) -> torch.Tensor:
        for name, rank in (("src", src), ("dst", dst), ("chunk_index", chunk_index)):
            if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < self.world:
                raise ValueError(f"send: {name} must be an int from 0 to {self.world - 1}, got {rank!r}")
        if src == dst:
            raise ValueError(f"send: rank {src} sent a message to itself")
        if not isinstance(values, torch.Tensor):
            raise TypeError(f"send: the values must be a tensor (a chunk), got {type(values).__name__}")
        copy = values.detach().clone()
        self.log.append(Message(src, dst, chunk_index, copy))
        return copy.clone()

    def sent_by(self, rank: int) -> list[Message]:
        return [m for m in self.log if m.src == rank]


def _partial(tensors: Sequence[torch.Tensor], ranks: Sequence[int], a: int, b: int) -> torch.Tensor:
    return sum((tensors[q][a:b] for q in ranks), torch.zeros(b - a, dtype=tensors[0].dtype))


def ring_schedule(tensors: Sequence[torch.Tensor], offset: int = 0) -> list[list[tuple[int, int, torch.Tensor]]]:
    """For each rank, the messages (dst, chunk, sum of the values) a ring sends, in order.

    At reduce-scatter step s, rank r sends chunk (r + offset - s) mod R, holding the sum of
    ranks r - s to r; at all-gather step s it sends the complete chunk (r + offset + 1 - s)
    mod R. A message may carry these sums or the sums divided by R (averaged early)."""
    world, n = len(tensors), len(tensors[0])
    bounds = ring_bounds(n, world)
    plan: list[list[tuple[int, int, torch.Tensor]]] = []
    for r in range(world):
        mine = []
        for s in range(world - 1):
            c = (r + offset - s) % world
            mine.append(((r + 1) % world, c, _partial(tensors, [(r - k) % world for k in range(s + 1)], *bounds[c])))
        for s in range(world - 1):
            c = (r + offset + 1 - s) % world
            mine.append(((r + 1) % world, c, _partial(tensors, range(world), *bounds[c])))
        plan.append(mine)
    return plan


def reference_ring_all_reduce(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The average of the ranks' tensors, on every rank."""
    mean = torch.stack(list(tensors)).mean(dim=0)
    return [mean.clone() for _ in tensors]


def _ring_cases() -> list[tuple[str, list[torch.Tensor]]]:
    g = torch.Generator().manual_seed(2012)
    cases = []
    for world, n in ((4, 10), (2, 5), (5, 13), (8, 1003)):
        sizes = ", ".join(str(b - a) for a, b in ring_bounds(n, world))
        name = f"{world} ranks, {n} numbers each" + (f" (chunks of {sizes})" if world <= 5 else "")
        cases.append((name, [torch.randn(n, generator=g, dtype=torch.float64) for _ in range(world)]))
    return cases


def _ring_result(got: Any, label: str, world: int, n: int) -> list[torch.Tensor]:
    if isinstance(got, torch.Tensor) or not isinstance(got, (list, tuple)) or len(got) != world:
        raise CheckFailed(
            f"{label} should return a list of {world} tensors, one per rank, but returned {describe(got)}."
        )
    for r, t in enumerate(got):
        if not isinstance(t, torch.Tensor) or t.shape != (n,):
            raise mismatch(
                f"{label}[{r}] should be rank {r}'s result, a tensor of shape ({n},).",
                f"a tensor of shape ({n},)",
                t,
                "join the rank's chunks back together with torch.cat.",
            )
    return list(got)


def _check_messages(label: str, tensors: list[torch.Tensor], wire_: Wire) -> None:
    """Fail unless the messages are a ring's: right neighbours, one chunk each, the right
    number per rank, and the partial sums a ring passes on."""
    world, n = len(tensors), len(tensors[0])
    bounds = ring_bounds(n, world)
    rounds = 2 * (world - 1)
    if not wire_.log:
        raise CheckFailed(
            f"{label} sent no messages. The ranks may exchange data only through "
            f"send(src, dst, chunk_index, values): in a ring, each rank sends {rounds} messages "
            f"(2(R - 1) for R = {world}), each one chunk of about n / R numbers, to its right "
            f"neighbour (src + 1) % R."
        )
    for m in wire_.log:
        size = bounds[m.chunk][1] - bounds[m.chunk][0]
        if m.values.numel() == n and size != n:
            raise CheckFailed(
                f"{label}: {m!r} carries a whole tensor.\n"
                f"  expected: chunk {m.chunk} alone, {size} numbers\n"
                f"  got:      {n} numbers\n"
                "Hint: sending whole tensors (to one rank that adds them up and sends the result back) "
                f"makes that rank receive and send (R - 1) * n = {(world - 1) * n} numbers. A ring cuts "
                "each tensor into R chunks and sends one chunk per message: 2 (R - 1) chunks per rank, "
                f"about {2 * (world - 1) * n // world} numbers, on every rank alike."
            )
        if m.dst != (m.src + 1) % world:
            left = m.dst == (m.src - 1) % world
            raise CheckFailed(
                f"{label}: {m!r} goes from rank {m.src} to rank {m.dst}.\n"
                f"  expected: a message to rank {(m.src + 1) % world}, its right neighbour\n"
                f"  got:      a message to rank {m.dst}\n"
                "Hint: "
                + (
                    "that is the left neighbour: in this ring every rank sends to (src + 1) % R "
                    "and receives from (src - 1) % R."
                    if left
                    else "every message goes to the sender's right neighbour, (src + 1) % R."
                )
            )
        if m.values.shape != (size,):
            raise CheckFailed(
                f"{label}: {m!r} has the wrong size for chunk {m.chunk}.\n"
                f"  expected: a 1-D tensor of {size} numbers, chunk {m.chunk} of torch.tensor_split(t, {world})\n"
                f"  got:      {describe(m.values)}\n"
                f"Hint: cut each tensor with torch.tensor_split(t, {world}): chunks of "
                + ", ".join(str(b - a) for a, b in bounds)
                + " numbers; send one chunk per message."
            )
    counts = [len(wire_.sent_by(r)) for r in range(world)]
    if any(c != rounds for c in counts):
        only_half = all(c == world - 1 for c in counts)
        raise CheckFailed(
            f"{label}: the ranks sent {counts} messages.\n"
            f"  expected: {rounds} messages from every rank ({world - 1} in the reduce-scatter, "
            f"{world - 1} in the all-gather)\n  got:      {counts}\n"
            "Hint: "
            + (
                "that is the reduce-scatter alone: after it, each rank holds the sum of one chunk "
                "only. The all-gather's R - 1 steps pass the finished chunks round the ring, so "
                "that every rank ends with all of them."
                if only_half
                else "each phase takes R - 1 steps, and in each step every rank sends one chunk."
            )
        )
    offset = wire_.sent_by(0)[0].chunk
    plan = ring_schedule(tensors, offset)
    for r in range(world):
        for k, (m, (_, chunk, total)) in enumerate(zip(wire_.sent_by(r), plan[r], strict=True)):
            phase, s = ("reduce-scatter", k) if k < world - 1 else ("all-gather", k - world + 1)
            if m.chunk != chunk:
                hint = (
                    f"at all-gather step s, rank r sends the chunk it finished, (r + {offset + 1} - s) % R "
                    f"here: after the reduce-scatter, rank r holds the complete chunk one past the one "
                    f"it sent first. Off by one, it passes on a chunk that is still a partial sum."
                    if phase == "all-gather" and (m.chunk - chunk) % world in (1, world - 1)
                    else f"at reduce-scatter step s, rank r sends chunk (r - s) % R (shifted by "
                    f"{offset}, as rank 0's first message was): the chunk it has just added its "
                    "neighbour's values to."
                )
                raise CheckFailed(
                    f"{label}: rank {r}'s message {k + 1} ({phase} step {s}) carries the wrong chunk.\n"
                    f"  expected: chunk {chunk}\n  got:      {m!r}\nHint: {hint}"
                )
            if not (same(m.values, total) or same(m.values, total / world)):
                ranks = [(r - q) % world for q in range(s + 1)] if phase == "reduce-scatter" else []
                own = tensors[r][slice(*ring_bounds(n, world)[chunk])]
                if same(m.values, own) or same(m.values, own / world):
                    hint = (
                        f"rank {r} sent its own numbers of chunk {chunk}: add each received chunk to "
                        "the receiver's copy, and send that running sum on at the next step."
                    )
                elif phase == "reduce-scatter":
                    hint = (
                        f"at this step the chunk should hold the sum of ranks {ranks}'s numbers: the "
                        "receiver adds what arrives to its own copy of the same chunk index."
                    )
                else:
                    hint = "in the all-gather, the receiver replaces its copy of the chunk with the one that arrives."
                raise mismatch(
                    f"{label}: rank {r}'s message {k + 1} ({phase} step {s}, chunk {chunk}) is wrong.",
                    total,
                    m.values,
                    hint,
                )


@register("scaling.ring_all_reduce", chapter=CHAPTER, kind="build", title="A ring all-reduce, simulated")
def check_ring_all_reduce(fn: Any) -> str:
    """2, 4, 5 and 8 ranks, lengths that R does not divide; the messages and the results."""
    summary = ""
    for name, tensors in _ring_cases():
        world, n = len(tensors), len(tensors[0])
        label = f"ring_all_reduce(<{name}>, send)"
        given = [t.clone() for t in tensors]
        wire_ = Wire(world)
        got = call(fn, given, wire_, label=label)
        if not all(torch.equal(a, b) for a, b in zip(given, tensors, strict=True)) or len(given) != world:
            raise CheckFailed(
                f"{label} changed the tensors it was given. Each rank's gradient is the caller's: copy "
                "it first (t.clone()); torch.tensor_split returns views, so `chunk += received` on them "
                "writes into the input."
            )
        _check_messages(label, tensors, wire_)
        got = _ring_result(got, label, world, n)
        expected = reference_ring_all_reduce(tensors)
        for r in range(world):
            if not same(got[r], expected[r]):
                total = expected[r] * world
                if same(got[r], total):
                    hint = "that is the sum of the ranks' tensors: divide by R for the average."
                elif same(got[r], tensors[r]):
                    hint = "that is rank r's own tensor: return each rank's buffer after both phases."
                else:
                    hint = "each rank should end with the mean of all the ranks' tensors."
                raise mismatch(f"{label}[{r}] is not the average.", expected[r], got[r], hint)
        if world == 8:
            values = sum(m.values.numel() for m in wire_.sent_by(0))
            summary = (
                f"with {world} ranks of {n} numbers, each rank sent {2 * (world - 1)} messages, "
                f"{values} numbers in all (about 2 (R - 1) / R * n), where gathering the tensors on one "
                f"rank makes it receive {(world - 1) * n} numbers and send as many"
            )
    return f"Correct: every message a chunk to the right neighbour, the average on every rank; {summary}."


# --------------------------------------------------------------------------- ZeRO-1 Adam step

BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


def shard_bounds(n: int, world_size: int) -> list[tuple[int, int]]:
    """Rank r's slice [start, end) of a flat tensor of n numbers: ceil(n / world_size) each,
    the last ones shorter (or empty)."""
    size = -(-n // world_size)
    return [(min(r * size, n), min((r + 1) * size, n)) for r in range(world_size)]


def _adam(
    p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, step: int, lr: float, correct: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b1, b2 = BETAS
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat, v_hat = (m / (1 - b1**step), v / (1 - b2**step)) if correct else (m, v)
    return p - lr * m_hat / (v_hat.sqrt() + ADAM_EPS), m, v


def reference_zero1_step(
    param: torch.Tensor,
    rank_grads: Sequence[torch.Tensor],
    m_shards: Sequence[torch.Tensor],
    v_shards: Sequence[torch.Tensor],
    step: int,
    lr: float,
    *,
    reduce: str = "mean",
    own: bool = False,
    correct: bool = True,
    gather: bool = True,
) -> dict[str, Any]:
    """One Adam step with the optimizer states sharded over the ranks (ZeRO stage 1)."""
    world = len(rank_grads)
    stacked = torch.stack(list(rank_grads))
    full = stacked.mean(dim=0) if reduce == "mean" else stacked.sum(dim=0)
    new = param.clone()
    ms, vs = [], []
    for r, (a, b) in enumerate(shard_bounds(len(param), world)):
        g = rank_grads[r][a:b] if own else full[a:b]
        p, m, v = _adam(param[a:b], g, m_shards[r], v_shards[r], step, lr, correct)
        if gather or r == 0:
            new[a:b] = p
        ms.append(m)
        vs.append(v)
    return {"param": new, "m": ms, "v": vs}


def _zero_cases() -> list[
    tuple[str, torch.Tensor, list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], int, float]
]:
    g = torch.Generator().manual_seed(21)
    cases = []
    for name, n, world, step, lr in (
        ("8 numbers on 2 ranks, the first step", 8, 2, 1, 0.1),
        ("10 numbers on 4 ranks (3, 3, 3, 1), step 5", 10, 4, 5, 0.01),
        ("7 numbers on 3 ranks, step 100", 7, 3, 100, 0.05),
    ):
        param = torch.randn(n, generator=g, dtype=torch.float64)
        grads = [torch.randn(n, generator=g, dtype=torch.float64) for _ in range(world)]
        first = step == 1
        ms = [
            torch.zeros(b - a, dtype=torch.float64)
            if first
            else 0.1 * torch.randn(b - a, generator=g, dtype=torch.float64)
            for a, b in shard_bounds(n, world)
        ]
        vs = [
            torch.zeros(b - a, dtype=torch.float64)
            if first
            else 0.1 * torch.rand(b - a, generator=g, dtype=torch.float64)
            for a, b in shard_bounds(n, world)
        ]
        cases.append((name, param, grads, ms, vs, step, lr))
    return cases


def _zero_answer(got: Any, label: str, expected: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(got, dict) or not {"param", "m", "v"} <= set(got):
        raise CheckFailed(
            f"{label} should return a dict {{'param': ..., 'm': [...], 'v': [...]}}, but returned {describe(got)}."
        )
    for key in ("m", "v"):
        shards = got[key]
        if not isinstance(shards, (list, tuple)) or len(shards) != len(expected[key]):
            raise mismatch(
                f"{label}['{key}'] should be a list with one shard per rank.",
                [tuple(s.shape) for s in expected[key]],
                shards,
            )
        for r, (a, b) in enumerate(zip(shards, expected[key], strict=True)):
            if not isinstance(a, torch.Tensor) or a.shape != b.shape:
                raise mismatch(
                    f"{label}['{key}'][{r}] should be rank {r}'s shard, of shape {tuple(b.shape)}.",
                    b,
                    a,
                    "rank r owns numbers r * s to (r + 1) * s, with s = ceil(n / world_size).",
                )
    return got


def _same_zero(got: dict[str, Any], expected: dict[str, Any]) -> bool:
    return same(got["param"], expected["param"]) and all(
        same(a, b) for key in ("m", "v") for a, b in zip(got[key], expected[key], strict=True)
    )


@register("scaling.zero1_step", chapter=CHAPTER, kind="build", title="One ZeRO-1 Adam step across ranks")
def check_zero1_step(fn: Any) -> str:
    """Even and uneven shards, first and later steps."""
    for name, param, grads, ms, vs, step, lr in _zero_cases():
        label = f"zero1_step(<{name}>, step={step}, lr={lr})"
        got = call(
            fn,
            param.clone(),
            [x.clone() for x in grads],
            [x.clone() for x in ms],
            [x.clone() for x in vs],
            step,
            lr,
            label=label,
        )
        expected = reference_zero1_step(param, grads, ms, vs, step, lr)
        got = _zero_answer(got, label, expected)
        if not isinstance(got["param"], torch.Tensor) or got["param"].shape != param.shape:
            raise mismatch(
                f"{label}['param'] should be the whole updated parameter, gathered from all ranks.",
                expected["param"],
                got["param"],
                "put every rank's updated shard back in place.",
            )
        if not _same_zero(got, expected):
            variants: list[tuple[dict[str, Any], str]] = [
                (
                    {"reduce": "sum"},
                    "average the ranks' gradients (all-reduce, then divide by world_size); "
                    "a sum makes the step depend on the number of GPUs.",
                ),
                (
                    {"own": True},
                    "each rank's shard must be updated with the gradient averaged over *all* ranks "
                    "(reduce-scatter), not with that rank's own gradient.",
                ),
                (
                    {"correct": False},
                    "Adam divides m by (1 - beta1 ** step) and v by (1 - beta2 ** step) "
                    "(bias correction) before the update.",
                ),
                (
                    {"gather": False},
                    "only rank 0's shard of the parameter changed: gather every rank's updated "
                    "shard (all-gather) into the returned parameter.",
                ),
                (
                    {"step_shift": True},
                    "step is this step's number, counted from 1: use it as it is in the bias correction.",
                ),
            ]
            hint = None
            for kw, why in variants:
                if kw.pop("step_shift", False):
                    wrong = reference_zero1_step(param, grads, ms, vs, step + 1, lr)
                else:
                    wrong = reference_zero1_step(param, grads, ms, vs, step, lr, **kw)
                if _same_zero(got, wrong):
                    hint = why
                    break
            shown = "param" if not same(got["param"], expected["param"]) else "m"
            raise mismatch(
                f"{label}: {shown} is wrong.",
                expected[shown],
                got[shown],
                hint
                or "g = mean of rank_grads; for each rank r with slice [a, b): m_r = 0.9 m_r + 0.1 g[a:b], "
                "v_r = 0.999 v_r + 0.001 g[a:b]**2, param[a:b] -= lr * m_hat / (sqrt(v_hat) + 1e-8).",
            )
    return (
        "Correct: gradients averaged, each rank's Adam shard updated with its slice, the parameter gathered; "
        "the same numbers as Adam on one GPU, with 1 / world_size of its optimizer memory per rank."
    )


# --------------------------------------------------------------------------- compute-optimal size


def _optimal_ref(c: float) -> tuple[float, float]:
    n = math.sqrt(c / 120)
    return n, 20 * n


_OPTIMAL_MISTAKES: list[Mistake] = [
    (
        lambda c: (20 * math.sqrt(c / 120), math.sqrt(c / 120)),
        "you returned (n_tokens, n_params); return the parameters first: (n_params, n_tokens).",
    ),
    (
        lambda c: (math.sqrt(c / 20), 20 * math.sqrt(c / 20)),
        "you left out the 6 of C = 6·N·D: with D = 20·N, C = 120·N², so N = sqrt(C / 120).",
    ),
    (
        lambda c: (math.sqrt(c / 40), 20 * math.sqrt(c / 40)),
        "you used C = 2·N·D (forward only); training costs 6·N·D, so N = sqrt(C / 120).",
    ),
    (lambda c: (c / 120, 20 * c / 120), "you forgot the square root: C = 120·N² gives N = sqrt(C / 120)."),
    (
        lambda c: (math.sqrt(c / 120), math.sqrt(c / 120) / 20),
        "the data should be 20 tokens per parameter, D = 20·N, not N / 20.",
    ),
    (lambda c: (math.sqrt(c / 6), 20 * math.sqrt(c / 6)), "you left out the 20: D = 20·N turns C = 6·N·D into 120·N²."),
]


@register(
    "scaling.compute_optimal", chapter=CHAPTER, kind="formula", title="Chinchilla: the best model and data for a budget"
)
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
    return (
        f"Right in every case: Chinchilla's budget of 5.76e23 FLOPs buys {n / 1e9:.0f}B parameters "
        f"on {d / 1e12:.1f}T tokens."
    )


# --------------------------------------------------------------------------- experiment: a scaling law

LAW_MIN_PARAMS, LAW_MAX_PARAMS, LAW_TARGET = 1e3, 1e7, 1e9
LAW_MAX_RUNS, LAW_TOLERANCE, LAW_NOISE = 16, 0.03, 0.003
LAW_SEEDS = (0, 1, 2)


def hidden_law(seed: int) -> tuple[float, float, float]:
    """(E, A, alpha) of L(N) = E + A * N ** -alpha, drawn near Chinchilla's fit."""
    rng = random.Random(1000 + seed)
    return rng.uniform(1.6, 2.2), rng.uniform(200, 500), rng.uniform(0.28, 0.36)


class TrainingRuns:
    """What the learner's function receives as ``run``: the final loss of a model of n
    parameters (a hidden law, with 0.3 % run-to-run noise), at most LAW_MAX_RUNS times."""

    def __init__(self, seed: int) -> None:
        self.seed, self.law = seed, hidden_law(seed)
        self.sizes: list[float] = []

    def __call__(self, n_params: float) -> float:
        n = float(n_params)
        if not LAW_MIN_PARAMS <= n <= LAW_MAX_PARAMS:
            raise ValueError(f"run(n_params) takes {LAW_MIN_PARAMS:.0e} to {LAW_MAX_PARAMS:.0e} parameters, got {n:g}")
        if len(self.sizes) >= LAW_MAX_RUNS:
            raise ValueError(f"the budget is {LAW_MAX_RUNS} runs; this is run {len(self.sizes) + 1}")
        self.sizes.append(n)
        e, a, alpha = self.law
        noise = random.Random(f"{self.seed}-{n:.6g}").gauss(0.0, LAW_NOISE)
        return (e + a * n**-alpha) * (1 + noise)

    def true_loss(self, n: float) -> float:
        e, a, alpha = self.law
        return e + a * n**-alpha


def _pure_power_law(runs: TrainingRuns) -> float | None:
    """The prediction of a straight line in log-log space through the runs the learner made."""
    if len(set(runs.sizes)) < 2:
        return None
    x = torch.log(torch.tensor(runs.sizes, dtype=torch.float64))
    y = torch.log(torch.tensor([_noisy(runs, n) for n in runs.sizes], dtype=torch.float64))
    design = torch.stack([torch.ones_like(x), x], dim=1)
    a, b = torch.linalg.lstsq(design, y[:, None]).solution[:, 0].tolist()
    return math.exp(a + b * math.log(LAW_TARGET))


def _noisy(runs: TrainingRuns, n: float) -> float:
    e, a, alpha = runs.law
    return (e + a * n**-alpha) * (1 + random.Random(f"{runs.seed}-{n:.6g}").gauss(0.0, LAW_NOISE))


def _only_the_run(runs: TrainingRuns) -> Callable[[float], float]:
    """A plain function to hand the learner: it runs models and tells nothing of the law."""

    def run(n_params: float) -> float:
        return runs(n_params)

    return run


@register(
    "scaling.scaling_law",
    chapter=CHAPTER,
    kind="experiment",
    time_limit=30,
    title="Experiment: predict a bigger model's loss from a scaling law",
)
def check_scaling_law(fn: Any) -> str:
    """Three hidden laws; the learner's function runs models, fits, and predicts at 1e9."""
    lines = []
    for seed in LAW_SEEDS:
        runs = TrainingRuns(seed)
        label = f"predict_loss(run, max_params={LAW_MAX_PARAMS:.0e}, target_params={LAW_TARGET:.0e}) [law {seed}]"
        got = call(
            fn,
            _only_the_run(runs),
            LAW_MAX_PARAMS,
            LAW_TARGET,
            label=label,
            hints=[
                ("the budget is", f"make at most {LAW_MAX_RUNS} runs."),
                ("takes 1e+03 to 1e+07", "choose sizes between 1e3 and 1e7 parameters."),
            ],
        )
        truth = runs.true_loss(LAW_TARGET)
        value = number(got, label, truth)
        error = (value - truth) / truth
        if not math.isfinite(value) or abs(error) > LAW_TOLERANCE:
            spread = (math.log10(max(runs.sizes)) - math.log10(min(runs.sizes))) if runs.sizes else 0.0
            pure = _pure_power_law(runs)
            if not runs.sizes:
                hint = "call run(n_params) for the sizes you choose, and fit your law to the losses it returns."
            elif pure is not None and close(value, pure, rel=0.01):
                hint = (
                    "a straight line in log-log space is a pure power law, L = A * N ** -alpha, which falls "
                    "to 0 for big models. Real losses level off at an irreducible loss E: fit "
                    "L = E + A * N ** -alpha (for example, try many E below the smallest loss and fit "
                    "log(L - E) against log N for each; keep the E with the smallest error)."
                )
            elif spread < 3:
                hint = (
                    f"your runs span {spread:.1f} decades of size; spread them over the whole range "
                    f"(1e3 to 1e7, log-spaced) so the fit sees the curve bend."
                )
            else:
                hint = (
                    "fit L = E + A * N ** -alpha to your runs, and evaluate it at target_params. Use all "
                    f"{LAW_MAX_RUNS} runs, log-spaced: the noise is 0.3 % per run."
                )
            raise CheckFailed(
                f"{label} is off by {error:+.1%}.\n  expected: {truth:.4f} (within {LAW_TOLERANCE:.0%})\n"
                f"  got:      {value!r}\n  your runs: {len(runs.sizes)}, from {min(runs.sizes, default=0):.3g} to "
                f"{max(runs.sizes, default=0):.3g} parameters\nHint: {hint}"
            )
        lines.append(f"law {seed}: {value:.4f} against {truth:.4f} ({error:+.2%})")
    return (
        f"Predicted within {LAW_TOLERANCE:.0%} at {LAW_TARGET:.0e} parameters, 100 times the biggest run: "
        + "; ".join(lines)
    )
