"""Chapter 12's checks (``llmbook.exercises.checks.ch12_scaling``): the table that
test_exercises_checks.py runs."""

from __future__ import annotations

import math

import torch

from llmbook import distributed, scaling

CHAPTER = "12"


def rank_shard(batch, rank, world_size):
    if len(batch) % world_size:
        raise ValueError("uneven")
    per = len(batch) // world_size
    return batch[rank * per:(rank + 1) * per]


def training_days(n_params, n_tokens, n_gpus, peak_flops, mfu):
    return 6 * n_params * n_tokens / (n_gpus * peak_flops * mfu) / 86_400


def zero_memory_gb(n_params, n_gpus, stage):
    weights, grads, optimizer = 2 * n_params, 2 * n_params, 12 * n_params
    if stage >= 1:
        optimizer /= n_gpus
    if stage >= 2:
        grads /= n_gpus
    if stage >= 3:
        weights /= n_gpus
    return (weights + grads + optimizer) / 1e9


def compute_optimal(flops):
    n = math.sqrt(flops / 120)
    return n, 20 * n


CORRECT = {
    "scaling.rank_shard": [
        rank_shard,
        distributed.shard,
        lambda b, r, w: rank_shard(b, r, w).tolist(),  # a list of indices is fine too
    ],
    "scaling.training_days": [
        training_days,
        lambda n, d, g, p, m: scaling.training_seconds(scaling.training_flops(n, d), p, n_devices=g, mfu=m) / 86_400,
        lambda *a: torch.tensor(training_days(*a), dtype=torch.float64),  # a 0-d tensor too
    ],
    "scaling.zero_memory": [
        zero_memory_gb,
        lambda n, g, s: sum(scaling.per_gpu_state_bytes(n, g, s).values()) / 1e9,
    ],
    "scaling.compute_optimal": [compute_optimal, scaling.compute_optimal],
}


def _lenient(batch, rank, world_size):
    per = len(batch) // world_size
    return batch[rank * per:(rank + 1) * per]


def _asserts(batch, rank, world_size):
    assert len(batch) % world_size == 0
    return rank_shard(batch, rank, world_size)


def _zero(n, g, s, order=("optimizer", "gradients", "weights"), bytes_=(2, 2, 12), unit=1e9):
    parts = dict(zip(("weights", "gradients", "optimizer"), bytes_, strict=True))
    return sum(n * b / (g if p in order[:s] else 1) for p, b in parts.items()) / unit


MISTAKES = {
    "scaling.rank_shard": [
        # names the call and shows both slices
        (lambda b, r, w: b[r::w], ("like cards", "rank_shard(batch=", "expected:", "got:")),
        (lambda b, r, w: b[r * w:(r + 1) * w], "len(batch) // world_size"),
        (lambda b, r, w: b[: (r + 1) * (len(b) // w)], "start at rank * per_rank"),
        (lambda b, r, w: "no", "tensor of indices"),
        (_lenient, ("ValueError", "10 examples")),  # accepts a batch that cannot be split evenly
        (_asserts, "AssertionError"),  # refuses it, with the wrong kind of error
    ],
    "scaling.training_days": [
        (lambda n, d, g, p, m: training_days(n, d, g, p, m) / 3, "forward pass only"),
        (lambda n, d, g, p, m: training_days(n, d, g, p, m) * m, "left out the utilisation"),
        (lambda n, d, g, p, m: training_days(n, d, g, p, m) * m * m, "multiplied by mfu"),
        (lambda n, d, g, p, m: training_days(n, d, g, p, m) * g, "number of GPUs"),
        (lambda n, d, g, p, m: training_days(n, d, g, p, m) * 86_400, "seconds"),
        (lambda n, d, g, p, m: training_days(n, d, g, p, m) * 24, "hours"),
        (lambda n, d, g, p, m: "a week", "should return a number"),
        (lambda n, d, g, p, m: training_days(n, d, g, p, m) * 1.5, "6 · n_params"),
    ],
    "scaling.zero_memory": [
        (lambda n, g, s: _zero(n, g, s, order=("weights", "gradients", "optimizer")), "wrong order"),
        (lambda n, g, s: _zero(n, g, s, bytes_=(4, 4, 8)), "fp32 training's bytes"),
        (lambda n, g, s: _zero(n, g, s, bytes_=(2, 2, 8)), "master copy"),
        (lambda n, g, s: _zero(n, g, s, unit=2**30), "GiB"),
        (lambda n, g, s: _zero(n, g, s, unit=1), "that is bytes"),
        (lambda n, g, s: 16 * n / g / 1e9, "whatever the stage"),
        (lambda n, g, s: _zero(n, g, max(0, s - 1)), "one stage behind"),
        (lambda n, g, s: None, "should return a number"),
    ],
    "scaling.compute_optimal": [
        (lambda c: compute_optimal(c)[::-1], "parameters first"),
        (lambda c: (math.sqrt(c / 20), 20 * math.sqrt(c / 20)), "left out the 6"),
        (lambda c: (math.sqrt(c / 40), 20 * math.sqrt(c / 40)), "forward only"),
        (lambda c: (c / 120, 20 * c / 120), "square root"),
        (lambda c: (math.sqrt(c / 120), math.sqrt(c / 120) / 20), "not N / 20"),
        (lambda c: (compute_optimal(c)[0], 10 * compute_optimal(c)[0]), "tokens are D = 20"),
        (lambda c: compute_optimal(c)[0], "pair"),
    ],
}
